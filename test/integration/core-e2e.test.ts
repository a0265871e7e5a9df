import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, pidsInNamespace, REPO_ROOT, type Lab, type LabProcess } from '../lab';
import { TorRouteWatch } from '../lab/route-watch';
import { ecmpChangeVerdict, type TrafficReport } from '../lab/traffic';

/**
 * Issue 2's end-to-end bar: 3 balancers running vipd + managed gobgpd, an FRR ToR, a real 3-member etcd
 * cluster, a client. Every assertion is made from outside vipd: the ToR's kernel route table, vtysh
 * JSON, a real client's result.
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const INTERVAL_MS = 200;
const FALL = 2;
const RISE = 2;
const HOLD_DOWN_MS = 3000;
const TRAFFIC_JS = join(REPO_ROOT, 'dist', 'test', 'lab', 'traffic.js');

let lab: Lab;
let torRoutes: TorRouteWatch;
const vipd = new Map<string, LabProcess>();
const configs = new Map<string, string>();
const figures: Array<[string, string, string]> = [];

/**
 * Records a figure. `bound` is the RELIABILITY.md bound the test asserts, with its scenario; a figure
 * RELIABILITY.md gives no number for is printed with `unbounded`, which says why it is only printed.
 */
function record(what: string, ms: number, bound: { readonly ms: number; readonly scenario: string } | { readonly unbounded: string }): void {
  const text = 'ms' in bound ? `bound ${bound.ms} ms, ${bound.scenario}` : `printed only: ${bound.unbounded}`;
  figures.push([what, `${Math.round(ms)} ms`, text]);
  console.log(`${what}: ${Math.round(ms)} ms (${text})`);
}

/** Records the figure and asserts its bound. */
function assertWithin(what: string, ms: number, boundMs: number, scenario: string, detail = ''): void {
  record(what, ms, { ms: boundMs, scenario });
  assert.ok(ms <= boundMs, `${scenario}: ${what} took ${Math.round(ms)} ms, bound ${boundMs} ms${detail ? ` (${detail})` : ''}`);
}

/** RELIABILITY.md bounds this file asserts. */
const T01_MARKED_DOWN_MS = 2500;
const T05_WITHDRAW_MS = INTERVAL_MS * FALL + 1000;
const T05_RETURN_MS = RISE * INTERVAL_MS + HOLD_DOWN_MS + 1000;
const T19_DRAIN_MS = 500;
const T19_UNDRAIN_MS = 500;
const T17_WATCHDOG_MS = 3000;
const T14_WITHDRAW_MS = 500;
const T14_RETURN_MS = 15_000;
const T16_WITHDRAW_MS = 1000;
/** Cold starts: no RELIABILITY.md row; the path waits for process start-up and gobgpd's first connect (5-10 s, T13). */
const COLD_START = 'RELIABILITY.md has no bound for a cold start (process start-up plus gobgpd\'s first BGP connect, 5-10 s per T13); waited up to 30 s';

