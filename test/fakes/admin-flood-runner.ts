import { fuzzGenerator, verdict } from './admin-fuzz-cases';
import { openRaw, rawExchange, type RawTarget } from './admin-raw-client';

/**
 * Runs inside a network namespace (the admin TCP port is on that namespace's loopback) and prints
 * one JSON line per result:
 *
 *   idle <port> <count>         opens <count> TCP connections that never send a byte, as fast as it
 *                               can, and reports how many the server closed at once (refused over its
 *                               cap), how many it held, the most held at one time, and when it closed
 *                               the last one (its header timeout)
 *   hold <host> <port> <count>  opens <count> client connections through the proxy, one HTTP request on
 *                               each, and keeps the served ones open until it is killed
 *   fuzz <port> <socket> <seed> <cases> <concurrency> <deadlineMs>
 *                               the seeded fuzz of test/fakes/admin-fuzz-cases.ts over both transports,
 *                               with GET /status over both after every <concurrency> cases
 */
const [mode, ...args] = process.argv.slice(2);

function emit(event: string, fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ event, at: Date.now(), ...fields })}\n`);
}

async function idle(port: number, count: number): Promise<void> {
  const started = Date.now();
  let connected = 0;
  let open = 0;
  let closed = 0;
  let closedAtOnce = 0;
  let lastClosedMs = 0;
  /** Closed this soon after connecting: refused by the server's cap (a held one lives until the header timeout). */
  const REFUSED_WITHIN_MS = 1000;
  const all: Array<Promise<void>> = [];
  for (let i = 0; i < count; i++) {
    all.push(
      new Promise<void>((resolve) => {
        const socket = openRaw({ port });
        let connectedAt = 0;
        socket.on('error', () => {});
        // Read (and drop) what the server says, such as its 408, so that its FIN is seen.
        socket.resume();
        socket.once('connect', () => {
          connectedAt = Date.now();
          connected++;
          open++;
        });
        socket.once('close', () => {
          const now = Date.now();
          closed++;
          if (connectedAt > 0) {
            open--;
            if (now - connectedAt < REFUSED_WITHIN_MS) closedAtOnce++;
          }
          lastClosedMs = now - started;
          resolve();
        });
      }),
    );
    // 1,000 in about a second: a burst all at once only measures the kernel's accept queue (dropped SYNs retried for 30 s).
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 50));
  }
  emit('idle-opened', { count });
  // A SYN dropped by a full accept queue is retried by the kernel for up to ~30 s before the connection even exists.
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 60_000));
  const result = await Promise.race([Promise.all(all).then(() => 'closed' as const), timeout]);
  emit('idle-done', { count, connected, closed, closedAtOnce, stillOpen: open, neverConnected: count - connected - (closed - connected > 0 ? closed - connected : 0), lastClosedMs, result });
  process.exit(0);
}

async function fuzz(port: number, socketPath: string, seed: number, cases: number, concurrency: number, deadlineMs: number): Promise<void> {
  const next = fuzzGenerator(seed, port, socketPath);
  const codes: Record<string, number> = {};
  const failures: string[] = [];
  const statusFailures: string[] = [];
  let statusChecks = 0;
  let claimed = 0;
  let completed = 0;
  const checkStatus = async () => {
    for (const t of [{ port }, { path: socketPath }] as RawTarget[]) {
      const host = 'port' in t ? `127.0.0.1:${port}` : 'localhost';
      const s = await rawExchange(t, [`GET /status HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`], { timeoutMs: 3000 });
      statusChecks++;
      if (s.status !== 200) statusFailures.push(`after ${completed} cases over ${'port' in t ? 'TCP' : 'the socket'}: ${s.status ?? s.ending}`);
    }
  };
  const started = Date.now();
  const worker = async () => {
    while (claimed < cases) {
      const index = claimed++;
      const c = next();
      const a = await rawExchange(c.target, c.chunks, { gapMs: c.gapMs, endAfterWrite: c.endAfterWrite, timeoutMs: deadlineMs });
      const key = a.status !== undefined ? String(a.status) : `cut(${a.ending})`;
      codes[key] = (codes[key] ?? 0) + 1;
      const bad = verdict(c, a, deadlineMs);
      if (bad) failures.push(`case ${index} [${c.label}]: ${bad}`);
      completed++;
      if (completed % concurrency === 0) await checkStatus();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await checkStatus();
  emit('fuzz-done', { cases, seed, ms: Date.now() - started, codes, failures: failures.slice(0, 20), failureCount: failures.length, statusChecks, statusFailures: statusFailures.slice(0, 20) });
  process.exit(0);
}

/** Opens `count` client connections through a proxy, one HTTP request each, and keeps the served ones open until killed. */
async function hold(host: string, port: number, count: number): Promise<void> {
  let served = 0;
  let refused = 0;
  const sockets = [];
  for (let i = 0; i < count; i++) {
    const socket = openRaw({ host, port });
    sockets.push(socket);
    const outcome = await new Promise<'served' | 'refused'>((resolve) => {
      socket.on('error', () => resolve('refused'));
      socket.once('close', () => resolve('refused'));
      socket.once('data', () => resolve('served'));
      socket.once('connect', () => socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      setTimeout(() => resolve('refused'), 3000);
    });
    if (outcome === 'served') served++;
    else refused++;
  }
  emit('held', { count, served, refused });
}

if (mode === 'idle') void idle(Number(args[0]), Number(args[1]));
else if (mode === 'hold') void hold(args[0]!, Number(args[1]), Number(args[2]));
else if (mode === 'fuzz') void fuzz(Number(args[0]), args[1]!, Number(args[2]), Number(args[3]), Number(args[4]), Number(args[5]));
else {
  process.stderr.write('usage: admin-flood-runner idle <port> <count> | hold <host> <port> <count> | fuzz <port> <socket> <seed> <cases> <concurrency> <deadlineMs>\n');
  process.exit(2);
}
