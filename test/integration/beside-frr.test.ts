import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { createLab, pidsInNamespace, type Lab, type LabProcess } from '../lab';
import { TorRouteWatch } from '../lab/route-watch';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * vipd beside the node's own router (issue 11, docs/beside-frr.md). One lab, three balancers:
 *   lb1: vipd -> gobgpd -> the node's FRR 8.4 (config/beside-frr/frr.conf, BFD 300 ms x 3) -> ToR
 *   lb2: vipd -> gobgpd -> the node's BIRD 2 (config/beside-bird/bird.conf, BFD 300 ms x 3) -> ToR
 *   lb3: vipd -> gobgpd -> ToR directly (hold 3 s, no BFD)
 * Every figure is read at the ToR: its kernel route (ip monitor) and vtysh JSON.
 */

const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
/** RELIABILITY.md bounds asserted here. */
const T16_WITHDRAW_MS = 1000;
const T18_BFD_MS = 1200;
const T18_DIRECT_MS = 3500;
const COLD_START_MS = 40_000;

let lab: Lab;
let torRoutes: TorRouteWatch;
const vipd = new Map<string, LabProcess>();
const configs = new Map<string, string>();

function record(what: string, ms: number, boundMs: number, scenario: string): void {
  console.log(`${what}: ${Math.round(ms)} ms (bound ${boundMs} ms, ${scenario})`);
  assert.ok(ms <= boundMs, `${scenario}: ${what} took ${Math.round(ms)} ms, bound ${boundMs} ms`);
}

async function nexthops(): Promise<string[]> {
  return ((await lab.tor.torRoute(PREFIX))?.nexthops ?? []).map((n) => n.gateway).sort();
}

/** ms from t0 until the ToR's kernel route has `count` next hops (from ip monitor's timestamps). */
async function torReached(count: number, since: number, timeoutMs: number): Promise<number> {
  await lab.tor.waitNexthops(PREFIX, count, timeoutMs, 10);
  return torRoutes.until(count, since, 2000);
}

/** Freezes a whole balancer: its packets dropped by nft in its namespace, and every process in it SIGSTOPped. */
async function freeze(lb: string): Promise<number> {
  const t0 = Date.now();
  const nft = await lab.exec(lb, ['nft', '-f', '-'], {
    input: 'table inet t18 {\n chain in { type filter hook input priority -300; policy drop; }\n chain out { type filter hook output priority -300; policy drop; }\n}\n',
  });
  assert.equal(nft.code, 0, nft.stderr);
  const pids = await pidsInNamespace(lab.ns(lb));
  assert.ok(pids.length >= 2, `processes to freeze in ${lb}: ${pids.join(', ')}`);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGSTOP');
    } catch {
      /* exited meanwhile */
    }
  }
  return t0;
}

before(() => requirePrerequisites(['ip', 'setpriv', 'nft', 'gobgpd', 'vtysh', 'bird', 'birdc', 'etcd', '/usr/lib/frr/zebra', '/usr/lib/frr/staticd', '/usr/lib/frr/bgpd', '/usr/lib/frr/bfdd']));

before(async () => {
  lab = await createLab({ balancers: 3, backends: 'etcd', nodeRouter: { lb1: 'frr', lb2: 'bird', lb3: 'none' } });
  torRoutes = new TorRouteWatch(lab.ns(lab.tor.node), VIP);
  for (const b of lab.balancers) configs.set(b.name, lab.writeVipdConfig(b.name));
  for (const b of lab.balancers) vipd.set(b.name, lab.startVipd(b.name, configs.get(b.name)!));
});

after(async () => {
  torRoutes?.stop();
  await lab?.destroy();
});

test('the VIP reaches the ToR through the node FRR, the node BIRD and directly: 3 ECMP next hops, one AS path each', async () => {
  const t0 = Date.now();
  await lab.tor.waitNexthops(PREFIX, 3, COLD_START_MS, 50);
  console.log(`cold start: 3 ECMP next hops at the ToR after ${Date.now() - t0} ms (printed only: gobgpd's first connect comes 5-10 s after start)`);
  assert.deepEqual(await nexthops(), lab.balancers.map((b) => b.v4).sort());
  const bgp = await lab.tor.bgpRoute(PREFIX);
  const asPaths = new Map(bgp!.paths.map((p) => [p.nexthop, p.asPath]));
  assert.equal(asPaths.get(lab.balancer('lb1').v4), '65001 65201', 'lb1: node FRR (65001) carries vipd (65201), itself the next hop');
  assert.equal(asPaths.get(lab.balancer('lb2').v4), '65001 65201', 'lb2: node BIRD (65001) carries vipd (65201), itself the next hop');
  // lb3's vipd peers with the ToR itself, and prepends its AS once so that its path ties in length with
  // the other two (a lab mixing both kinds, topology.ts); every path is in ECMP.
  assert.equal(asPaths.get(lab.balancer('lb3').v4), '65001 65001', 'lb3: vipd peers with the ToR itself');
  for (const p of bgp!.paths) assert.ok(p.best || p.multipath, `${p.nexthop} in ECMP`);
  for (const p of bgp!.paths) assert.deepEqual(p.communities, ['65000:100'], `the community vipd sets passes through (${p.nexthop})`);

  // The node routers' own view: the local session is up and took exactly the VIP.
  for (const lb of ['lb1', 'lb2']) {
    const session = await lab.nodeRouters.get(lb)!.vipdSession();
    assert.deepEqual(session, { state: 'Established', accepted: 1 }, `${lb}'s ${lab.nodeRouters.get(lb)!.kind} session with vipd`);
  }
  // BFD is up between the ToR and both node routers (and not asked of lb3's gobgpd).
  const bfd = await lab.tor.vtyshJson<Array<{ peer: string; status: string }>>('show bfd peers json');
  for (const lb of ['lb1', 'lb2']) assert.equal(bfd.find((p) => p.peer === lab.balancer(lb).v4)?.status, 'up', `BFD ToR <-> ${lb}: ${JSON.stringify(bfd)}`);
  assert.equal(bfd.find((p) => p.peer === lab.balancer('lb3').v4), undefined);
});

