import { connect } from 'node:net';
import { cliArg, cliTarget, httpGet, printReport } from './client-cli';

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
  /** The first 100 failed requests, with when they started and ended (Date.now()). */
  readonly failures: readonly TrafficFailure[];
}

export interface TrafficFailure {
  readonly startWall: number;
  readonly endWall: number;
  readonly error: string;
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

interface RequestResult {
  readonly ok: boolean;
  readonly error?: string;
  readonly ms: number;
  readonly startWall: number;
}

function oneRequest(o: TrafficOptions): Promise<RequestResult> {
  const started = performance.now();
  const startWall = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    let response = '';
    const socket = connect({ host: o.host, port: o.port });
    const finish = (ok: boolean, error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, ms: performance.now() - started, startWall, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), o.requestTimeoutMs);
    socket.setEncoding('latin1');
    socket.on('connect', () => socket.write(httpGet(o.path, o.host, true)));
    socket.on('data', (chunk: string) => {
      response += chunk;
    });
    socket.on('end', () => finish(/^HTTP\/1\.[01] 200 /.test(response), response ? undefined : 'empty response'));
    socket.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
  });
}

export async function runTraffic(o: TrafficOptions): Promise<TrafficReport> {
  const pending: Array<Promise<RequestResult>> = [];
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
  const failures = results
    .filter((r) => !r.ok)
    .slice(0, 100)
    .map((r) => ({ startWall: r.startWall, endWall: Math.round(r.startWall + r.ms), error: r.error ?? 'bad status' }));
  return { attempted: results.length, ok, failed: results.length - ok, errors, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: pct(1), failures };
}

/**
 * Splits failures into those in flight while the ToR's ECMP set changed (within [fromWall, toWall], the
 * window in which the change is known to have happened) and the rest. Hash-threshold ECMP re-splits the
 * hash space when a next hop leaves, so a connection that is open at that instant can land on a balancer
 * that has no socket for it and be reset: that is an established flow cut by the router (DESIGN.md: closed
 * by RST, never black-holed), not a new connection refused. Every other failure is vipd's.
 */
export function splitAtEcmpChange(report: TrafficReport, fromWall: number, toWall: number, slackMs = 20): { inFlight: TrafficFailure[]; other: TrafficFailure[] } {
  const inFlight: TrafficFailure[] = [];
  const other: TrafficFailure[] = [];
  for (const f of report.failures) (f.startWall <= toWall + slackMs && f.endWall >= fromWall - slackMs ? inFlight : other).push(f);
  return { inFlight, other };
}

/** Asserts the T19 rule on a traffic report around one ECMP change, and describes the result. */
export function ecmpChangeVerdict(report: TrafficReport, fromWall: number, toWall: number): { ok: boolean; text: string } {
  const { inFlight, other } = splitAtEcmpChange(report, fromWall, toWall);
  const notReset = inFlight.filter((f) => f.error !== 'ECONNRESET' && f.error !== 'empty response');
  const text =
    `${report.failed} failed of ${report.attempted}: ${other.length} new connections failed (bound 0); ` +
    `${inFlight.length} in flight at the ECMP change cut by the ToR's rehash, ${notReset.length} of them not by RST/FIN (bound 0)`;
  return { ok: other.length === 0 && notReset.length === 0 && report.failures.length === report.failed, text };
}

if (require.main === module) {
  printReport(
    runTraffic({
      ...cliTarget('198.19.0.10:2379'),
      ratePerSec: Number(cliArg('rate', '100')),
      durationMs: Number(cliArg('duration', '5000')),
      path: cliArg('path', '/health'),
      requestTimeoutMs: Number(cliArg('timeout', '3000')),
    }),
  );
}
