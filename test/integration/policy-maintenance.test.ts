import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, REPO_ROOT, waitFor, type BgpPath, type Lab } from '../lab';
import { TorRouteWatch } from '../lab/route-watch';
import { ecmpChangeVerdict, type TrafficReport } from '../lab/traffic';

/**
 * Issue 10, announcement policy, asserted from the FRR ToR (its BGP table and kernel FIB) and a real
 * client: 3 balancers running vipd with two VIPs of their own policy over one real etcd pool:
 * - control-plane 198.19.0.10: gate 100 %, onFailure pessimize (3 own-AS prepends, community
 *   65000:666, large community 65001:0:666), draining attributes 65000:999;
 * - etcd-strict 198.19.0.11: gate 100 %, onFailure withdraw.
 * T05 (every balancer fails its gate, under both policies), T19 (planned drain with GRACEFUL_SHUTDOWN)
 * and a per-VIP drain.
 */
const API = '198.19.0.10';
const STRICT = '198.19.0.11';
const INTERVAL_MS = 200;
const FALL = 2;
const RISE = 2;
const HOLD_DOWN_MS = 3000;
const GRACE_MS = 3000;
const TRAFFIC_JS = join(REPO_ROOT, 'dist', 'test', 'lab', 'traffic.js');

/** RELIABILITY.md bounds. */
const T05_WITHDRAW_MS = INTERVAL_MS * FALL + 1000;
const T05_RETURN_MS = RISE * INTERVAL_MS + HOLD_DOWN_MS + 1000;
const T19_OUT_OF_ECMP_MS = 500;
const T19_UNDRAIN_MS = 500;

let lab: Lab;
/** The ToR's kernel route to control-plane as it changes (ip -ts monitor): timings without polling's spawn cost. */
let apiRoutes: TorRouteWatch;
const disableFile = (lb: string): string => join(lab.dir, `${lb}.disable`);
const configs = new Map<string, string>();
const figures: string[] = [];

function figure(line: string): void {
  figures.push(line);
  console.log(line);
}

function prefix(vip: string): string {
  return `${vip}/32`;
}

async function nexthops(vip: string): Promise<string[]> {
  return ((await lab.tor.torRoute(prefix(vip)))?.nexthops ?? []).map((n) => n.gateway).sort();
}

/** Ms from `t0` (performance.now()) until the ToR's kernel route for `vip` has `count` next hops, polled every 10 ms. */
async function nexthopsReach(vip: string, count: number, t0: number, timeoutMs: number): Promise<number> {
  await waitFor(async () => (await nexthops(vip)).length === count, timeoutMs, 10, `${count} next hops for ${vip} at the ToR`);
  return performance.now() - t0;
}

async function bgpPaths(vip: string): Promise<BgpPath[]> {
  return (await lab.tor.bgpRoute(prefix(vip)))?.paths ?? [];
}

/** Large communities as the ToR shows them (the lab's parser leaves them out). */
async function largeCommunities(vip: string): Promise<string[]> {
  const j = JSON.parse(await lab.tor.vtysh(`show bgp ipv4 unicast ${prefix(vip)} json`)) as { paths?: Array<{ largeCommunity?: { string?: string } }> };
  return (j.paths ?? []).map((p) => p.largeCommunity?.string ?? '');
}

