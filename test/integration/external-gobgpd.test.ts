import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createLab, sleep, type Gobgpd, type Lab, type LabProcess } from '../lab';
import { TorRouteWatch } from '../lab/route-watch';
import { requirePrerequisites } from '../fakes/prerequisites';
import { ownerMark, routerIdAsOwnerId } from '../../src/speaker/gobgp/ownership';

/**
 * Issue 11 point 2, vipd beside an external gobgpd (`speaker.gobgp.manage: false`): a real `vipd run`
 * in lb1 drives a plain gobgpd that the test started (as a node's own gobgpd would be), which peers
 * with the FRR ToR. Asserted at the ToR (kernel routes, vtysh) and in gobgpd's RIB through the gobgp
 * CLI, never from vipd's status.
 * - T27 (external): a path someone else added stays; vipd's own stale path (its mark, from a previous
 *   run or added by hand) is removed, ≤ 5 s.
 * - gobgpd restart: vipd announces again once gobgpd is back; bound T14's 15 s.
 * - clean stop (SIGTERM): vipd withdraws, its guardian leaves gobgpd alone.
 * - SIGSTOP of vipd: no heartbeat for hangTimeout, the guardian deletes vipd's paths; ≤ 3 s (T17).
 * - SIGKILL of vipd: the guardian deletes vipd's paths; the route leaves the ToR ≤ 1 s (T16's bound).
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const FOREIGN = '198.19.0.99/32';
const STALE = '198.19.0.98/32';
const API = '127.0.0.1:50051';

let lab: Lab;
let gobgpd: Gobgpd;
let config: string;
let mark: string;
let vipd: LabProcess | undefined;

before(async () => {
  requirePrerequisites(['ip', 'gobgpd', 'gobgp', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd']);
  lab = await createLab({ balancers: 1, backends: 'etcd' });
  gobgpd = await lab.startGobgpd('lb1', { api: API });
  const lb = lab.balancer('lb1');
  mark = ownerMark(lb.asn, routerIdAsOwnerId(lb.routerId));
  config = lab.writeVipdConfig('lb1', { speaker: { gobgp: { manage: false, api: API } }, shutdown: { grace: '500ms' } });
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

async function gobgpOk(args: readonly string[]): Promise<string> {
  const r = await gobgpd.cli(args);
  if (r.code !== 0) throw new Error(`gobgp ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Locally originated prefixes in the external gobgpd's global RIB (IPv4). */
async function localPrefixes(): Promise<string[]> {
  const j = JSON.parse((await gobgpOk(['global', 'rib', '-a', 'ipv4', '-j'])) || '{}') as Record<string, Array<{ 'source-id'?: string; neighbor?: string; 'neighbor-ip'?: string }>>;
  return Object.keys(j).sort();
}

