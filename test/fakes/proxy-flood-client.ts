import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

/**
 * A client population in its own process, so that what it measures is the proxy's reaction and not
 * the test process's event loop juggling both ends. Driven by JSON lines on stdin, one JSON line of
 * answer per command on stdout. Served connections stay open until closed or until stdin ends.
 */
export type FloodCommand =
  | { readonly op: 'flood'; readonly port: number; readonly sources: readonly string[]; readonly perSource: number; readonly batch: number }
  | { readonly op: 'echo' }
  | { readonly op: 'close'; readonly count: number }
  /** Opens `count` connections that never send; answers once all are connected. */
  | { readonly op: 'silent'; readonly port: number; readonly count: number; readonly batch: number }
  /** Waits (up to maxWaitMs) until every silent connection has been closed by the peer. */
  | { readonly op: 'silentReport'; readonly maxWaitMs: number }
  /** Echo round trips at `perSecond` for `durationMs`, each on a new connection. */
  | { readonly op: 'legit'; readonly port: number; readonly perSecond: number; readonly durationMs: number };

export interface ProbeResult {
  readonly source: string;
  /** served: the one byte sent came back; refused: reset or closed without it. */
  readonly outcome: 'served' | 'refused' | 'hung';
  /** From the client's 'connect' to the echo or the close. */
  readonly ms: number;
}

export type FloodAnswer =
  | { readonly op: 'flood'; readonly probes: readonly ProbeResult[] }
  | { readonly op: 'echo'; readonly ok: number; readonly failed: number }
  | { readonly op: 'close'; readonly open: number }
  | { readonly op: 'silent'; readonly connected: number; readonly failed: number }
  /** closedAfterMs: from 'connect' to the close, per connection; still open ones are left out. */
  | { readonly op: 'silentReport'; readonly closedAfterMs: readonly number[]; readonly stillOpen: number; readonly reasons: Readonly<Record<string, number>> }
  | { readonly op: 'legit'; readonly ok: number; readonly failed: number; readonly errors: Readonly<Record<string, number>>; readonly p99Ms: number };

const HUNG_AFTER_MS = 5_000;

interface Served {
  readonly socket: Socket;
  closed: boolean;
}

const served: Served[] = [];

function probe(port: number, source: string): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: source });
    let connectedAt = performance.now();
    let settled = false;
    const settle = (outcome: ProbeResult['outcome']): void => {
      if (settled) return;
      settled = true;
      clearTimeout(hung);
      if (outcome === 'served') {
        const entry: Served = { socket, closed: false };
        socket.once('close', () => (entry.closed = true));
        served.push(entry);
      } else {
        socket.destroy();
      }
      resolve({ source, outcome, ms: performance.now() - connectedAt });
    };
    const hung = setTimeout(() => settle('hung'), HUNG_AFTER_MS);
    socket.once('connect', () => {
      connectedAt = performance.now();
      socket.write('x');
    });
    socket.once('data', () => settle('served'));
    socket.on('error', () => {});
    socket.once('close', () => settle('refused'));
  });
}

async function flood(command: Extract<FloodCommand, { op: 'flood' }>): Promise<FloodAnswer> {
  const order: string[] = [];
  for (let i = 0; i < command.perSource; i++) order.push(...command.sources);
  const probes: ProbeResult[] = [];
  for (let i = 0; i < order.length; i += command.batch) {
    probes.push(...(await Promise.all(order.slice(i, i + command.batch).map((source) => probe(command.port, source)))));
  }
  return { op: 'flood', probes };
}

/** Every open served connection sends "again" and must get it back. */
async function echo(): Promise<FloodAnswer> {
  const results = await Promise.all(
    served
      .filter((s) => !s.closed)
      .map(
        (s) =>
          new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), HUNG_AFTER_MS);
            s.socket.once('data', (chunk: Buffer) => {
              clearTimeout(timer);
              resolve(chunk.toString() === 'again');
            });
            s.socket.once('close', () => resolve(false));
            s.socket.write('again');
          }),
      ),
  );
  return { op: 'echo', ok: results.filter(Boolean).length, failed: results.filter((ok) => !ok).length };
}

function closeSome(count: number): FloodAnswer {
  let closed = 0;
  for (const s of served) {
    if (closed === count) break;
    if (s.closed) continue;
    s.socket.destroy();
    s.closed = true;
    closed++;
  }
  return { op: 'close', open: served.filter((s) => !s.closed).length };
}

interface Silent {
  readonly socket: Socket;
  connectedAt: number;
  closedAfterMs: number | undefined;
  reason: string;
}

const silent: Silent[] = [];