async function traffic(vip: string, ratePerSec: number, durationMs: number): Promise<TrafficReport> {
  const r = await lab.exec('client', [process.execPath, TRAFFIC_JS, '--target', `${vip}:2379`, '--rate', String(ratePerSec), '--duration', String(durationMs)], { timeoutMs: durationMs + 15_000 });
  assert.equal(r.code, 0, `traffic client failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrafficReport;
}

/** An admin mutation over the balancer's socket, as curl sends it (no CLI start-up in the timing). */
async function admin(lb: string, path: string, body: Record<string, unknown> = {}): Promise<{ code: number; stdout: string }> {
  const r = await lab.exec(lb, ['curl', '-sS', '--unix-socket', lab.adminSocket(lb), '-X', 'POST', '-H', 'content-type: application/json', '-d', JSON.stringify(body), '-w', '\n%{http_code}', `http://localhost${path}`]);
  const lines = r.stdout.trim().split('\n');
  return { code: Number(lines.pop()), stdout: lines.join('\n') };
}

async function etcdFollower(): Promise<string> {
  const r = await lab.etcd!.etcdctl(['endpoint', 'status', '-w', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as Array<{ Endpoint: string; Status: { header: { member_id: number }; leader: number } }>;
  const follower = rows.find((row) => row.Status.header.member_id !== row.Status.leader)!;
  return lab.etcd!.members.find((m) => follower.Endpoint.includes(m.address))!.name;
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'integration tests need root: they create network namespaces');
  lab = await createLab({ balancers: 3, backends: 'etcd' });
  for (const lb of lab.balancers) {
    const file = lab.writeVipdConfig(lb.name, {
      announce: { holdDown: `${HOLD_DOWN_MS}ms` },
      shutdown: { grace: '500ms' },
      drain: { grace: `${GRACE_MS}ms`, file: disableFile(lb.name) },
      vips: [
        {
          name: 'control-plane',
          address: API,
          gate: { minHealthy: '100%' },
          onFailure: 'pessimize',
          attributes: {
            up: { communities: ['65000:100'] },
            pessimized: { communities: ['65000:666'], largeCommunities: ['65001:0:666'], asPathPrepend: 3 },
            draining: { communities: ['65000:999'] },
          },
          listeners: [{ port: 2379, pool: 'etcd' }],
        },
        { name: 'etcd-strict', address: STRICT, gate: { minHealthy: '100%' }, communities: ['65000:101'], listeners: [{ port: 2379, pool: 'etcd' }] },
      ],
    });
    configs.set(lb.name, file);
    const check = await lab.vipdCli(lb.name, ['check-config', file]);
    assert.equal(check.code, 0, `generated config rejected: ${check.stderr}`);
  }
  for (const lb of lab.balancers) lab.startVipd(lb.name, configs.get(lb.name)!);
  await lab.tor.waitNexthops(prefix(API), 3, 40_000);
  await lab.tor.waitNexthops(prefix(STRICT), 3, 40_000);
  apiRoutes = new TorRouteWatch(lab.ns(lab.tor.node), API);
});

after(async () => {
  apiRoutes?.stop();
  if (figures.length) console.log(`\npolicy-maintenance figures:\n${figures.join('\n')}`);
  await lab?.destroy();
});

test('two VIPs with their own policy: both announced by 3 balancers with their up attributes', async () => {
  for (const p of await bgpPaths(API)) assert.deepEqual(p.communities, ['65000:100']);
  for (const p of await bgpPaths(STRICT)) assert.deepEqual(p.communities, ['65000:101']);
  assert.equal((await bgpPaths(API)).filter((p) => p.multipath || p.best).length, 3);
});

test('T05, every balancer fails its gate: withdraw takes etcd-strict off the fabric, pessimize keeps control-plane in ECMP with its pessimized attributes', async () => {
  const victim = await etcdFollower();
  const t0 = performance.now();
  await lab.etcd!.kill(victim);
  try {
    const goneMs = await nexthopsReach(STRICT, 0, t0, 10_000);
    figure(`T05 (withdraw): etcd-strict gone from the ToR ${Math.round(goneMs)} ms after ${victim} died on every balancer (bound ${T05_WITHDRAW_MS} ms)`);
    assert.ok(goneMs <= T05_WITHDRAW_MS, `withdraw took ${Math.round(goneMs)} ms`);
    assert.deepEqual(await bgpPaths(STRICT), [], 'withdrawn: not even in the BGP table');

    await waitFor(async () => (await bgpPaths(API)).filter((p) => p.communities.includes('65000:666')).length === 3, 5000, 20, '3 pessimized paths for control-plane');
    const pessimizedMs = performance.now() - t0;
    const paths = await bgpPaths(API);
    for (const p of paths) {
      assert.deepEqual(p.communities, ['65000:666'], JSON.stringify(p));
      assert.equal(p.asPath, '65001 65001 65001 65001', `3 prepends of the own AS on top of the one gobgpd adds: ${JSON.stringify(p)}`);
    }
    assert.deepEqual(await largeCommunities(API), ['65001:0:666', '65001:0:666', '65001:0:666'], 'RFC 8092 large community at the ToR');
    assert.equal((await nexthops(API)).length, 3, 'all pessimized: ECMP continues across them');
    const report = await traffic(API, 100, 2000);
    figure(`T05 (pessimize): control-plane pessimized at the ToR after ${Math.round(pessimizedMs)} ms, 3 of 3 paths in ECMP, ${report.ok}/${report.attempted} client requests ok (bound: 0 failed)`);
    assert.equal(report.failed, 0, JSON.stringify(report.errors));
  } finally {
    await lab.etcd!.restart(victim);
  }
  const t1 = performance.now();
  await waitFor(async () => (await nexthops(STRICT)).length === 3, 30_000, 10, 'etcd-strict back on 3 balancers');
  const backMs = performance.now() - t1;
  await waitFor(async () => (await bgpPaths(API)).every((p) => p.communities.includes('65000:100')), 10_000, 20, 'control-plane back to its up attributes');
  // The member's restart and rejoin come first; the bound is for vipd's part (rise + hold-down + 1 s) and
  // the figure includes etcd's own start-up, so it is printed, not held to the bound.
  figure(`T05: etcd-strict back at 3 next hops ${Math.round(backMs)} ms after ${victim} was restarted (etcd start-up included; vipd's bound ${T05_RETURN_MS} ms counts from the member being healthy)`);
});

test('T19: drain with GRACEFUL_SHUTDOWN: local-pref 0 at the ToR, out of ECMP but in the BGP table during the grace, then withdrawn; 0 failed new connections at 200 conn/s', async () => {
  const lb1 = lab.balancer('lb1');
  const load = traffic(API, 200, GRACE_MS + 4000);
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = performance.now();
    const wall0 = Date.now();
    const drained = await admin('lb1', '/drain', {});
    assert.equal(drained.code, 200, drained.stdout);
    const outMs = await nexthopsReach(API, 2, t0, 5000);
    // Read while the grace certainly runs: the CLI's own start-up must not race the grace's end.
    const status = lab.vipdCli('lb1', ['status', '--config', configs.get('lb1')!]);
    const during = (await bgpPaths(API)).find((p) => p.nexthop === lb1.v4 || p.peer === lb1.torV4 || p.peer === lb1.v4);
    assert.ok(during, `lb1's path is still in the ToR's BGP table during the grace: ${JSON.stringify(await bgpPaths(API))}`);
    assert.ok(during.communities.includes('65535:0'), `GRACEFUL_SHUTDOWN on the path: ${JSON.stringify(during)}`);
    assert.ok(during.communities.includes('65000:999'), 'the draining attributes');
    assert.equal(during.localPref, 0, 'FRR sets local-pref 0 for GRACEFUL_SHUTDOWN');
    assert.equal(during.multipath || during.best, false, 'out of ECMP');
    assert.ok(!(await nexthops(API)).includes(lb1.v4));
    assert.equal((await nexthops(STRICT)).length, 2, 'a node drain covers every VIP');
    figure(`T19: lb1 out of ECMP ${Math.round(outMs)} ms after the drain request, its path kept with local-pref 0 and 65535:0 (bound ${T19_OUT_OF_ECMP_MS} ms)`);
    assert.ok(outMs <= T19_OUT_OF_ECMP_MS, `out of ECMP after ${Math.round(outMs)} ms`);
    const shown = await status;
    assert.match(shown.stdout, /DRAIN\s+PHASE\s+GRACE UNTIL/);
    assert.match(shown.stdout, /node\s+grace\s+\d{4}-/, `status read ${Math.round(performance.now() - t0)} ms after the drain (grace ${GRACE_MS} ms)`);

    await waitFor(async () => (await bgpPaths(API)).length === 2, GRACE_MS + 3000, 20, "lb1's path withdrawn after the grace");
    const withdrawnMs = performance.now() - t0;
    figure(`T19: lb1's path withdrawn from the ToR's BGP table ${Math.round(withdrawnMs)} ms after the drain (grace ${GRACE_MS} ms, bound grace + 1000 ms)`);
    assert.ok(withdrawnMs >= GRACE_MS - 100 && withdrawnMs <= GRACE_MS + 1000, `withdrawn at ${Math.round(withdrawnMs)} ms`);
    const report = await load;
    // The ECMP change happened between the drain request and the poll that saw two next hops.
    const verdict = ecmpChangeVerdict(report, wall0, wall0 + outMs);
    figure(`T19: at 200 conn/s during the drain: ${verdict.text}`);
    assert.ok(verdict.ok, `${verdict.text}: ${JSON.stringify(report.failures)}`);
  } catch (err) {
    // Leave lb1 serving for the tests after this one, whatever failed here.
    await load.catch(() => undefined);
    await admin('lb1', '/undrain');
    await lab.tor.waitNexthops(prefix(API), 3, 5000).catch(() => undefined);
    await lab.tor.waitNexthops(prefix(STRICT), 3, 5000).catch(() => undefined);
    throw err;
  }
  const t1 = performance.now();
  const wall1 = Date.now();
  assert.equal((await admin('lb1', '/undrain')).code, 200);
  await nexthopsReach(API, 3, t1, 5000);
  const backMs = await apiRoutes.until(3, wall1, 2000);
  figure(`T19: undrain -> lb1 back in ECMP after ${Math.round(backMs)} ms (gate already passing; bound ${T19_UNDRAIN_MS} ms)`);
  assert.ok(backMs <= T19_UNDRAIN_MS);
  await lab.tor.waitNexthops(prefix(STRICT), 3, 5000);
});

