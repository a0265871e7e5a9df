import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, sleep, type Lab, type LabProcess } from '../lab';
import { requirePrerequisites } from '../fakes/prerequisites';
import { timedVipdCli, watchNexthops } from '../fakes/timed-cli';

/**
 * T34 (issue 9 defect 8): a drain survives restarts. lb1 (managed gobgpd, FRR ToR, healthy etcd
 * backends) is drained, then stopped with SIGTERM and started again, then killed with SIGKILL and
 * started again: at no poll of the ToR's kernel table, from the restart until 10 s after the new BGP
 * session is Established, is lb1's path there. Undrain at the end proves the gate would have passed.
 * The same for backend drains with proxy.workers: 2 (every backend drained, restarted: never announced).
 */
const PREFIX = '198.19.0.10/32';
const WATCH_AFTER_ESTABLISHED_MS = 10_000;
/** T19: undrain restores the route ≤ 0.5 s after the gate passes; here it passes at once. */
const UNDRAIN_BOUND_MS = 500;

/** Runs a mutating CLI command and resolves with the ms from its request to the ToR showing `count` next hops. */
async function timedUntil(count: number, args: string[], file = config): Promise<number> {
  const seen = watchNexthops(lab, PREFIX, count);
  const r = await timedVipdCli(lab, 'lb1', [...args, '--config', file]);
  assert.equal(r.code, 0, `vipd ${args.join(' ')}: ${r.stderr}`);
  return (await seen) - r.connectWall;
}

let lab: Lab;
let config: string;
let stateFile: string;
let backends: string[];
let vipd: LabProcess | undefined;