function openSilent(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const entry: Silent = { socket, connectedAt: 0, closedAfterMs: undefined, reason: 'close' };
    socket.once('connect', () => {
      entry.connectedAt = performance.now();
      silent.push(entry);
      resolve(true);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (entry.reason = err.code ?? err.message));
    socket.once('end', () => (entry.reason = 'end'));
    socket.once('close', () => {
      if (entry.connectedAt === 0) resolve(false);
      else entry.closedAfterMs = performance.now() - entry.connectedAt;
    });
    socket.resume();
  });
}

async function openSilentMany(command: Extract<FloodCommand, { op: 'silent' }>): Promise<FloodAnswer> {
  let connected = 0;
  let failed = 0;
  for (let i = 0; i < command.count; i += command.batch) {
    const batch = Math.min(command.batch, command.count - i);
    for (const ok of await Promise.all(Array.from({ length: batch }, () => openSilent(command.port)))) {
      if (ok) connected++;
      else failed++;
    }
  }
  return { op: 'silent', connected, failed };
}

async function silentReport(maxWaitMs: number): Promise<FloodAnswer> {
  const started = performance.now();
  while (silent.some((s) => s.closedAfterMs === undefined) && performance.now() - started < maxWaitMs) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const reasons: Record<string, number> = {};
  for (const s of silent) if (s.closedAfterMs !== undefined) reasons[s.reason] = (reasons[s.reason] ?? 0) + 1;
  return {
    op: 'silentReport',
    closedAfterMs: silent.filter((s) => s.closedAfterMs !== undefined).map((s) => s.closedAfterMs!),
    stillOpen: silent.filter((s) => s.closedAfterMs === undefined).length,
    reasons,
  };
}

/** One request/response on a new connection: send, half-close, read the echo to EOF. */
function roundTrip(port: number, n: number): Promise<{ ok: boolean; error?: string; ms: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const payload = `request ${n}\n`;
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let got = '';
    let settled = false;
    const settle = (ok: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, ...(error === undefined ? {} : { error }), ms: performance.now() - started });
    };
    const timer = setTimeout(() => settle(false, 'timeout'), HUNG_AFTER_MS);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (got += chunk));
    socket.once('end', () => settle(got === payload, got === payload ? undefined : 'mismatch'));
    socket.on('error', (err: NodeJS.ErrnoException) => settle(false, err.code ?? err.message));
    socket.end(payload);
  });
}

async function legit(command: Extract<FloodCommand, { op: 'legit' }>): Promise<FloodAnswer> {
  const total = Math.round((command.perSecond * command.durationMs) / 1000);
  const started = performance.now();
  const pending: Array<Promise<{ ok: boolean; error?: string; ms: number }>> = [];
  for (let n = 0; n < total; n++) {
    const due = started + (n * 1000) / command.perSecond;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    pending.push(roundTrip(command.port, n));
  }
  const results = await Promise.all(pending);
  const errors: Record<string, number> = {};
  for (const r of results) if (r.error !== undefined) errors[r.error] = (errors[r.error] ?? 0) + 1;
  const times = results.map((r) => r.ms).sort((x, y) => x - y);
  return {
    op: 'legit',
    ok: results.filter((r) => r.ok).length,
    failed: results.filter((r) => !r.ok).length,
    errors,
    p99Ms: times[Math.floor(times.length * 0.99)] ?? 0,
  };
}

async function handle(command: FloodCommand): Promise<FloodAnswer> {
  switch (command.op) {
    case 'flood':
      return flood(command);
    case 'echo':
      return echo();
    case 'close':
      return closeSome(command.count);
    case 'silent':
      return openSilentMany(command);
    case 'silentReport':
      return silentReport(command.maxWaitMs);
    case 'legit':
      return legit(command);
  }
}

/** The test's side: spawns this file and sends it commands one at a time. */
export class FloodClient {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly answers: string[] = [];
  private waiting: ((line: string) => void) | undefined;

  constructor() {
    this.child = spawn(process.execPath, [__filename, '--serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const waiting = this.waiting;
      this.waiting = undefined;
      if (waiting !== undefined) waiting(line);
      else this.answers.push(line);
    });
  }

  async send<C extends FloodCommand>(command: C): Promise<Extract<FloodAnswer, { op: C['op'] }>> {
    this.child.stdin.write(`${JSON.stringify(command)}\n`);
    const queued = this.answers.shift();
    const line = queued ?? (await new Promise<string>((resolve) => (this.waiting = resolve)));
    return JSON.parse(line) as Extract<FloodAnswer, { op: C['op'] }>;
  }

  /** Ends stdin: the child closes every connection and exits. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    await exited;
  }
}

if (require.main === module && process.argv.includes('--serve')) {
  let chain = Promise.resolve();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    chain = chain.then(async () => {
      process.stdout.write(`${JSON.stringify(await handle(JSON.parse(line) as FloodCommand))}\n`);
    });
  });
  lines.on('close', () => {
    void chain.then(() => {
      for (const s of served) s.socket.destroy();
      for (const s of silent) s.socket.destroy();
      process.exit(0);
    });
  });
}
