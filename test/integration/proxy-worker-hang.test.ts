import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, pidsInNamespace, REPO_ROOT, sleep, waitFor, type Lab, type LabProcess } from '../lab';
import { TorRouteWatch } from '../lab/route-watch';
import type { TrafficReport } from '../lab/traffic';

/**
 * T17 with workers (issue 11 point 5): the real `vipd run` with proxy.workers 2 on one balancer, its
 * managed gobgpd peered with the FRR ToR, a real etcd cluster behind it. A worker that stops answering
 * its heartbeat (SIGSTOP) for proxy.hangTimeout is killed and restarted. Asserted from outside: the
 * worker processes in the namespace, the ToR's kernel route (ip monitor), and a real client's requests.
 *
 * What the gate does with a partial worker set (docs/proxy.md): a listener is bound while at least one
 * live, answering worker accepts on it. The workers share one accept queue, so a stopped worker takes
 * no new connection and the other serves them all: the route stays. With every worker hung, nothing
 * accepts, the listener is unbound and the VIP is withdrawn (T17 ≤ 3 s at the ToR); it comes back by
 * normal gating once the restarted workers accept. Workers stopped together can be declared hung one
 * heartbeat apart; if the first one's replacement accepts by then, the route rightly stays.
 */
const HANG_TIMEOUT_MS = 2000;
/** RELIABILITY.md T17: the route leaves the ToR ≤ 3 s after the hang. */
const T17_WITHDRAW_MS = 3000;
/** The primary pings each worker eight times per hangTimeout (dataplane/workers/supervisor.ts). */
const HEARTBEAT_MS = HANG_TIMEOUT_MS / 8;
/** T17's recovery is "normal gating" with no number of its own; T14's 15 s return bound is the one used, as core-e2e does. */
const T17_RETURN_MS = 15_000;
const TRAFFIC_JS = join(REPO_ROOT, 'dist', 'test', 'lab', 'traffic.js');

let lab: Lab;
let vip: string;
let vipd: LabProcess;
let torRoutes: TorRouteWatch;