before(async () => {
  requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd']);
  lab = await createLab({ balancers: 1, backends: 'etcd' });
  config = lab.writeVipdConfig('lb1', { shutdown: { grace: '500ms' } });
  const cfg = lab.vipdConfig('lb1') as { stateDir: string; pools: { etcd: { backends: string[] } } };
  stateFile = path.join(cfg.stateDir, 'lb1.state.json');
  backends = cfg.pools.etcd.backends;
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

async function cli(args: string[], file = config): Promise<string> {
  const r = await lab.vipdCli('lb1', [...args, '--config', file]);
  assert.equal(r.code, 0, `vipd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function nexthops(): Promise<number> {
  return (await lab.tor.torRoute(PREFIX))?.nexthops.length ?? 0;
}

async function established(): Promise<boolean> {
  return (await lab.tor.bgpSummary()).some((p) => p.address === lab.balancer('lb1').v4 && p.established);
}

/**
 * Starts vipd and polls the ToR's kernel table until 10 s after the session is Established; fails at
 * the first poll that shows the path.
 */
async function restartAndWatch(what: string, file = config): Promise<void> {
  // The old session must be gone first, or "Established" below could be the old one.
  const downStart = performance.now();
  while (await established()) {
    assert.ok(performance.now() - downStart < 10_000, 'the old BGP session never went down');
    await sleep(50);
  }
  const t0 = performance.now();
  const proc = lab.startVipd('lb1', file);
  vipd = proc;
  let polls = 0;
  let establishedAt: number | undefined;
  for (;;) {
    const now = performance.now() - t0;
    assert.equal(await nexthops(), 0, `${what}: lb1's path is at the ToR ${Math.round(now)} ms after the restart, though drained\n${proc.logTail()}`);
    polls++;
    if (establishedAt === undefined && polls % 10 === 0 && (await established())) establishedAt = now;
    if (establishedAt !== undefined && now >= establishedAt + WATCH_AFTER_ESTABLISHED_MS) break;
    assert.ok(now < 40_000, `${what}: no BGP session within 40 s\n${proc.logTail()}`);
    assert.ok(proc.running, `${what}: vipd exited: ${JSON.stringify(proc.exitStatus)}\n${proc.logTail()}`);
    await sleep(20);
  }
  const watchedMs = performance.now() - t0;
  console.log(
    `T34: ${what}: never announced: 0 of ${polls} ToR polls had the path over ${Math.round(watchedMs)} ms (session Established at ${Math.round(establishedAt ?? NaN)} ms, watched ${WATCH_AFTER_ESTABLISHED_MS} ms beyond)`,
  );
}

test('T34: a drained node stays withdrawn across SIGTERM and SIGKILL restarts; undrain announces it', async () => {
  vipd = lab.startVipd('lb1', config);
  await lab.tor.waitNexthops(PREFIX, 1, 30_000);
  const drainMs = await timedUntil(0, ['drain']);
  console.log(`T34: drain -> path gone from the ToR ${drainMs} ms after the request`);
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { nodeDrain: { source: string; at: string } | null };
  assert.ok(state.nodeDrain, `the state file records the drain: ${JSON.stringify(state)}`);

  const term = await vipd.stop(10_000);
  assert.equal(term.code, 0, 'SIGTERM exits 0');
  await restartAndWatch('SIGTERM + start');
  const status = JSON.parse(await cli(['status', '--json'])) as { drained: boolean; drain?: { drainedBy: string; drainedAt: string; restoredFrom?: string } };
  assert.equal(status.drained, true);
  assert.equal(status.drain?.restoredFrom, stateFile, `status says where the drain came from: ${JSON.stringify(status.drain)}`);
  assert.equal(status.drain?.drainedBy, state.nodeDrain.source);
  console.log(`T34: status after restart: drained by "${status.drain?.drainedBy}" at ${status.drain?.drainedAt}, restored from ${status.drain?.restoredFrom}`);

  vipd.kill('SIGKILL');
  await vipd.exited;
  await restartAndWatch('SIGKILL + start');

  const backMs = await timedUntil(1, ['undrain']);
  console.log(`T34: undrain -> path in the ToR's kernel table ${backMs} ms after the request (bound ${UNDRAIN_BOUND_MS} ms, T19; the gate passes at once)`);
  assert.ok(backMs <= UNDRAIN_BOUND_MS, `back after ${backMs} ms`);
  const cleared = JSON.parse(readFileSync(stateFile, 'utf8')) as { nodeDrain: unknown };
  assert.equal(cleared.nodeDrain, null, 'undrain is persisted too');
});

test('T34: backend drains persist under proxy.workers: 2; a pool left with none usable stays withdrawn across a restart', async () => {
  const workersConfig = lab.writeVipdConfig('lb1', { shutdown: { grace: '500ms' }, proxy: { workers: 2 } }, 'lb1-workers.yaml');
  await vipd?.stop(10_000);
  vipd = lab.startVipd('lb1', workersConfig);
  await lab.tor.waitNexthops(PREFIX, 1, 30_000);
  for (const backend of backends) await cli(['drain-backend', 'etcd', backend], workersConfig);
  await lab.tor.waitNexthops(PREFIX, 0, 5000);
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { backendDrains: Array<{ backend: string }> };
  assert.deepEqual(state.backendDrains.map((b) => b.backend).sort(), [...backends].sort());

  const term = await vipd.stop(10_000);
  assert.equal(term.code, 0);
  await restartAndWatch('workers 2, every backend drained, SIGTERM + start', workersConfig);
  const status = JSON.parse(await cli(['status', '--json'], workersConfig)) as { pools: Array<{ backends: Array<{ drained: boolean; drain?: { restoredFrom?: string } }> }> };
  for (const b of status.pools[0]!.backends) assert.equal(b.drain?.restoredFrom, stateFile, JSON.stringify(b));

  const backMs = await timedUntil(1, ['undrain-backend', 'etcd', backends[0]!], workersConfig);
  console.log(`T34: workers 2: one backend undrained -> path in the ToR's kernel table ${backMs} ms after the request (bound ${UNDRAIN_BOUND_MS} ms, T19)`);
  assert.ok(backMs <= UNDRAIN_BOUND_MS, `back after ${backMs} ms`);
  assert.ok(existsSync(stateFile));
});
