import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { ADMIN_MAX_CONNECTIONS } from '../../src/control/control';
import { SOCKET_RESERVED } from '../../src/control/admin-server';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * The admin surface of a real `vipd run` (T24, T29, T31), in a network namespace of its own, with
 * three real HTTP backends on its loopback and a real client (curl) going through the VIP.
 *
 * Everything is judged from outside vipd: which backend a client reaches, the exit status and errno
 * of the refused callers, vipd's process still running and its descriptor count from /proc. vipd's
 * metrics are read only to check that refusals are counted, which is itself a requirement.
 */
const NS = `vadm${process.pid}`;
const VIP = '198.18.252.1';
const VIP_PORT = 6443;
const ADMIN_PORT = 9181;
const BACKENDS = [
  { name: 'b1', port: 7101 },
  { name: 'b2', port: 7102 },
  { name: 'b3', port: 7103 },
] as const;
/** RELIABILITY.md standard timings: checks every 1 s, 1 s timeout, fall 2, rise 2. */
const INTERVAL_MS = 1000;
const TIMEOUT_MS = 1000;
const FALL = 2;
/** T02's bound for a backend that stops passing its checks: interval × fall + timeout. */
const MARK_DOWN_BOUND_MS = INTERVAL_MS * FALL + TIMEOUT_MS;
const IDLE_CONNECTIONS = 1000;
/**
 * vipd's RLIMIT_NOFILE here. It keeps 128 descriptors free (64 for probes, 64 for admin connections) and
 * admits (256 - ~20 in use - 128) / 2 = 54 client sessions; with the old 64 shared by everyone it admitted
 * 86, and 64 idle admin connections on top left the probes nothing.
 */
const FD_LIMIT = 256;
/** An idle admin connection is cut by vipd's header timeout (5 s) and its 1 s sweep; opening 1,000 takes ~1 s; 1 s of slack. */
const IDLE_CLOSED_BOUND_MS = 8000;
const FUZZ_CASES = 400;
const FUZZ_SEED = 0x7290;
/** vipd's default request timeout is 10 s: a truncated body is cut by then, plus its 1 s sweep. */
const FUZZ_DEADLINE_MS = 14_000;
const BIN = path.join(__dirname, '..', '..', 'src', 'cli', 'bin.js');
const FLOOD_RUNNER = path.join(__dirname, '..', 'fakes', 'admin-flood-runner.js');

const BACKEND_SCRIPT = `
const http = require('http');
const [name, port] = process.argv.slice(1);
let healthy = true;
process.on('SIGUSR1', () => { healthy = false; });
const server = http.createServer((req, res) => {
  if (req.url === '/health') { res.statusCode = healthy ? 200 : 503; return res.end(healthy ? 'ok' : 'stopping'); }
  res.end(name);
});
// Client connections stay open as long as the test holds them (the fd-limit scenario).
server.keepAliveTimeout = 120000;
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
`;

function sh(...argv: string[]): void {
  execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

function inNs(argv: readonly string[], opts: { user?: 'nobody' } = {}): { code: number | null; stdout: string; stderr: string } {
  const prefix = opts.user ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] : [];
  const r = spawnSync('ip', ['netns', 'exec', NS, ...prefix, ...argv], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function curl(args: readonly string[], opts: { user?: 'nobody' } = {}): { code: number | null; status: number; body: string; stderr: string } {
  const r = inNs(['curl', '-sS', '-m', '5', '-w', '\n%{http_code}', ...args], opts);
  const i = r.stdout.lastIndexOf('\n');
  return { code: r.code, status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i), stderr: r.stderr };
}

/** Which backend each of `n` new client connections through the VIP reached. */
function reached(n: number): string[] {
  return Array.from({ length: n }, () => {
    const r = inNs(['curl', '-sS', '-m', '3', `http://${VIP}:${VIP_PORT}/`]);
    return r.code === 0 ? r.stdout.trim() : `error(${r.code}: ${r.stderr.trim()})`;
  });
}

function tally(names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
}

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

function runnerEvents(argv: readonly string[]): { child: ChildProcess; events: Array<Record<string, unknown>>; next(event: string, timeoutMs: number): Promise<Record<string, unknown>> } {
  const child = spawn('ip', ['netns', 'exec', NS, process.execPath, FLOOD_RUNNER, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  const events: Array<Record<string, unknown>> = [];
  const waiters: Array<{ event: string; resolve: (e: Record<string, unknown>) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const e = JSON.parse(line) as Record<string, unknown>;
    events.push(e);
    for (const w of waiters.filter((x) => x.event === e.event)) w.resolve(e);
  });
  return {
    child,
    events,
    next: (event, timeoutMs) => {
      const seen = events.find((e) => e.event === event);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${event} from the flood runner within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ event, resolve: (e) => (clearTimeout(t), resolve(e)) });
      });
    },
  };
}