async function traffic(ratePerSec: number, durationMs: number): Promise<TrafficReport> {
  const r = await lab.exec('client', [process.execPath, TRAFFIC_JS, '--target', `${VIP}:2379`, '--rate', String(ratePerSec), '--duration', String(durationMs)], {
    timeoutMs: durationMs + 15_000,
  });
  assert.equal(r.code, 0, `traffic client failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrafficReport;
}

async function nexthops(): Promise<string[]> {
  return ((await lab.tor.torRoute(PREFIX))?.nexthops ?? []).map((n) => n.gateway ?? '').sort();
}

async function pidOf(node: string, comm: string): Promise<number[]> {
  const pids = await pidsInNamespace(lab.ns(node));
  return pids.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
    } catch {
      return false;
    }
  });
}

/**
 * Waits until the ToR's kernel route to the VIP has `count` next hops (read with `ip route`), and
 * returns when that change happened by the route monitor: ms after `since` (a Date.now()).
 */
async function torReached(count: number, since: number, timeoutMs: number): Promise<number> {
  await lab.tor.waitNexthops(PREFIX, count, timeoutMs, 10);
  return torRoutes.until(count, since, 2000);
}

function vipdLogTail(lb: string): string {
  return vipd.get(lb)?.logTail() ?? '';
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'integration tests need root: they create network namespaces');
  lab = await createLab({ balancers: 3, backends: 'etcd' });
  torRoutes = new TorRouteWatch(lab.ns(lab.tor.node), VIP);
  for (const lb of lab.balancers) {
    const file = lab.writeVipdConfig(lb.name, { announce: { holdDown: `${HOLD_DOWN_MS}ms` }, shutdown: { grace: '500ms' } });
    configs.set(lb.name, file);
    const check = await lab.vipdCli(lb.name, ['check-config', file]);
    assert.equal(check.code, 0, `generated config rejected: ${check.stderr}`);
  }
});

after(async () => {
  if (figures.length) {
    console.log('\n| measurement | measured | bound |\n|---|---|---|');
    for (const [what, ms, bound] of figures) console.log(`| ${what} | ${ms} | ${bound} |`);
  }
  torRoutes?.stop();
  await lab?.destroy();
});

test('3 balancers announce: the ToR kernel route to the VIP has 3 next hops', async () => {
  const started = performance.now();
  for (const lb of lab.balancers) vipd.set(lb.name, lab.startVipd(lb.name, configs.get(lb.name)!));
  await lab.tor.waitNexthops(PREFIX, 3, 30_000).catch((err) => {
    throw new Error(`${err}\nlb1 log:\n${vipdLogTail('lb1')}`);
  });
  record('start to 3 ECMP next hops (includes gobgpd connect delay)', performance.now() - started, { unbounded: COLD_START });
  assert.deepEqual(await nexthops(), lab.balancers.map((b) => b.v4).sort());
  const bgp = await lab.tor.bgpRoute(PREFIX);
  assert.ok(bgp, 'the ToR has a BGP route');
  assert.equal(bgp.paths.length, 3);
  for (const p of bgp.paths) assert.ok(p.communities.includes('65000:100'), `community on the path: ${JSON.stringify(p)}`);
});

test('clients through the VIP succeed: etcdctl and plain TCP', async () => {
  const put = await lab.etcd!.etcdctl(['put', 'vipd-e2e', 'through-the-vip'], { endpoints: [`${VIP}:2379`], node: 'client' });
  assert.equal(put.code, 0, put.stderr);
  const get = await lab.etcd!.etcdctl(['get', 'vipd-e2e', '--print-value-only'], { endpoints: [`${VIP}:2379`], node: 'client' });
  assert.equal(get.stdout.trim(), 'through-the-vip');
  const report = await traffic(100, 3000);
  console.log('traffic through 3 balancers:', JSON.stringify(report));
  assert.equal(report.failed, 0, JSON.stringify(report.errors));
  assert.ok(report.attempted >= 290);
});

/** A member that is not the raft leader: killing the leader makes every member answer 503 until a new one is elected. */
async function etcdFollower(): Promise<{ name: string; endpoint: string }> {
  const r = await lab.etcd!.etcdctl(['endpoint', 'status', '-w', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as Array<{ Endpoint: string; Status: { header: { member_id: number }; leader: number } }>;
  const follower = rows.find((row) => row.Status.header.member_id !== row.Status.leader);
  assert.ok(follower, `no follower in ${r.stdout}`);
  const member = lab.etcd!.members.find((m) => follower.Endpoint.includes(m.address))!;
  return { name: member.name, endpoint: `${member.address}:2379` };
}

/** How lb1's health checks see `backend` now, from its admin API (GET, as an operator reads it). */
async function healthOnLb1(backend: string): Promise<string | undefined> {
  const r = await lab.exec('lb1', ['curl', '-sS', '-f', 'http://127.0.0.1:9180/status']);
  if (r.code !== 0) return undefined;
  const s = JSON.parse(r.stdout) as { pools: Array<{ backends: Array<{ address: string; health: string }> }> };
  return s.pools[0]!.backends.find((b) => b.address === backend)?.health;
}

test('one backend down: marked down within 2.5 s, the route stays and clients still succeed (connect errors retried) (T01)', async () => {
  const victim = await etcdFollower();
  const t0 = performance.now();
  await lab.etcd!.kill(victim.name);
  // Traffic starts at once, before the checks mark be1 down, so refused connects must be retried.
  const load = traffic(100, 3000);
  // A backend's health has no view from outside the balancer (the route stays, by design): this one
  // figure is read from vipd's status, polled every 20 ms.
  let markedDownMs = Infinity;
  while (performance.now() - t0 < 2 * T01_MARKED_DOWN_MS) {
    if ((await healthOnLb1(victim.endpoint)) === 'unhealthy') {
      markedDownMs = performance.now() - t0;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assertWithin(`T01: ${victim.name} killed -> marked down by lb1's checks (vipd status)`, markedDownMs, T01_MARKED_DOWN_MS, 'T01 marked down ≤ 2.5 s');
  const report = await load;
  console.log(`traffic with ${victim.name} killed:`, JSON.stringify(report));
  assert.equal(report.failed, 0, JSON.stringify(report.errors));
  assert.equal((await nexthops()).length, 3, 'one dead backend does not take any balancer out');
  const status = await lab.vipdCli('lb1', ['status', '--config', configs.get('lb1')!, '--json']);
  const s = JSON.parse(status.stdout) as { pools: Array<{ backends: Array<{ address: string; health: string }> }> };
  assert.equal(s.pools[0]!.backends.find((b) => b.address === victim.endpoint)!.health, 'unhealthy');
  await lab.etcd!.restart(victim.name);
  await lab.etcd!.waitHealthy();
});