test('a drain of one VIP leaves the other alone; an unknown VIP is a 404 naming the known ones; a bad grace is refused', async () => {
  const unknown = await admin('lb2', '/drain', { vip: 'nope' });
  assert.equal(unknown.code, 404);
  assert.equal((JSON.parse(unknown.stdout) as { error: string }).error, 'no VIP "nope"; VIPs: control-plane, etcd-strict');
  const badGrace = await admin('lb2', '/drain', { grace: '2h' });
  assert.equal(badGrace.code, 400);
  assert.match((JSON.parse(badGrace.stdout) as { error: string }).error, /out of range \(0s\.\.1h\)/);
  const cli = await lab.vipdCli('lb2', ['drain', '--config', configs.get('lb2')!, '--vip', 'etcd-strict', '--grace', '0s']);
  assert.equal(cli.code, 0, cli.stderr);
  await lab.tor.waitNexthops(prefix(STRICT), 2, 5000);
  assert.equal((await nexthops(API)).length, 3, 'control-plane untouched');
  for (const p of await bgpPaths(API)) assert.ok(!p.communities.includes('65535:0'));
  const status = JSON.parse((await lab.vipdCli('lb2', ['status', '--config', configs.get('lb2')!, '--json'])).stdout) as { drains: Array<{ target: string; phase: string }> };
  assert.deepEqual(status.drains.map((d) => [d.target, d.phase]), [['etcd-strict', 'withdrawn']]);
  const undrain = await lab.vipdCli('lb2', ['undrain', '--config', configs.get('lb2')!, '--vip', 'etcd-strict']);
  assert.equal(undrain.code, 0, undrain.stderr);
  await lab.tor.waitNexthops(prefix(STRICT), 3, 5000);
  figure('per-VIP drain: etcd-strict left lb2 alone, control-plane kept 3 next hops; unknown VIP 404, grace 2h 400');
});