async function atTor(prefix: string): Promise<boolean> {
  return ((await lab.tor.torRoute(prefix))?.nexthops.length ?? 0) > 0;
}

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>, pollMs = 20): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await check()) return Math.round(performance.now() - t0);
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms${vipd ? `\nvipd log:\n${vipd.logTail(40)}` : ''}`);
    await sleep(pollMs);
  }
}

async function startVipd(): Promise<LabProcess> {
  vipd = lab.startVipd('lb1', config);
  await waitUntil(`${PREFIX} at the ToR`, 40_000, () => atTor(PREFIX));
  return vipd;
}

test('T27 (external gobgpd): a path someone else added stays; vipd\'s own stale path is removed ≤ 5 s', async () => {
  await lab.tor.waitEstablished(undefined, 30_000);
  // Before vipd runs: a path of someone else's, and one with vipd's mark (what a previous vipd left).
  await gobgpOk(['global', 'rib', 'add', '-a', 'ipv4', FOREIGN]);
  await gobgpOk(['global', 'rib', 'add', '-a', 'ipv4', STALE, 'large-community', mark]);
  await waitUntil('both at the ToR', 15_000, async () => (await atTor(FOREIGN)) && (await atTor(STALE)));

  const t0 = performance.now();
  const proc = lab.startVipd('lb1', config);
  vipd = proc;
  // Node's start on this loaded machine takes seconds; the bound is on vipd's work, so the clock runs
  // from the moment vipd's speaker first reached gobgpd (its log line), to the RIB read here.
  let goneAt = 0;
  await waitUntil('stale own path deleted from gobgpd', 30_000, async () => {
    if ((await localPrefixes()).includes(STALE)) return false;
    goneAt = Date.now();
    return true;
  });
  const apiUpLine = proc.readLog().split('\n').find((l) => l.includes('"msg":"gobgpd API up"'));
  assert.ok(apiUpLine, `vipd logged reaching gobgpd\n${proc.logTail()}`);
  const staleGoneMs = goneAt - Date.parse((JSON.parse(apiUpLine) as { time: string }).time);
  console.log(
    `T27 (external): the previous run's marked path ${STALE} deleted ${staleGoneMs} ms after vipd reached gobgpd's API (bound 5000 ms; ${Math.round(performance.now() - t0)} ms after the process was spawned)`,
  );
  assert.ok(staleGoneMs <= 5000, `${staleGoneMs} ms (bound 5000 ms)`);
  const announcedMs = await waitUntil(`${PREFIX} at the ToR`, 40_000, () => atTor(PREFIX));
  console.log(`T27 (external): ${PREFIX} at the ToR ${Math.round(performance.now() - t0)} ms after vipd started`);
  void announcedMs;
  assert.ok(!(await atTor(STALE)), `${STALE} left the ToR`);

  // While vipd runs: one more path with its mark, added by hand, goes too; the foreign one stays.
  await gobgpOk(['global', 'rib', 'add', '-a', 'ipv4', STALE, 'large-community', mark]);
  const t1 = performance.now();
  const byHandMs = await waitUntil('marked path added by hand deleted', 5_000, async () => !(await localPrefixes()).includes(STALE));
  console.log(`T27 (external): a marked path added by hand while vipd runs deleted after ${byHandMs} ms (bound 5000 ms, reconcile interval 3000 ms)`);
  void t1;
  // Three reconcile intervals later the foreign path is still in gobgpd and at the ToR.
  await sleep(9_000);
  assert.deepEqual(await localPrefixes(), [PREFIX, FOREIGN].sort(), 'gobgpd holds vipd\'s VIP and the foreign path, nothing else');
  assert.ok(await atTor(FOREIGN), `${FOREIGN} (someone else's) is still at the ToR`);
  const rib = await gobgpOk(['global', 'rib', '-a', 'ipv4', PREFIX, '-j']);
  const [, data1, data2] = mark.split(':');
  assert.ok(rib.includes(data1!) && rib.includes(data2!), `vipd's path carries its mark ${mark}: ${rib}`);
  console.log(`T27 (external): after 9 s more, gobgpd still holds ${FOREIGN} (not vipd's) and it is still at the ToR; vipd's path carries ${mark}`);
  assert.ok(proc.running);
});

test('external gobgpd restart: vipd announces its path again (bound 15 s, T14)', async () => {
  assert.ok(vipd?.running, 'vipd from the test above runs');
  await gobgpd.stop(3000);
  await waitUntil(`${PREFIX} gone from the ToR`, 10_000, async () => !(await atTor(PREFIX)));
  const t0 = performance.now();
  gobgpd = await lab.startGobgpd('lb1', { api: API });
  const apiMs = Math.round(performance.now() - t0);
  const inRibMs = await waitUntil(`${PREFIX} in the new gobgpd`, 15_000, async () => (await localPrefixes()).includes(PREFIX));
  const backMs = await waitUntil(`${PREFIX} back at the ToR`, 15_000, () => atTor(PREFIX));
  const total = Math.round(performance.now() - t0);
  console.log(`external gobgpd restart: API up after ${apiMs} ms, vipd's path re-added ${inRibMs} ms later, at the ToR ${total} ms after the restart (bound 15000 ms; the session's first connect takes 5-10 s)`);
  void backMs;
  assert.ok(total <= 15_000);
  await waitUntil('vipd logged the re-announce as a repair of a missing path', 5_000, async () => /"event":"announce".*"reason":"missing"/.test(vipd!.readLog()));
});

