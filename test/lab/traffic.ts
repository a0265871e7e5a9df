import { connect } from 'node:net';

/**
 * A real client for lab tests: opens a NEW TCP connection per request at a fixed rate, sends an HTTP
 * GET (etcd answers /health), and counts what a user would see. Run inside the client namespace:
 *   node dist/test/lab/traffic.js --target 198.19.0.10:2379 --rate 100 --duration 5000
 * It prints one JSON line (TrafficReport). Bounded in count and time; it stops by itself.
 */
export interface TrafficReport {
  readonly attempted: number;
  readonly ok: number;
  readonly failed: number;
  readonly errors: Record<string, number>;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface TrafficOptions {
  readonly host: string;
  readonly port: number;
  readonly ratePerSec: number;
  readonly durationMs: number;
  readonly path: string;
  /** A request taking longer than this counts as failed. */
  readonly requestTimeoutMs: number;
}

function oneRequest(o: TrafficOptions): Promise<{ ok: boolean; error?: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    let response = '';
    const socket = connect({ host: o.host, port: o.port });
    const finish = (ok: boolean, error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, ms: performance.now() - started, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), o.requestTimeoutMs);
    socket.setEncoding('latin1');
    socket.on('connect', () => socket.write(`GET ${o.path} HTTP/1.1\r\nHost: ${o.host}\r\nConnection: close\r\n\r\n`));
    socket.on('data', (chunk: string) => {
      response += chunk;
    });
    socket.on('end', () => finish(/^HTTP\/1\.[01] 200 /.test(response), response ? undefined : 'empty response'));
    socket.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
  });
}

export async function runTraffic(o: TrafficOptions): Promise<TrafficReport> {
  const pending: Array<Promise<{ ok: boolean; error?: string; ms: number }>> = [];
  const gapMs = 1000 / o.ratePerSec;
  const start = performance.now();
  for (let i = 0; ; i++) {
    const due = start + i * gapMs;
    if (due - start >= o.durationMs) break;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(oneRequest(o));
  }
  const results = await Promise.all(pending);
  const errors: Record<string, number> = {};
  for (const r of results) if (!r.ok) errors[r.error ?? 'bad status'] = (errors[r.error ?? 'bad status'] ?? 0) + 1;
  const times = results.map((r) => r.ms).sort((a, b) => a - b);
  const pct = (p: number) => Math.round((times[Math.min(times.length - 1, Math.floor(p * times.length))] ?? 0) * 10) / 10;
  const ok = results.filter((r) => r.ok).length;
  return { attempted: results.length, ok, failed: results.length - ok, errors, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: pct(1) };
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

if (require.main === module) {
  const target = arg('target', '198.19.0.10:2379');
  const colon = target.lastIndexOf(':');
  runTraffic({
    host: target.slice(0, colon).replace(/^\[|\]$/g, ''),
    port: Number(target.slice(colon + 1)),
    ratePerSec: Number(arg('rate', '100')),
    durationMs: Number(arg('duration', '5000')),
    path: arg('path', '/health'),
    requestTimeoutMs: Number(arg('timeout', '3000')),
  }).then((report) => process.stdout.write(JSON.stringify(report) + '\n'));
}