/** The worker processes of the balancer's vipd, by index (their title is `vipd proxy worker N`). */
async function workerPids(): Promise<Map<number, number>> {
  const found = new Map<number, number>();
  for (const pid of await pidsInNamespace(lab.ns('lb1'))) {
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue;
    }
    const m = /^vipd proxy worker (\d+)$/.exec(cmdline);
    if (m) found.set(Number(m[1]), pid);
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function traffic(ratePerSec: number, durationMs: number): Promise<TrafficReport> {
  return lab
    .exec('client', [process.execPath, TRAFFIC_JS, '--target', `${vip}:2379`, '--rate', String(ratePerSec), '--duration', String(durationMs), '--timeout', '3000'], {
      timeoutMs: durationMs + 15_000,
    })
    .then((r) => {
      assert.equal(r.code, 0, `traffic client failed: ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrafficReport;
    });
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'integration tests need root: they create network namespaces');
  lab = await createLab({ balancers: 1, backends: 'etcd' });
  vip = lab.vip;
  torRoutes = new TorRouteWatch(lab.ns(lab.tor.node), vip);
  const file = lab.writeVipdConfig('lb1', { proxy: { workers: 2, hangTimeout: `${HANG_TIMEOUT_MS}ms` }, shutdown: { grace: '500ms' } });
  const check = await lab.vipdCli('lb1', ['check-config', file]);
  assert.equal(check.code, 0, `generated config rejected: ${check.stderr}`);
  vipd = lab.startVipd('lb1', file);
  await lab.tor.waitNexthops(`${vip}/32`, 1, 30_000).catch((err) => {
    throw new Error(`${err}\nvipd log:\n${vipd.logTail()}`);
  });
  await waitFor(async () => (await workerPids()).size === 2, 10_000, 100, 'two proxy workers');
});

after(async () => {
  torRoutes?.stop();
  await lab?.destroy();
});

test('one worker SIGSTOPped: killed and restarted after hangTimeout; the other serves and the route stays', { timeout: 90_000 }, async () => {
  const before = await workerPids();
  const stopped = before.get(0)!;
  // Traffic from before the stop until well after the restart.
  const load = traffic(50, 9000);
  await sleep(1500);
  const t0 = Date.now();
  process.kill(stopped, 'SIGSTOP');
  let killedAt = 0;
  try {
    await waitFor(async () => !alive(stopped), 10_000, 20, `worker 0 (pid ${stopped}) killed`);
    killedAt = Date.now();
  } finally {
    if (alive(stopped)) process.kill(stopped, 'SIGCONT');
  }
  await waitFor(async () => {
    const now = await workerPids();
    return now.get(0) !== undefined && now.get(0) !== stopped;
  }, 10_000, 50, 'a new worker 0');
  const restartedAt = Date.now();
  const report = await load;
  const after = await workerPids();
  const killedMs = killedAt - t0;
  console.log(
    `T17 workers, one of 2 stopped: worker 0 (pid ${stopped}) killed ${killedMs} ms after SIGSTOP (hangTimeout ${HANG_TIMEOUT_MS} ms), new worker 0 pid ${after.get(0)} seen ${restartedAt - t0} ms after; worker 1 pid ${before.get(1)} -> ${after.get(1)}`,
  );
  console.log(`T17 workers, one of 2 stopped: traffic 50/s: ${report.attempted} requests, ${report.ok} ok, ${report.failed} failed ${JSON.stringify(report.errors)}; ToR route changes since the stop: ${JSON.stringify(torRoutes.changesSince(t0))}`);
  // Silence counts from the last pong, which came up to one heartbeat (an eighth of hangTimeout) before the stop.
  assert.ok(killedMs > HANG_TIMEOUT_MS - HEARTBEAT_MS - 100, `killed after ${killedMs} ms: before hangTimeout (less one heartbeat)`);
  assert.ok(killedMs <= T17_WITHDRAW_MS, `the hung worker was killed ${killedMs} ms after the stop, over T17's ${T17_WITHDRAW_MS} ms`);
  assert.equal(after.get(1), before.get(1), 'the answering worker was left alone');
  assert.deepEqual(torRoutes.changesSince(t0), [], 'the route changed at the ToR while another worker served');
  assert.ok((await lab.tor.torRoute(`${vip}/32`))?.nexthops.length === 1, 'the ToR still routes the VIP to the balancer');
  // A stopped worker accepts nothing new, so only requests it held when it stopped may fail.
  const late = report.failures.filter((f) => f.startWall > t0 + 50);
  assert.deepEqual(late, [], 'a request that started after the stop failed: the other worker should have served it');
});

test('every worker SIGSTOPped: within 3 s the route leaves the ToR (T17) or a replacement worker already accepts; normal gating after', { timeout: 90_000 }, async () => {
  await lab.tor.waitNexthops(`${vip}/32`, 1, 30_000);
  const before = await workerPids();
  assert.equal(before.size, 2);
  const stopped = [...before.values()];
  const hungLogged = (): number => (vipd.readLog().match(/"event":"workerHung"/g) ?? []).length;
  const hungBefore = hungLogged();
  const t0 = Date.now();
  for (const pid of stopped) process.kill(pid, 'SIGSTOP');
  let killedMs: number;
  try {
    await waitFor(async () => stopped.every((pid) => !alive(pid)), T17_WITHDRAW_MS + 2000, 20, `stopped workers ${stopped.join(',')} killed`);
    killedMs = Date.now() - t0;
  } finally {
    for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGCONT');
  }
  assert.ok(killedMs <= T17_WITHDRAW_MS, `T17: the hung workers were killed ${killedMs} ms after the stop, bound ${T17_WITHDRAW_MS} ms`);
  // Each worker's silence counts from its own last pong, so the two can be declared hung one heartbeat
  // apart. The first one's replacement starts at once; when it accepts before the second is declared
  // hung, the listener never loses its last accepting worker, and the route rightly stays: the node can
  // serve. Otherwise the listener is unbound and the route must leave the ToR within T17's bound.
  const withdrawnMs = await torRoutes.until(0, t0, Math.max(0, T17_WITHDRAW_MS - (Date.now() - t0)) + 500).catch(() => undefined);
  if (withdrawnMs === undefined) {
    const report = await traffic(20, 2000);
    console.log(
      `T17 workers, both stopped: both killed ${killedMs} ms after SIGSTOP; a replacement accepted before the second was declared hung, so the route stayed (ToR changes ${JSON.stringify(torRoutes.changesSince(t0))}); right after: ${report.ok}/${report.attempted} requests ok`,
    );
    assert.deepEqual(torRoutes.changesSince(t0), [], 'the route changed at the ToR without a withdrawal');
    assert.equal(report.failed, 0, `the route stayed, so the VIP must answer: ${JSON.stringify(report.errors)}`);
  } else {
    console.log(`T17 workers, both stopped: route left the ToR ${withdrawnMs} ms after SIGSTOP (bound ${T17_WITHDRAW_MS} ms; hangTimeout ${HANG_TIMEOUT_MS} ms); both killed after ${killedMs} ms`);
    assert.ok(withdrawnMs <= T17_WITHDRAW_MS, `T17: withdrawn after ${withdrawnMs} ms, bound ${T17_WITHDRAW_MS} ms`);
    const t1 = Date.now();
    const backMs = await torRoutes.until(1, t1, 30_000);
    console.log(`T17 workers, both stopped: route back at the ToR ${backMs} ms after the withdrawal (bound ${T17_RETURN_MS} ms; announce.holdDown 3 s runs from vipd's withdrawal)`);
    assert.ok(backMs <= T17_RETURN_MS, `route back after ${backMs} ms, bound ${T17_RETURN_MS} ms`);
  }
  await waitFor(async () => (await workerPids()).size === 2, 10_000, 100, 'both workers restarted');
  const after = await workerPids();
  console.log(`T17 workers: ${stopped.join(',')} -> ${[...after.values()].join(',')}`);
  const report = await traffic(20, 2000);
  console.log(`T17 workers, after recovery: ${report.ok}/${report.attempted} requests ok`);
  assert.equal(report.failed, 0, JSON.stringify(report.errors));
  assert.equal(hungLogged() - hungBefore, 2, 'both stopped workers were declared hung');
});