test('clean stop (SIGTERM): vipd withdraws and its guardian leaves gobgpd alone', async () => {
  const proc = vipd!;
  await gobgpOk(['global', 'rib', 'add', '-a', 'ipv4', FOREIGN]);
  proc.kill('SIGTERM');
  const exit = await proc.exited;
  assert.equal(exit.code, 0, proc.logTail());
  vipd = undefined;
  await waitUntil(`${PREFIX} gone from the ToR`, 5_000, async () => !(await atTor(PREFIX)));
  await waitUntil('guardian logged the clean stop', 5_000, async () => proc.readLog().includes('"reason":"clean-stop"'));
  const log = proc.readLog();
  assert.ok(!log.includes('"reason":"vipd-died"'), 'the guardian did not act on a clean stop');
  assert.deepEqual(await localPrefixes(), [FOREIGN]);
  console.log('clean stop: vipd withdrew, the guardian logged clean-stop and deleted nothing; the foreign path stays');
  // `vipd withdraw-owned` (the drop-in's ExecStopPost): deletes what carries the mark, nothing else.
  await gobgpOk(['global', 'rib', 'add', '-a', 'ipv4', STALE, 'large-community', mark]);
  const r = await lab.vipdCli('lb1', ['withdraw-owned', '--config', config]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`deleted 1 path\\(s\\) marked ${mark}: ${STALE.replace(/\./g, '\\.')}`));
  assert.deepEqual(await localPrefixes(), [FOREIGN]);
  console.log(`vipd withdraw-owned: ${r.stdout.trim()}; the foreign path stays`);
});

test('T17 (external gobgpd): SIGSTOP of vipd: its guardian deletes vipd\'s paths after hangTimeout, ≤ 3 s at the ToR; back after SIGCONT', async () => {
  const proc = await startVipd();
  await waitUntil('guardian armed', 10_000, async () => proc.readLog().includes('guardian armed'));
  const watch = new TorRouteWatch(lab.ns(lab.torNode.name), VIP);
  try {
    await sleep(300);
    const since = Date.now();
    assert.ok(proc.kill('SIGSTOP'));
    const goneMs = await watch.until(0, since, 10_000);
    console.log(`T17 (external gobgpd): vipd SIGSTOPped -> route gone at the ToR after ${goneMs} ms (bound 3000 ms; hangTimeout 2000 ms)`);
    assert.ok(goneMs <= 3000, `route left the ToR after ${goneMs} ms (bound 3000 ms)`);
    const resumed = Date.now();
    assert.ok(proc.kill('SIGCONT'));
    const backMs = await watch.until(1, resumed, 30_000);
    console.log(`T17 (external gobgpd): after SIGCONT the route is back at the ToR after ${backMs} ms (vipd's next reconciliation)`);
  } finally {
    watch.stop();
  }
  assert.ok(proc.running);
  assert.match(proc.readLog(), /"reason":"vipd-hung"/);
});

test('SIGKILL of vipd: its guardian deletes vipd\'s paths from the external gobgpd; the route leaves the ToR ≤ 1 s (T16)', async () => {
  const proc = vipd?.running ? vipd : await startVipd();
  await waitUntil('guardian armed', 10_000, async () => proc.readLog().includes('guardian armed'));
  const watch = new TorRouteWatch(lab.ns(lab.torNode.name), VIP);
  try {
    await sleep(300);
    const since = Date.now();
    assert.ok(proc.kill('SIGKILL'));
    const goneMs = await watch.until(0, since, 5_000);
    console.log(`T16 (external gobgpd): vipd SIGKILLed -> route gone at the ToR after ${goneMs} ms (bound 1000 ms, goal 300 ms)`);
    assert.ok(goneMs <= 1000, `route left the ToR after ${goneMs} ms (bound 1000 ms)`);
  } finally {
    watch.stop();
  }
  vipd = undefined;
  await waitUntil('guardian logged its deletion', 5_000, async () => proc.readLog().includes('"reason":"vipd-died"'));
  const line = proc.readLog().split('\n').find((l) => l.includes('"reason":"vipd-died"') && l.includes('"prefixes"'));
  assert.ok(line, proc.logTail());
  const logged = JSON.parse(line) as { prefixes: string[]; ms: number };
  assert.deepEqual(logged.prefixes, [PREFIX]);
  console.log(`T16 (external gobgpd): the guardian logged deleting ${logged.prefixes.join(',')} ${logged.ms} ms after it saw vipd die`);
  assert.deepEqual(await localPrefixes(), [FOREIGN], 'only the foreign path is left in gobgpd');
});