describe('admin surface of a running vipd (T24, T29, T31)', { timeout: 240_000 }, () => {
  let dir = '';
  let socketPath = '';
  let configFile = '';
  let tokenFile = '';
  let vipd: ChildProcess | undefined;
  const backends = new Map<string, ChildProcess>();
  const token = 'integration-token-5f1d2c3b4a596877';

  before(async () => {
    requirePrerequisites(['ip', 'curl', 'setpriv']);
    dir = fs.mkdtempSync(path.join(tmpdir(), 'vipd-admin-surface-'));
    // Traversable by everyone, so an unprivileged caller meets the socket's own mode (0660), not a closed directory.
    fs.chmodSync(dir, 0o755);
    fs.mkdirSync(path.join(dir, 'run'), { mode: 0o755 });
    socketPath = path.join(dir, 'run', 'lb1.sock');
    tokenFile = path.join(dir, 'admin.token');
    fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    configFile = path.join(dir, 'vipd.yaml');
    fs.writeFileSync(
      configFile,
      stringify({
        node: { name: 'lb1' },
        admin: { listen: `127.0.0.1:${ADMIN_PORT}`, socket: socketPath, tokenFile },
        net: { interface: 'lo', manageAddresses: false },
        shutdown: { grace: '0s' },
        announce: { holdDown: '0s' },
        speaker: { driver: 'none' },
        vips: [{ name: 'api', address: VIP, listeners: [{ port: VIP_PORT, pool: 'web' }] }],
        pools: {
          web: {
            balance: 'round-robin',
            backends: BACKENDS.map((b) => `127.0.0.1:${b.port}`),
            check: { kind: 'http', path: '/health', interval: `${INTERVAL_MS}ms`, timeout: `${TIMEOUT_MS}ms`, rise: 2, fall: FALL },
          },
        },
      }),
      { mode: 0o644 },
    );
    sh('ip', 'netns', 'add', NS);
    sh('ip', '-n', NS, 'link', 'set', 'lo', 'up');
    sh('ip', '-n', NS, 'addr', 'add', `${VIP}/32`, 'dev', 'lo');
    for (const b of BACKENDS) {
      const child = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', BACKEND_SCRIPT, b.name, String(b.port)], { stdio: ['ignore', 'pipe', 'inherit'] });
      backends.set(b.name, child);
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`backend ${b.name} exited ${code}`)));
      });
    }
    // A low fd limit of vipd's own, for the scenario at the limit (the others never come near it).
    vipd = spawn('ip', ['netns', 'exec', NS, 'sh', '-c', `ulimit -n ${FD_LIMIT} && exec "$0" "$@"`, process.execPath, BIN, 'run', '--config', configFile], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    // Ready when a client reaches all three backends through the VIP.
    const until = Date.now() + 20_000;
    let seen: string[] = [];
    while (Date.now() < until) {
      seen = reached(6);
      if (BACKENDS.every((b) => seen.includes(b.name))) return;
      await new Promise((r) => setTimeout(r, 300));
    }
    throw new Error(`vipd did not serve all backends within 20 s; a client reached ${JSON.stringify(tally(seen))}`);
  });

  after(async () => {
    if (vipd && vipd.exitCode === null) {
      vipd.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1500));
      if (vipd.exitCode === null) vipd.kill('SIGKILL');
    }
    for (const b of backends.values()) b.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', NS]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('T24: mutations over plain TCP without the token are refused, GET on a mutation is 405, reads are open; the CLI mutates over the socket or with --token-file', () => {
    const body = JSON.stringify({ pool: 'web', backend: '127.0.0.1:7101' });
    const noToken = curl(['-X', 'POST', '-H', 'content-type: application/json', '-d', body, `http://127.0.0.1:${ADMIN_PORT}/backends/drain`]);
    assert.equal(noToken.status, 401, noToken.body);
    const drainNoToken = curl(['-X', 'POST', '-H', 'content-type: application/json', `http://127.0.0.1:${ADMIN_PORT}/drain`]);
    assert.equal(drainNoToken.status, 401, drainNoToken.body);
    const wrongToken = curl(['-X', 'POST', '-H', 'content-type: application/json', '-H', 'authorization: Bearer not-the-token-000000', `http://127.0.0.1:${ADMIN_PORT}/drain`]);
    assert.equal(wrongToken.status, 403, wrongToken.body);
    const getDrain = inNs(['curl', '-sS', '-i', '-m', '5', `http://127.0.0.1:${ADMIN_PORT}/drain`]);
    assert.match(getDrain.stdout, /^HTTP\/1\.1 405 /);
    assert.match(getDrain.stdout, /\r\nallow: POST\r\n/i);
    // Defect 1 of issue 9: this one GET used to end the daemon.
    const slashes = curl(['--path-as-is', `http://127.0.0.1:${ADMIN_PORT}//`]);
    assert.equal(slashes.status, 404, slashes.body);
    assert.equal(vipd!.exitCode, null, 'vipd still runs after GET //');
    assert.equal(curl([`http://127.0.0.1:${ADMIN_PORT}/status`]).status, 200);
    assert.equal(curl([`http://127.0.0.1:${ADMIN_PORT}/metrics`]).status, 200);
    const afterRefusals = tally(reached(30));
    assert.deepEqual(afterRefusals, { b1: 10, b2: 10, b3: 10 }, 'nothing was drained: a client still reaches every backend');

    // The allowed paths: the CLI over the socket, and over TCP with the token.
    const drained = inNs([process.execPath, BIN, 'drain-backend', 'web', '127.0.0.1:7103', '--config', configFile]);
    assert.equal(drained.code, 0, drained.stderr);
    const whileDrained = tally(reached(20));
    assert.equal(whileDrained.b3, undefined, `drained over the socket: ${JSON.stringify(whileDrained)}`);
    const undrained = inNs([process.execPath, BIN, 'undrain-backend', 'web', '127.0.0.1:7103', '--config', configFile, '--token-file', tokenFile]);
    assert.equal(undrained.code, 0, undrained.stderr);
    assert.ok(reached(6).includes('b3'), 'undrained over TCP with the token');

    const rootStatus = inNs([process.execPath, BIN, 'status', '--config', configFile]);
    assert.equal(rootStatus.code, 0, rootStatus.stderr);
    assert.equal(rootStatus.stderr, '', 'root reads status over the socket, no fallback');
    assert.match(rootStatus.stdout, /127\.0\.0\.1:7103/);

    const elsewhere = path.join(dir, 'elsewhere.yaml');
    fs.writeFileSync(elsewhere, fs.readFileSync(configFile, 'utf8').replace(socketPath, path.join(dir, 'run', 'none.sock')));
    const notRunning = inNs([process.execPath, BIN, 'drain', '--config', elsewhere]);
    assert.equal(notRunning.code, 1);
    assert.equal(notRunning.stderr.trim(), `vipd: no vipd answering on ${path.join(dir, 'run', 'none.sock')}`);
    console.log(`T24: GET // ${slashes.status} (vipd running); TCP mutation without token ${noToken.status}, wrong token ${wrongToken.status}, GET /drain 405 (Allow: POST); clients after the refusals ${JSON.stringify(afterRefusals)}; drain-backend over the socket took b3 out ${JSON.stringify(whileDrained)}`);
  });

  it('T31: foreign Origin 403, text/plain 415, foreign Host 421, a user outside the socket group gets EACCES; nothing changes; all counted', () => {
    const target = '127.0.0.1:7101';
    const body = JSON.stringify({ pool: 'web', backend: target });
    const auth = ['-H', `authorization: Bearer ${token}`];
    const url = `http://127.0.0.1:${ADMIN_PORT}/backends/drain`;
    const origin = curl(['-X', 'POST', ...auth, '-H', 'content-type: application/json', '-H', 'origin: http://evil.example', '-d', body, url]);
    assert.equal(origin.status, 403, origin.body);
    const textPlain = curl(['-X', 'POST', ...auth, '-H', 'content-type: text/plain', '-d', body, url]);
    assert.equal(textPlain.status, 415, textPlain.body);
    const textPlainSocket = curl(['--unix-socket', socketPath, '-X', 'POST', '-H', 'content-type: text/plain', '-d', body, 'http://localhost/backends/drain']);
    assert.equal(textPlainSocket.status, 415, textPlainSocket.body);
    const rebound = curl(['-X', 'POST', ...auth, '-H', 'content-type: application/json', '-H', `host: rebind.example:${ADMIN_PORT}`, '-d', body, url]);
    assert.equal(rebound.status, 421, rebound.body);

    // An unprivileged local user: the socket is 0660 root:root, so connect(2) itself is refused.
    const script = `require('http').request({ socketPath: ${JSON.stringify(socketPath)}, path: '/backends/drain', method: 'POST', headers: { 'content-type': 'application/json' } }, (r) => { console.log('status', r.statusCode); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(3); }).end(${JSON.stringify(body)});`;
    const nobody = inNs([process.execPath, '-e', script], { user: 'nobody' });
    assert.equal(nobody.code, 3, `${nobody.stdout} ${nobody.stderr}`);
    assert.equal(nobody.stdout.trim(), 'EACCES');
    const st = fs.statSync(socketPath);
    assert.equal(st.mode & 0o777, 0o660);
    // That user still reads status: the CLI falls back to the read-only TCP port and says so.
    const status = inNs([process.execPath, BIN, 'status', '--config', configFile, '--json'], { user: 'nobody' });
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stderr, new RegExp(`cannot open ${socketPath.replace(/[.]/g, '\\.')} \\(EACCES\\); asking the read-only TCP admin at http://127\\.0\\.0\\.1:${ADMIN_PORT}`));
    assert.equal((JSON.parse(status.stdout) as { node: string }).node, 'lb1');
    const nobodyDrain = inNs([process.execPath, BIN, 'drain', '--config', configFile], { user: 'nobody' });
    assert.equal(nobodyDrain.code, 1);
    assert.match(nobodyDrain.stderr, /cannot open .*: permission denied/);

    const clients = tally(reached(30));
    assert.deepEqual(clients, { b1: 10, b2: 10, b3: 10 }, `the backend the refused requests tried to drain (${target}) still gets its share`);
    const metrics = curl([`http://127.0.0.1:${ADMIN_PORT}/metrics`]).body;
    const counted = {
      origin: metricValue(metrics, 'vipd_admin_refused_total{reason="origin"}'),
      contentType: metricValue(metrics, 'vipd_admin_refused_total{reason="contentType"}'),
      host: metricValue(metrics, 'vipd_admin_refused_total{reason="host"}'),
      '421': metricValue(metrics, 'vipd_admin_requests_total{route="unknown",code="421"}'),
    };
    assert.ok(counted.origin >= 1 && counted.contentType >= 2 && counted.host >= 1 && counted['421'] >= 1, JSON.stringify(counted));
    console.log(
      `T31: foreign Origin ${origin.status}, text/plain ${textPlain.status} (TCP) / ${textPlainSocket.status} (socket), foreign Host ${rebound.status}, nobody on the socket ${nobody.stdout.trim()}, nobody's drain exit ${nobodyDrain.code}; clients afterwards ${JSON.stringify(clients)}; counted ${JSON.stringify(counted)}`,
    );
  });

  it(`T29: ${IDLE_CONNECTIONS} idle admin connections and ${FUZZ_CASES} fuzzed requests: vipd lives, /status answers, probes keep working (a failing backend leaves the pool within ${MARK_DOWN_BOUND_MS} ms)`, async () => {
    const pid = vipd!.pid!;
    const baselineFds = openFds(pid);
    let maxFds = baselineFds;
    const sampler = setInterval(() => {
      try {
        maxFds = Math.max(maxFds, openFds(pid));
      } catch {
        // vipd gone: asserted below
      }
    }, 50);
    try {
      const flood = runnerEvents(['idle', String(ADMIN_PORT), String(IDLE_CONNECTIONS)]);
      await flood.next('idle-opened', 30_000);

      // While the idle flood holds TCP's share of the cap, b2 starts failing its checks.
      const t0 = performance.now();
      backends.get('b2')!.kill('SIGUSR1');
      let lastB2 = t0;
      let sinceB2 = 0;
      const socketStatus: number[] = [];
      while (sinceB2 < 12 && performance.now() - t0 < 15_000) {
        const [name] = reached(1);
        if (name === 'b2') {
          lastB2 = performance.now();
          sinceB2 = 0;
        } else {
          sinceB2++;
        }
        if (socketStatus.length < 5) socketStatus.push(curl(['--unix-socket', socketPath, 'http://localhost/status']).status);
      }
      const markDownMs = lastB2 - t0;
      const afterDown = tally(reached(30));
      const idleDone = await flood.next('idle-done', 70_000);

      const fuzz = runnerEvents(['fuzz', String(ADMIN_PORT), socketPath, String(FUZZ_SEED), String(FUZZ_CASES), '24', String(FUZZ_DEADLINE_MS)]);
      const fuzzDone = await fuzz.next('fuzz-done', 120_000);
      clearInterval(sampler);

      assert.equal(vipd!.exitCode, null, 'vipd never exited');
      assert.equal(curl([`http://127.0.0.1:${ADMIN_PORT}/status`]).status, 200, '/status over TCP after everything');
      assert.equal(curl(['--unix-socket', socketPath, 'http://localhost/status']).status, 200, '/status over the socket after everything');
      console.log(
        `T29: ${IDLE_CONNECTIONS} idle TCP connections: ${String(idleDone.connected)} connected, ${String(idleDone.closedAtOnce)} of them closed within 1 s (over the cap), the others held until vipd closed the last after ${String(idleDone.lastClosedMs)} ms (bound ${IDLE_CLOSED_BOUND_MS} ms); vipd fds ${baselineFds} -> max ${maxFds} (admin cap ${ADMIN_MAX_CONNECTIONS}, TCP share ${ADMIN_MAX_CONNECTIONS - SOCKET_RESERVED}); /status over the socket during the flood ${JSON.stringify(socketStatus)}`,
      );
      console.log(`T29: b2 failing its checks during the flood: last client answer from b2 ${Math.round(markDownMs)} ms after (bound ${MARK_DOWN_BOUND_MS} ms); next 30 clients ${JSON.stringify(afterDown)}`);
      console.log(
        `T29: fuzz ${FUZZ_CASES} cases, seed 0x${FUZZ_SEED.toString(16)}, ${String(fuzzDone.ms)} ms: ${JSON.stringify(fuzzDone.codes)}; /status checks ${String(fuzzDone.statusChecks)}, failed ${(fuzzDone.statusFailures as string[]).length}`,
      );

      assert.equal(idleDone.result, 'closed', `every idle connection was closed by vipd: ${JSON.stringify(idleDone)}`);
      assert.equal(idleDone.stillOpen, 0);
      // vipd's header timeout (5 s) and its 1 s sweep, after about a second of opening them, and 1 s of slack.
      assert.ok((idleDone.lastClosedMs as number) <= IDLE_CLOSED_BOUND_MS, `the last idle connection closed after ${String(idleDone.lastClosedMs)} ms (bound ${IDLE_CLOSED_BOUND_MS} ms)`);
      // What vipd holds, seen from /proc: never more than its admin cap over its own baseline (+ a few for probes and client sessions).
      assert.ok(maxFds <= baselineFds + ADMIN_MAX_CONNECTIONS + 16, `admin connections stay inside their budget: ${baselineFds} -> ${maxFds}`);
      assert.deepEqual(
        socketStatus.filter((s) => s !== 200),
        [],
        'the socket answers while TCP is flooded',
      );
      assert.ok(markDownMs <= MARK_DOWN_BOUND_MS, `b2 still reached ${Math.round(markDownMs)} ms after it failed (bound ${MARK_DOWN_BOUND_MS} ms)`);
      assert.equal(afterDown.b2, undefined, 'no client reaches b2 once it is down');
      assert.equal((afterDown.b1 ?? 0) + (afterDown.b3 ?? 0), 30, `every client served: ${JSON.stringify(afterDown)}`);
      assert.deepEqual(fuzzDone.statusFailures, [], '/status answered after every batch');
      assert.deepEqual(fuzzDone.failures, [], 'every fuzz case got a 4xx or was cut');
      const clients = tally(reached(20));
      assert.equal(clients.b2, undefined);
      assert.equal((clients.b1 ?? 0) + (clients.b3 ?? 0), 20, `no fuzz case changed the pool: ${JSON.stringify(clients)}`);
    } finally {
      clearInterval(sampler);
    }
  });

  it(`T29 at the fd limit (${FD_LIMIT}): client sessions at their cap plus ${IDLE_CONNECTIONS} idle admin connections leave the probes their descriptors`, async () => {
    const pid = vipd!.pid!;
    let maxFds = openFds(pid);
    const sampler = setInterval(() => {
      try {
        maxFds = Math.max(maxFds, openFds(pid));
      } catch {
        // vipd gone: asserted below
      }
    }, 50);
    const holder = runnerEvents(['hold', VIP, String(VIP_PORT), '120']);
    try {
      const held = await holder.next('held', 60_000);
      const fdsWithSessions = openFds(pid);
      const flood = runnerEvents(['idle', String(ADMIN_PORT), String(IDLE_CONNECTIONS)]);
      await flood.next('idle-opened', 30_000);
      // b3 starts failing its checks while every session and every admin slot is taken: only a probe that
      // still gets a descriptor can tell (and b1's probes must keep passing, or b1 goes down too).
      const t0 = performance.now();
      backends.get('b3')!.kill('SIGUSR1');
      await new Promise((r) => setTimeout(r, MARK_DOWN_BOUND_MS + 500));
      const flipWindowMs = performance.now() - t0;
      const idleDone = await flood.next('idle-done', 70_000);
      clearInterval(sampler);
      holder.child.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 500));
      const clients = tally(reached(20));
      const metrics = curl([`http://127.0.0.1:${ADMIN_PORT}/metrics`]).body;
      const fdRefusals = metricValue(metrics, 'vipd_proxy_listener_refused_total{listener="api:6443",reason="fdLimit"}');
      const capacity = metricValue(metrics, 'vipd_proxy_fd_session_capacity');
      console.log(
        `T29 at the fd limit ${FD_LIMIT}: session capacity ${capacity}; held ${String(held.served)} client sessions (${String(held.refused)} refused, ${fdRefusals} counted fdLimit), vipd fds ${fdsWithSessions}; + ${IDLE_CONNECTIONS} idle admin connections (${String(idleDone.closedAtOnce)} closed at once): max ${maxFds} fds of ${FD_LIMIT}; b3 failing its checks for ${Math.round(flipWindowMs)} ms while sessions and admin slots were full; clients afterwards ${JSON.stringify(clients)}`,
      );
      assert.equal(vipd!.exitCode, null, 'vipd never exited');
      assert.equal(held.served, capacity, 'client sessions were admitted up to the fd budget');
      assert.ok(maxFds <= FD_LIMIT - 32, `descriptors to spare at the worst moment: ${maxFds} of ${FD_LIMIT}`);
      assert.equal(clients.b3, undefined, `b3 was marked down by probes that ran during the flood: ${JSON.stringify(clients)}`);
      assert.equal(clients.b1, 20, `b1's probes kept passing, so it still serves every client: ${JSON.stringify(clients)}`);
    } finally {
      clearInterval(sampler);
      holder.child.kill('SIGKILL');
    }
  });
});