test('vipd status shows the local router accepting the path: session state and the adj-RIB-out toward it', async () => {
  const r = await lab.vipdCli('lb1', ['status', '--config', configs.get('lb1')!]);
  assert.equal(r.code, 0, r.stderr);
  const lb1 = lab.balancer('lb1');
  // PEER  FROM  SESSION  SENT (ADJ-RIB-OUT): the node FRR, from vipd's /32 on lo, the VIP sent.
  const row = new RegExp(`^${lb1.v4.replace(/\./g, '\\.')} +198\\.18\\.200\\.1 +established +${PREFIX.replace(/\./g, '\\.')}$`, 'm');
  assert.match(r.stdout, row);
});

test('a localAddress that is not on the node is refused: at start (exit 2) and by a reload (the old config keeps serving)', async () => {
  const base = lab.vipdConfig('lb1');
  const speaker = base.speaker as { peers: Array<Record<string, unknown>> };
  const bad = { ...base, speaker: { ...speaker, peers: [{ ...speaker.peers[0], localAddress: '198.18.200.99' }] } };
  const badFile = join(lab.dir, 'vipd', 'lb1-bad-local-address.yaml');
  writeFileSync(badFile, stringify(bad));
  const start = await lab.vipdCli('lb1', ['run', '--config', badFile], { timeoutMs: 20_000 });
  assert.equal(start.code, 2, start.stderr);
  assert.match(start.stderr, /:\d+:\d+: speaker\.peers\[0\]\.localAddress: 198\.18\.200\.99 is not an address of this node/);

  writeFileSync(configs.get('lb1')!, stringify(bad));
  const reload = await lab.vipdCli('lb1', ['reload', '--config', configs.get('lb1')!], { timeoutMs: 20_000 });
  assert.notEqual(reload.code, 0, reload.stdout);
  assert.match(reload.stderr, /speaker\.peers\[0\]\.localAddress: 198\.18\.200\.99 is not an address of this node/);
  lab.writeVipdConfig('lb1');
  assert.deepEqual(await nexthops(), lab.balancers.map((b) => b.v4).sort(), 'nothing changed at the ToR');
  assert.ok(vipd.get('lb1')!.running);
});

test('T16 through the node FRR: SIGKILL of vipd, the path leaves the ToR within 1 s', async () => {
  assert.equal((await nexthops()).length, 3);
  const t0 = Date.now();
  vipd.get('lb1')!.kill('SIGKILL');
  record('T16 beside FRR: vipd SIGKILL -> path gone from the ToR', await torReached(2, t0, 5000), T16_WITHDRAW_MS, 'T16 ≤ 1 s, goal 0.3 s');
  assert.ok(!(await nexthops()).includes(lab.balancer('lb1').v4));
  assert.deepEqual((await lab.nodeRouters.get('lb1')!.vipdSession()).accepted, 0, 'the node FRR dropped the path with the session');
});

test('BIRD 2 interop (T16 through the node BIRD): SIGKILL of vipd, the path leaves the ToR within 1 s', async () => {
  assert.equal((await nexthops()).length, 2);
  const t0 = Date.now();
  vipd.get('lb2')!.kill('SIGKILL');
  record('T16 beside BIRD: vipd SIGKILL -> path gone from the ToR', await torReached(1, t0, 5000), T16_WITHDRAW_MS, 'T16 ≤ 1 s, goal 0.3 s');
  assert.deepEqual(await nexthops(), [lab.balancer('lb3').v4]);
});

test('T18 beside FRR with BFD 300 ms x 3: a frozen balancer whose packets are dropped leaves the ToR within 1.2 s', async () => {
  // lb1's vipd again (its path must be at the ToR before the freeze).
  const t0 = Date.now();
  vipd.set('lb1', lab.startVipd('lb1', configs.get('lb1')!));
  await lab.tor.waitNexthops(PREFIX, 2, COLD_START_MS, 50);
  console.log(`vipd restarted on lb1: back at the ToR after ${Date.now() - t0} ms (printed only: cold start)`);
  const frozenAt = await freeze('lb1');
  record('T18 beside FRR (BFD 300 ms x 3): frozen + dropped -> withdrawn at the ToR', await torReached(1, frozenAt, 10_000), T18_BFD_MS, 'T18 ≤ 1.2 s with BFD');
  assert.deepEqual(await nexthops(), [lab.balancer('lb3').v4]);
  const lb1 = (await lab.tor.vtyshJson<Array<{ peer: string; status: string }>>('show bfd peers json')).find((p) => p.peer === lab.balancer('lb1').v4);
  assert.equal(lb1?.status, 'down', 'BFD saw it');
});

test('T18 direct (no node router, hold 3 s): a frozen balancer whose packets are dropped leaves the ToR within 3.5 s', async () => {
  const frozenAt = await freeze('lb3');
  record('T18 direct (hold 3 s): frozen + dropped -> withdrawn at the ToR', await torReached(0, frozenAt, 10_000), T18_DIRECT_MS, 'T18 ≤ 3.5 s direct with hold 3 s');
  assert.equal(await lab.tor.torRoute(PREFIX), null);
});