test('drain.file: while it exists the node is drained (GRACEFUL_SHUTDOWN first, then withdrawn); removing it undrains', async () => {
  const lb3 = lab.balancer('lb3');
  assert.equal((await nexthops(API)).length, 3, 'every balancer in ECMP before the file appears');
  const t0 = performance.now();
  const wall0 = Date.now();
  writeFileSync(disableFile('lb3'), 'maintenance\n');
  await nexthopsReach(API, 2, t0, 5000);
  const outMs = await apiRoutes.until(2, wall0, 2000);
  const path = (await bgpPaths(API)).find((p) => p.nexthop === lb3.v4 || p.peer === lb3.v4);
  assert.ok(path?.communities.includes('65535:0'), `GRACEFUL_SHUTDOWN while the file exists: ${JSON.stringify(path)}`);
  await waitFor(async () => (await bgpPaths(API)).length === 2, GRACE_MS + 3000, 20, 'lb3 withdrawn after the grace');
  const status = JSON.parse((await lab.vipdCli('lb3', ['status', '--config', configs.get('lb3')!, '--json'])).stdout) as { drain?: { drainedBy: string } };
  assert.equal(status.drain?.drainedBy, `drain file ${disableFile('lb3')}`);
  const t1 = performance.now();
  const wall1 = Date.now();
  rmSync(disableFile('lb3'));
  await nexthopsReach(API, 3, t1, 5000);
  const backMs = await apiRoutes.until(3, wall1, 2000);
  figure(`drain.file: lb3 out of ECMP ${Math.round(outMs)} ms after the file appeared (checked every 1000 ms; T19 bound 500 ms + the 1 s check), back ${Math.round(backMs)} ms after it was removed`);
  assert.ok(outMs <= 1000 + T19_OUT_OF_ECMP_MS);
  assert.ok(backMs <= 1000 + T19_UNDRAIN_MS);
});
