import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createLab, sleep, type Lab, type LabProcess } from '../lab';
import { requirePrerequisites } from '../fakes/prerequisites';
import { timedVipdCli, watchNexthops } from '../fakes/timed-cli';

/**
 * T32 (issue 9 defect 4): a pool whose every backend is drained cannot serve, however healthy its
 * backends look, so the VIP is withdrawn with its own reason (noUsableBackends); undraining one
 * backend brings it back through the gate. Asserted at the ToR's kernel route table. The drains go
 * through the CLI (`vipd drain-backend`), which finds the admin endpoint from the config, and are timed
 * from the moment the CLI connects to vipd (its Node start-up is not vipd's to bound).
 */
const PREFIX = '198.19.0.10/32';
const WITHDRAW_BOUND_MS = 1000;
const UNDRAIN_BOUND_MS = 500;

let lab: Lab;
let config: string;
let backends: string[];
let vipd: LabProcess | undefined;

before(async () => {
  requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd']);
  lab = await createLab({ balancers: 1, backends: 'etcd' });
  config = lab.writeVipdConfig('lb1');
  backends = (lab.vipdConfig('lb1') as { pools: { etcd: { backends: string[] } } }).pools.etcd.backends;
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

async function cli(args: string[]): Promise<void> {
  const r = await lab.vipdCli('lb1', [...args, '--config', config]);
  assert.equal(r.code, 0, `vipd ${args.join(' ')}: ${r.stderr}`);
}

async function nexthops(): Promise<number> {
  return (await lab.tor.torRoute(PREFIX))?.nexthops.length ?? 0;
}

test('T32: every backend of lb1 drained: the path leaves the ToR within 1 s (reason noUsableBackends); undrain brings it back', async () => {
  const proc = lab.startVipd('lb1', config);
  vipd = proc;
  await lab.tor.waitNexthops(PREFIX, 1, 30_000).catch((err) => {
    throw new Error(`${err}\n${proc.logTail()}`);
  });
  // All but the last: the route must stay while one backend is usable.
  for (const backend of backends.slice(0, -1)) await cli(['drain-backend', 'etcd', backend]);
  await sleep(1500);
  assert.equal(await nexthops(), 1, `the route left with one usable backend left\n${proc.logTail()}`);

  const gone = watchNexthops(lab, PREFIX, 0);
  const drain = await timedVipdCli(lab, 'lb1', ['drain-backend', 'etcd', backends.at(-1)!, '--config', config]);
  assert.equal(drain.code, 0, drain.stderr);
  const withdrawnMs = (await gone) - drain.connectWall;
  console.log(`T32: last backend drained -> path gone from the ToR's kernel table ${withdrawnMs} ms after the request (bound ${WITHDRAW_BOUND_MS} ms)`);
  assert.ok(withdrawnMs <= WITHDRAW_BOUND_MS, `withdrawn after ${Math.round(withdrawnMs)} ms`);
  const withdraw = proc
    .readLog()
    .split('\n')
    .filter((l) => l.includes('"event":"route"') && l.includes('"op":"withdraw"'))
    .at(-1);
  assert.ok(withdraw?.includes('"reason":"noUsableBackends"'), `the withdraw names its reason: ${withdraw}`);

  // Stays withdrawn while the backends stay healthy and drained (no flap back through the health checks).
  await sleep(3000);
  assert.equal(await nexthops(), 0, 'announced again while every backend is still drained');

  const back = watchNexthops(lab, PREFIX, 1);
  const undrain = await timedVipdCli(lab, 'lb1', ['undrain-backend', 'etcd', backends[0]!, '--config', config]);
  assert.equal(undrain.code, 0, undrain.stderr);
  const backMs = (await back) - undrain.connectWall;
  // The gate passes at once (healthy backend, no hold-down for noUsableBackends), so T19's undrain
  // bound applies from the request: 0.5 s.
  console.log(`T32: one backend undrained -> path back in the ToR's kernel table ${backMs} ms after the request (bound ${UNDRAIN_BOUND_MS} ms, T19)`);
  assert.ok(backMs <= UNDRAIN_BOUND_MS, `back after ${backMs} ms`);
  for (const backend of backends.slice(1)) await cli(['undrain-backend', 'etcd', backend]);
});