test("every backend of one balancer down: its path leaves the ToR within interval×fall + 1 s, and returns", async () => {
  const lb1 = lab.balancer('lb1');
  const nft = (args: string[]) => lab.exec('lb1', ['nft', ...args]);
  const t0 = Date.now();
  // Drop lb1's traffic to the backends only: the other balancers still see them healthy.
  const rules = 'table inet vipde2e {\n chain out {\n  type filter hook output priority 0;\n  ip daddr { 198.18.21.2, 198.18.22.2, 198.18.23.2 } tcp dport 2379 drop\n }\n}\n';
  const added = await lab.exec('lb1', ['nft', '-f', '-'], { input: rules });
  assert.equal(added.code, 0, added.stderr);
  assertWithin('T05: all backends of lb1 down -> path leaves ToR', await torReached(2, t0, 10_000), T05_WITHDRAW_MS, 'T05 interval×fall + 1 s');
  assert.ok(!(await nexthops()).includes(lb1.v4), 'it is lb1 that left');

  const t1 = Date.now();
  assert.equal((await nft(['delete', 'table', 'inet', 'vipde2e'])).code, 0);
  assertWithin('T05: lb1 backends back -> path returns (rise + hold-down)', await torReached(3, t1, 15_000), T05_RETURN_MS, 'T05 rise + hold-down + 1 s');
});

