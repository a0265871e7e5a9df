import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createLab, sleep, waitFor, type BgpPath, type Lab, type LabProcess } from '../lab';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * Issue 10, planned maintenance at daemon level, asserted from the FRR ToR (BGP table, kernel FIB) and a
 * real client: 2 balancers running `vipd run` with two VIPs over one real etcd pool.
 * 1. drain.closeAfter closes the client connections still open on a drained node, at closeAfter;
 * 2. a per-VIP drain survives SIGTERM and SIGKILL restarts (that VIP never announced, the other is);
 * 3. SIGTERM's GRACEFUL_SHUTDOWN phase: 65535:0 / local-pref 0 at the ToR, then withdrawn, then exit.
 */
const API = '198.19.0.10';
const STRICT = '198.19.0.11';
const DRAIN_GRACE_MS = 1000;
const CLOSE_AFTER_MS = 2500;
const SHUTDOWN_GRACE_MS = 4000;
/** SIGTERM's GRACEFUL_SHUTDOWN phase: min(drain.grace, shutdown.grace / 2). */
const SIGTERM_DRAIN_MS = Math.min(DRAIN_GRACE_MS, SHUTDOWN_GRACE_MS / 2);
/** T19: out of ECMP within 500 ms of the request. */
const T19_OUT_OF_ECMP_MS = 500;
const T19_UNDRAIN_MS = 500;
const WATCH_AFTER_ESTABLISHED_MS = 5000;

let lab: Lab;
const configs = new Map<string, string>();
const procs = new Map<string, LabProcess>();
const figures: string[] = [];

function figure(line: string): void {
  figures.push(line);
  console.log(line);
}

async function nexthops(vip: string): Promise<string[]> {
  return ((await lab.tor.torRoute(`${vip}/32`))?.nexthops ?? []).map((n) => n.gateway).sort();
}

async function bgpPaths(vip: string): Promise<BgpPath[]> {
  return (await lab.tor.bgpRoute(`${vip}/32`))?.paths ?? [];
}

function pathOf(paths: BgpPath[], lb: string): BgpPath | undefined {
  const b = lab.balancer(lb);
  return paths.find((p) => p.nexthop === b.v4 || p.peer === b.v4);
}

async function cli(lb: string, args: string[]): Promise<string> {
  const r = await lab.vipdCli(lb, [...args, '--config', configs.get(lb)!]);
  assert.equal(r.code, 0, `vipd ${args.join(' ')} on ${lb}: ${r.stderr}`);
  return r.stdout;
}

/** An admin mutation over the balancer's socket, as curl sends it (no CLI start-up in the timing). */
async function admin(lb: string, path: string, body: Record<string, unknown> = {}): Promise<void> {
  const r = await lab.exec(lb, ['curl', '-sS', '--unix-socket', lab.adminSocket(lb), '-X', 'POST', '-H', 'content-type: application/json', '-d', JSON.stringify(body), '-w', '\n%{http_code}', `http://localhost${path}`]);
  assert.equal(r.stdout.trim().split('\n').pop(), '200', `POST ${path} on ${lb}: ${r.stdout} ${r.stderr}`);
}

async function established(lb: string): Promise<boolean> {
  return (await lab.tor.bgpSummary()).some((p) => p.address === lab.balancer(lb).v4 && p.established);
}

/**
 * A long-lived client: one TCP connection to `target`, an HTTP/1.1 keep-alive `GET /version` on it every
 * 200 ms; prints the wall-clock times of the connect, of each response and of the close, as JSON.
 */
const LONG_CLIENT = `
const net = require('node:net');
const [host, port, maxMs] = process.argv.slice(1);
const out = { connectedAt: 0, responses: [], closedAt: 0, how: '' };
const s = net.connect(Number(port), host, () => { out.connectedAt = Date.now(); process.stdout.write('connected\\n'); });
let buf = '';
s.setEncoding('utf8');
s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('"etcdcluster"')) >= 0) { out.responses.push(Date.now()); buf = buf.slice(i + 13); } });
const tick = setInterval(() => { if (s.writable) s.write('GET /version HTTP/1.1\\r\\nHost: vip\\r\\n\\r\\n'); }, 200);
function done(how) { if (out.closedAt) return; out.closedAt = Date.now(); out.how = how; clearInterval(tick); console.log(JSON.stringify(out)); process.exit(0); }
s.on('end', () => done('end'));
s.on('error', (e) => done('error ' + e.code));
s.on('close', () => done('close'));
setTimeout(() => done('still open at the client timeout'), Number(maxMs));
`;