test('drain: out of ECMP within 0.5 s with 0 failed new client connections; undrain restores it within 0.5 s (T19)', async () => {
  const lb2 = lab.balancer('lb2');
  const load = traffic(100, 4000);
  try {
    await new Promise((r) => setTimeout(r, 1000));
    // Timed with curl against the admin socket: the CLI's own Node start-up is not part of the drain.
    const t0 = Date.now();
    const drained = await lab.exec('lb2', ['curl', '-sS', '-f', '--unix-socket', lab.adminSocket('lb2'), '-X', 'POST', '-H', 'content-type: application/json', 'http://localhost/drain']);
    assert.equal(drained.code, 0, drained.stderr);
    // Where the time goes: vipd answers once gobgpd no longer has the path; the rest is BGP and the ToR.
    console.log(`T19: drain answered by vipd after ${Date.now() - t0} ms, curl start-up included (printed only: a split of the bound below, not a bound of its own)`);
    const outMs = await torReached(2, t0, 5000);
    assertWithin('T19: drain -> path leaves ToR', outMs, T19_DRAIN_MS, 'T19 out of ECMP ≤ 0.5 s');
    assert.ok(!(await nexthops()).includes(lb2.v4));
    const report = await load;
    const verdict = ecmpChangeVerdict(report, t0 + outMs, t0 + outMs);
    console.log(`T19: traffic during drain: ${verdict.text}; p99 ${report.p99Ms} ms`);
    assert.ok(verdict.ok, `${verdict.text}: ${JSON.stringify(report.failures)}`);

    const status = await lab.vipdCli('lb2', ['status', '--config', configs.get('lb2')!]);
    // Within drain.grace (issue 10) the path is still advertised with GRACEFUL_SHUTDOWN, out of ECMP.
    assert.match(status.stdout, /control-plane\s+198\.19\.0\.10\/32\s+(withdrawn\s+drained|draining\s+draining)/);
  } catch (err) {
    // Leave lb2 serving for the tests after this one, whatever failed here.
    await load.catch(() => undefined);
    await lab.exec('lb2', ['curl', '-sS', '--unix-socket', lab.adminSocket('lb2'), '-X', 'POST', '-H', 'content-type: application/json', 'http://localhost/undrain']);
    throw err;
  }
  // Every backend stayed healthy and a drain sets no hold-down, so the gate passes already: T19 then
  // counts from the undrain request itself. Timed with curl, as the drain is.
  const t1 = Date.now();
  const undrained = await lab.exec('lb2', ['curl', '-sS', '-f', '--unix-socket', lab.adminSocket('lb2'), '-X', 'POST', '-H', 'content-type: application/json', 'http://localhost/undrain']);
  assert.equal(undrained.code, 0, undrained.stderr);
  assertWithin('T19: undrain -> path back at ToR (gate already passing)', await torReached(3, t1, 5000), T19_UNDRAIN_MS, 'T19 undrain restores ECMP ≤ 0.5 s after the gate passes');
});

test('vipd hung (SIGSTOP): the watchdog stops its gobgpd and the path leaves the ToR within 3 s; after SIGCONT it returns', async () => {
  const lb2 = lab.balancer('lb2');
  const proc = vipd.get('lb2')!;
  const [gobgpd] = await pidOf('lb2', 'gobgpd');
  assert.ok(gobgpd, 'managed gobgpd runs in lb2');
  assert.equal((await nexthops()).length, 3, 'all balancers in ECMP before the hang');
  const t0 = Date.now();
  process.kill(proc.pid, 'SIGSTOP');
  try {
    assertWithin('T17: vipd SIGSTOP -> path leaves ToR (hang watchdog, timeout 2 s)', await torReached(2, t0, 6000), T17_WATCHDOG_MS, 'T17 watchdog ≤ 3 s');
    assert.ok(!(await nexthops()).includes(lb2.v4));
    assert.deepEqual(await pidOf('lb2', 'gobgpd'), [], 'the watchdog stopped gobgpd while vipd was stopped');
  } finally {
    process.kill(proc.pid, 'SIGCONT');
  }
  const t1 = Date.now();
  const backMs = await torReached(3, t1, 30_000);
  // T17 asks for "normal gating on recovery" without a number. The watchdog stopped gobgpd, so vipd's
  // recovery is T14's path (vipd starts a new gobgpd, which connects, and the path is added): T14's bound.
  assertWithin('T17: vipd SIGCONT -> path back on ToR (gobgpd restarted)', backMs, T14_RETURN_MS, 'T14 route back ≤ 15 s');
  assert.match(proc.readLog(), /vipd-watchdog: no heartbeat from vipd/);
});

test('SIGKILL of gobgpd: the ToR withdraws within 0.5 s; vipd restarts it and the route is back within 15 s (T14)', async () => {
  const lb1 = lab.balancer('lb1');
  const [gobgpd] = await pidOf('lb1', 'gobgpd');
  assert.ok(gobgpd, 'managed gobgpd runs in lb1');
  assert.equal((await nexthops()).length, 3, 'all balancers in ECMP before the kill');
  const t0 = Date.now();
  process.kill(gobgpd, 'SIGKILL');
  assertWithin('T14: gobgpd SIGKILL -> path leaves ToR', await torReached(2, t0, 5000), T14_WITHDRAW_MS, 'T14 ToR withdraws ≤ 0.5 s');
  assertWithin('T14: gobgpd SIGKILL -> route announced again', await torReached(3, t0, 25_000), T14_RETURN_MS, 'T14 route back ≤ 15 s');
  assert.ok((await nexthops()).includes(lb1.v4));
  const [restarted] = await pidOf('lb1', 'gobgpd');
  assert.ok(restarted && restarted !== gobgpd, 'a new gobgpd runs');
  // No unknown paths remain: what the ToR holds from lb1 is the VIP's path and nothing else.
  const table = await lab.tor.vtyshJson<{ routes?: Record<string, Array<{ nexthops?: Array<{ ip?: string }> }>> }>('show bgp ipv4 unicast json');
  const fromLb1 = Object.entries(table.routes ?? {})
    .filter(([, paths]) => paths.some((p) => p.nexthops?.some((n) => n.ip === lb1.v4)))
    .map(([prefix]) => prefix);
  console.log(`T14: paths the ToR holds from lb1 after the restart: ${JSON.stringify(fromLb1)}`);
  assert.deepEqual(fromLb1, [PREFIX], 'T14: no unknown paths remain');
});