before(async () => {
  requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd', 'curl']);
  assert.equal(process.getuid?.(), 0, 'integration tests need root: they create network namespaces');
  lab = await createLab({ balancers: 2, backends: 'etcd' });
  for (const lb of lab.balancers) {
    const file = lab.writeVipdConfig(lb.name, {
      shutdown: { grace: `${SHUTDOWN_GRACE_MS}ms` },
      drain: { grace: `${DRAIN_GRACE_MS}ms`, closeAfter: `${CLOSE_AFTER_MS}ms` },
      vips: [
        { name: 'control-plane', address: API, communities: ['65000:100'], listeners: [{ port: 2379, pool: 'etcd' }] },
        { name: 'etcd-strict', address: STRICT, communities: ['65000:101'], listeners: [{ port: 2379, pool: 'etcd' }] },
      ],
    });
    configs.set(lb.name, file);
    const check = await lab.vipdCli(lb.name, ['check-config', file]);
    assert.equal(check.code, 0, `generated config rejected: ${check.stderr}`);
  }
  for (const lb of lab.balancers) procs.set(lb.name, lab.startVipd(lb.name, configs.get(lb.name)!));
  await lab.tor.waitNexthops(`${API}/32`, 2, 40_000);
  await lab.tor.waitNexthops(`${STRICT}/32`, 2, 40_000);
});

after(async () => {
  if (figures.length) console.log(`\npolicy-drain-daemon figures:\n${figures.join('\n')}`);
  for (const p of procs.values()) await p.stop(8000).catch(() => undefined);
  await lab?.destroy();
});

test('drain.closeAfter: a long-lived client connection stays open through the grace and the withdraw and is closed by vipd at closeAfter', async () => {
  // Only lb1 announced, so the client's connection lands on lb1.
  await cli('lb2', ['drain', '--grace', '0s']);
  await lab.tor.waitNexthops(`${API}/32`, 1, 5000);
  assert.deepEqual(await nexthops(API), [lab.balancer('lb1').v4]);
  try {
    const clientRun = lab.exec('client', [process.execPath, '-e', LONG_CLIENT, API, '2379', String(CLOSE_AFTER_MS + 15_000)], { timeoutMs: CLOSE_AFTER_MS + 25_000 });
    await sleep(1000);
    const t0 = Date.now();
    await admin('lb1', '/drain');
    let gshutSeenMs: number | undefined;
    let withdrawnMs: number | undefined;
    while (withdrawnMs === undefined && Date.now() - t0 < DRAIN_GRACE_MS + 3000) {
      const p = pathOf(await bgpPaths(API), 'lb1');
      if (p?.communities.includes('65535:0') && gshutSeenMs === undefined) gshutSeenMs = Date.now() - t0;
      if (!p) withdrawnMs = Date.now() - t0;
      await sleep(20);
    }
    const r = await clientRun;
    assert.equal(r.code, 0, `client failed: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { connectedAt: number; responses: number[]; closedAt: number; how: string };
    const closedMs = out.closedAt - t0;
    const lastResponseMs = Math.max(...out.responses) - t0;
    figure(
      `closeAfter: drain of lb1 (grace ${DRAIN_GRACE_MS} ms, closeAfter ${CLOSE_AFTER_MS} ms): GRACEFUL_SHUTDOWN seen at ${gshutSeenMs} ms, withdrawn at the ToR at ${withdrawnMs} ms, ` +
        `client connection (open since ${t0 - out.connectedAt} ms before the drain, ${out.responses.length} responses, last at ${lastResponseMs} ms) closed (${out.how}) at ${closedMs} ms (bound ${CLOSE_AFTER_MS} ± 1000 ms)`,
    );
    assert.ok(out.connectedAt > 0 && out.connectedAt < t0, 'connected before the drain');
    assert.ok(gshutSeenMs !== undefined, 'GRACEFUL_SHUTDOWN seen at the ToR during the grace');
    assert.ok(withdrawnMs !== undefined, 'withdrawn at the ToR after the grace');
    assert.ok(lastResponseMs >= DRAIN_GRACE_MS - 400, `the connection served during the grace (last response at ${lastResponseMs} ms)`);
    assert.ok(closedMs > withdrawnMs, 'still open after the withdraw');
    assert.ok(Math.abs(closedMs - CLOSE_AFTER_MS) <= 1000, `closed at ${closedMs} ms, closeAfter ${CLOSE_AFTER_MS} ms`);
  } finally {
    await cli('lb1', ['undrain']);
    await cli('lb2', ['undrain']);
    await lab.tor.waitNexthops(`${API}/32`, 2, 10_000);
    await lab.tor.waitNexthops(`${STRICT}/32`, 2, 10_000);
  }
});

/** Starts lb1's vipd and polls the ToR until WATCH_AFTER_ESTABLISHED_MS past the session: etcd-strict never has lb1, control-plane gets it. */
async function restartAndWatch(what: string): Promise<void> {
  const downStart = performance.now();
  while (await established('lb1')) {
    assert.ok(performance.now() - downStart < 10_000, 'the old BGP session never went down');
    await sleep(50);
  }
  const lb1 = lab.balancer('lb1').v4;
  const t0 = performance.now();
  const proc = lab.startVipd('lb1', configs.get('lb1')!);
  procs.set('lb1', proc);
  let polls = 0;
  let establishedAt: number | undefined;
  let apiBackAt: number | undefined;
  for (;;) {
    const now = performance.now() - t0;
    assert.ok(!(await nexthops(STRICT)).includes(lb1), `${what}: drained etcd-strict announced by lb1 ${Math.round(now)} ms after the restart\n${proc.logTail()}`);
    polls++;
    if (apiBackAt === undefined && (await nexthops(API)).includes(lb1)) apiBackAt = now;
    if (establishedAt === undefined && polls % 10 === 0 && (await established('lb1'))) establishedAt = now;
    if (establishedAt !== undefined && apiBackAt !== undefined && now >= establishedAt + WATCH_AFTER_ESTABLISHED_MS) break;
    assert.ok(now < 40_000, `${what}: no session or no control-plane route within 40 s (established ${establishedAt}, control-plane ${apiBackAt})\n${proc.logTail()}`);
    assert.ok(proc.running, `${what}: vipd exited: ${JSON.stringify(proc.exitStatus)}\n${proc.logTail()}`);
    await sleep(20);
  }
  assert.deepEqual(await nexthops(STRICT), [lab.balancer('lb2').v4], 'etcd-strict still served by lb2');
  figure(
    `per-VIP drain across ${what}: etcd-strict never announced by lb1 (0 of ${polls} ToR polls over ${Math.round(performance.now() - t0)} ms, session Established at ${Math.round(establishedAt!)} ms), control-plane back on lb1 at ${Math.round(apiBackAt!)} ms`,
  );
}

test('a per-VIP drain survives SIGTERM and SIGKILL restarts: that VIP is never announced, the other VIP of the balancer is; undrain brings it back', async () => {
  await cli('lb1', ['drain', '--vip', 'etcd-strict', '--grace', '0s']);
  await lab.tor.waitNexthops(`${STRICT}/32`, 1, 5000);
  assert.equal((await nexthops(API)).length, 2, 'control-plane untouched');

  const term = await procs.get('lb1')!.stop(SHUTDOWN_GRACE_MS + 10_000);
  assert.equal(term.code, 0, 'SIGTERM exits 0');
  await restartAndWatch('SIGTERM + start');

  const proc = procs.get('lb1')!;
  proc.kill('SIGKILL');
  await proc.exited;
  await restartAndWatch('SIGKILL + start');

  const status = JSON.parse(await cli('lb1', ['status', '--json'])) as { drains: Array<{ target: string; phase: string }> };
  assert.deepEqual(status.drains.map((d) => d.target), ['etcd-strict']);

  const t0 = performance.now();
  await admin('lb1', '/undrain', { vip: 'etcd-strict' });
  await waitFor(async () => (await nexthops(STRICT)).length === 2, 5000, 10, 'etcd-strict back on 2 balancers');
  const backMs = performance.now() - t0;
  figure(`per-VIP drain: undrain -> etcd-strict back on lb1 at the ToR ${Math.round(backMs)} ms after the request (gate already passing; T19 bound ${T19_UNDRAIN_MS} ms)`);
  assert.ok(backMs <= T19_UNDRAIN_MS, `back after ${Math.round(backMs)} ms`);
});

test("SIGTERM: the balancer's path is seen at the ToR with 65535:0 and local-pref 0, out of ECMP but in the BGP table, then withdrawn, before vipd exits", async () => {
  await lab.tor.waitNexthops(`${API}/32`, 2, 10_000);
  const proc = procs.get('lb1')!;
  const lb1 = lab.balancer('lb1').v4;
  let exitMs: number | undefined;
  const t0 = performance.now();
  void proc.exited.then(() => (exitMs = performance.now() - t0));
  proc.kill('SIGTERM');
  let gshutMs: number | undefined;
  let gshutPath: BgpPath | undefined;
  let firstSeenMs: number | undefined;
  let outOfEcmpMs: number | undefined;
  let withdrawnMs: number | undefined;
  while (exitMs === undefined && performance.now() - t0 < SHUTDOWN_GRACE_MS + 5000) {
    const [paths, hops] = await Promise.all([bgpPaths(API), nexthops(API)]);
    const now = performance.now() - t0;
    const p = pathOf(paths, 'lb1');
    if (outOfEcmpMs === undefined && !hops.includes(lb1)) outOfEcmpMs = now;
    if (firstSeenMs === undefined && p?.communities.includes('65535:0')) firstSeenMs = now;
    // FRR's JSON can show the new attributes a moment before its best-path run clears multipath, so
    // the phase counts from the first look that has both: GRACEFUL_SHUTDOWN and out of ECMP.
    if (gshutMs === undefined && p?.communities.includes('65535:0') && p.localPref === 0 && !(p.multipath || p.best)) {
      gshutMs = now;
      gshutPath = p;
    }
    if (withdrawnMs === undefined && !p) withdrawnMs = now;
    await sleep(20);
  }
  await proc.exited;
  figure(
    `SIGTERM (drain.grace ${DRAIN_GRACE_MS} ms, shutdown.grace ${SHUTDOWN_GRACE_MS} ms -> GRACEFUL_SHUTDOWN ${SIGTERM_DRAIN_MS} ms): 65535:0 first seen at the ToR at ${Math.round(firstSeenMs ?? NaN)} ms, with local-pref 0 and out of ECMP while still in the BGP table at ${Math.round(gshutMs ?? NaN)} ms, ` +
      `out of ECMP at ${Math.round(outOfEcmpMs ?? NaN)} ms, withdrawn at ${Math.round(withdrawnMs ?? NaN)} ms, process exited at ${Math.round(exitMs ?? NaN)} ms`,
  );
  assert.ok(gshutMs !== undefined && gshutPath, "lb1's path seen in the BGP table with GRACEFUL_SHUTDOWN and local-pref 0, neither best nor multipath");
  assert.ok(gshutMs <= T19_OUT_OF_ECMP_MS, `GRACEFUL_SHUTDOWN at ${Math.round(gshutMs)} ms (bound ${T19_OUT_OF_ECMP_MS} ms)`);
  assert.ok(withdrawnMs !== undefined, 'withdrawn before the process exited');
  assert.ok(withdrawnMs > gshutMs, 'withdrawn after the GRACEFUL_SHUTDOWN phase');
  assert.ok(withdrawnMs >= SIGTERM_DRAIN_MS - 100 && withdrawnMs <= SIGTERM_DRAIN_MS + 1000, `withdrawn at ${Math.round(withdrawnMs)} ms`);
  assert.ok(exitMs !== undefined && exitMs > withdrawnMs, 'exit after the withdraw');
  assert.equal(proc.exitStatus?.code, 0, 'SIGTERM exits 0');
  assert.deepEqual(await nexthops(API), [lab.balancer('lb2').v4], 'lb2 keeps serving');
});