test('SIGKILL of vipd: its gobgpd dies with it and the path leaves the ToR within 1 s', async () => {
  const lb3 = lab.balancer('lb3');
  assert.equal((await pidOf('lb3', 'gobgpd')).length, 1);
  assert.ok((await nexthops()).includes(lb3.v4), 'lb3 in ECMP before the kill');
  const before = (await nexthops()).length;
  const t0 = Date.now();
  vipd.get('lb3')!.kill('SIGKILL');
  assertWithin('T16: vipd SIGKILL -> path leaves ToR', await torReached(before - 1, t0, 5000), T16_WITHDRAW_MS, 'T16 path gone ≤ 1 s');
  assert.ok(!(await nexthops()).includes(lb3.v4));
  assert.deepEqual(await pidOf('lb3', 'gobgpd'), [], 'gobgpd died with vipd');
});

test('a vipd started after a SIGKILL removes the gobgpd directory its predecessor left, and announces again', async () => {
  const killed = vipd.get('lb3')!;
  await killed.exited;
  const leftBehind = () => readdirSync(tmpdir()).filter((name) => name.startsWith(`vipd-gobgpd-${killed.pid}-`));
  assert.equal(leftBehind().length, 1, 'SIGKILL leaves the private directory (nothing can clean up)');
  const before = (await nexthops()).length;
  const t0 = Date.now();
  const restarted = lab.startVipd('lb3', configs.get('lb3')!);
  vipd.set('lb3', restarted);
  record('vipd restart after SIGKILL -> path back on ToR', await torReached(before + 1, t0, 30_000), { unbounded: COLD_START });
  assert.deepEqual(leftBehind(), [], 'the new vipd removed it');
  assert.match(restarted.readLog(), new RegExp(`"op":"removeStale".*"ownerPid":${killed.pid}`));
  assert.equal(readdirSync(tmpdir()).filter((name) => name.startsWith(`vipd-gobgpd-${restarted.pid}-`)).length, 1, 'and made its own');
});

test('SIGTERM of vipd: withdraws first, exits 0, stops gobgpd and removes the VIP from lo', async () => {
  const proc = vipd.get('lb1')!;
  assert.ok((await nexthops()).includes(lab.balancer('lb1').v4), 'lb1 in ECMP before SIGTERM');
  const before = (await nexthops()).length;
  const t0 = Date.now();
  proc.kill('SIGTERM');
  const goneMs = await torReached(before - 1, t0, 5000);
  // T30 asks SIGTERM to be graceful (withdraw first, clean exit: both asserted below) but gives no time.
  record('vipd SIGTERM -> path leaves ToR', goneMs, { unbounded: 'RELIABILITY.md gives no time for SIGTERM (T30: graceful, withdraw first, asserted below)' });
  const exit = await proc.exited;
  assert.equal(exit.code, 0, `vipd exit: ${JSON.stringify(exit)}\n${vipdLogTail('lb1')}`);
  assert.deepEqual(await pidOf('lb1', 'gobgpd'), []);
  const addr = await lab.exec('lb1', ['ip', '-j', '-4', 'addr', 'show', 'dev', 'lo']);
  assert.ok(!addr.stdout.includes(VIP), 'VIP removed from lo');
  const log = readFileSync(proc.logPath, 'utf8');
  assert.match(log, /"event":"route","op":"withdraw".*"reason":"shuttingDown"/);
});
