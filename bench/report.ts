import type { BlockResult } from './measure';
import { PATH_LABELS, type PathName } from './paths';
import { median } from './util';

/**
 * Turns the blocks of one table into a markdown table: per figure and path, the median over rounds,
 * its ratio to HAProxy, and where the issue set a target for that path and figure, the target and
 * whether the median ratio meets it (pass/miss). Targets are printed, never asserted.
 */

/** A target as a ratio of the path's median to HAProxy's in the same table. */
export interface Target {
  readonly op: '≥' | '≤';
  readonly ratio: number;
}

/** Figure name (FIGURES[].name) to target, per path. */
export type Targets = Partial<Record<PathName, Readonly<Record<string, Target>>>>;

export interface TableSpec {
  readonly title: string;
  readonly paths: readonly PathName[];
  /** Column headers per path (e.g. "HAProxy nbthread 2"). */
  readonly labels: Partial<Record<PathName, string>>;
  /** A path that could not be measured, with the reason; printed in place of its figures. */
  readonly unavailable: Partial<Record<PathName, string>>;
  /** Results by path: one BlockResult per round. */
  readonly results: Partial<Record<PathName, BlockResult[]>>;
  readonly targets?: Targets;
  /** Lines printed under the table (what the block is, how to read it). */
  readonly notes?: readonly string[];
}

type Direction = 'higher' | 'lower' | 'info';

interface Figure {
  readonly name: string;
  readonly pick: (b: BlockResult) => number | undefined;
  readonly format: (v: number) => string;
  readonly direction: Direction;
}

const int = (v: number) => Math.round(v).toLocaleString('en-US');
const fixed1 = (v: number) => v.toFixed(1);
const pct = (v: number) => `${v.toFixed(0)}%`;
const twShare = (b: BlockResult, n: (t: NonNullable<BlockResult['timeWait']>) => number) =>
  b.timeWait && b.timeWait.connections > 0 ? (100 * n(b.timeWait)) / b.timeWait.connections : undefined;

export const KEEP_ALIVE = '(a) keep-alive req/s';
export const NEW_CONN = '(b) new connections/s';
export const BULK = '(c) bulk download MiB/s';
export const P99 = '(d) p99 latency µs';

export const FIGURES: readonly Figure[] = [
  { name: KEEP_ALIVE, pick: (b) => b.keepAlive?.rate, format: int, direction: 'higher' },
  { name: '  proxy CPU % in (a)', pick: (b) => b.keepAlive?.cpuPercent, format: pct, direction: 'info' },
  { name: '  proxy CPU µs per request', pick: (b) => b.keepAlive?.cpuUsPerOp, format: fixed1, direction: 'lower' },
  { name: '  softirq CPU % in (a), whole machine', pick: (b) => b.keepAlive?.softirqPercent, format: pct, direction: 'info' },
  { name: '  softirq CPU % on core 0 (the proxy core) in (a)', pick: (b) => b.keepAlive?.softirqPerCore?.[0], format: pct, direction: 'info' },
  { name: NEW_CONN, pick: (b) => b.newConn?.rate, format: int, direction: 'higher' },
  { name: '  proxy CPU % in (b)', pick: (b) => b.newConn?.cpuPercent, format: pct, direction: 'info' },
  { name: '  proxy CPU µs per connection', pick: (b) => b.newConn?.cpuUsPerOp, format: fixed1, direction: 'lower' },
  { name: '  softirq CPU % in (b), whole machine', pick: (b) => b.newConn?.softirqPercent, format: pct, direction: 'info' },
  { name: '  softirq CPU % on core 0 (the proxy core) in (b)', pick: (b) => b.newConn?.softirqPerCore?.[0], format: pct, direction: 'info' },
  { name: '  TIME_WAIT on the client after (b), % of conns', pick: (b) => twShare(b, (t) => t.client), format: pct, direction: 'info' },
  { name: '  TIME_WAIT on the balancer (client leg), %', pick: (b) => twShare(b, (t) => t.balancerClientLeg), format: pct, direction: 'info' },
  { name: '  TIME_WAIT on the balancer (upstream leg), %', pick: (b) => twShare(b, (t) => t.balancerUpstreamLeg), format: pct, direction: 'info' },
  { name: '  TIME_WAIT on the backend, %', pick: (b) => twShare(b, (t) => t.backend), format: pct, direction: 'info' },
  { name: BULK, pick: (b) => (b.bulkBps === undefined ? undefined : b.bulkBps / 2 ** 20), format: int, direction: 'higher' },
  { name: '  proxy CPU % in (c)', pick: (b) => b.bulkCpuPercent, format: pct, direction: 'info' },
  { name: '  softirq CPU % in (c), whole machine', pick: (b) => b.bulkSoftirqPercent, format: pct, direction: 'info' },
  { name: '(d) p50 latency µs', pick: (b) => b.latency?.p50Us, format: int, direction: 'lower' },
  { name: P99, pick: (b) => b.latency?.p99Us, format: int, direction: 'lower' },
  { name: '  achieved rate in (d), req/s', pick: (b) => b.latency?.rate, format: int, direction: 'info' },
  { name: '(e) RSS MiB per 10k idle conns', pick: (b) => b.idle?.mibPer10k, format: fixed1, direction: 'lower' },
  { name: 'other processes on the machine, CPU %', pick: (b) => b.interference?.foreignPercent, format: pct, direction: 'info' },
  { name: 'host steal (CPU the hypervisor took), %', pick: (b) => b.interference?.stealPercent, format: pct, direction: 'info' },
];

export function medianOf(blocks: readonly BlockResult[] | undefined, pick: (b: BlockResult) => number | undefined): number | undefined {
  const values = (blocks ?? []).map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
  return values.length === 0 ? undefined : median(values);
}

export function renderTable(spec: TableSpec): string {
  const paths = spec.paths;
  const header = ['figure', ...paths.map((p) => spec.labels[p] ?? PATH_LABELS[p])];
  const rows: string[][] = [];
  for (const fig of FIGURES) {
    const base = spec.results.haproxy && !spec.unavailable.haproxy ? medianOf(spec.results.haproxy, fig.pick) : undefined;
    const cells = paths.map((p) => {
      if (spec.unavailable[p]) return 'n/a';
      const v = medianOf(spec.results[p], fig.pick);
      if (v === undefined) return '—';
      const hasRatio = base !== undefined && base !== 0 && p !== 'haproxy' && fig.direction !== 'info';
      const ratio = hasRatio ? v / base : undefined;
      const target = spec.targets?.[p]?.[fig.name];
      let note = ratio === undefined ? '' : `${ratio.toFixed(2)}×`;
      if (target && ratio !== undefined) {
        const met = target.op === '≥' ? ratio >= target.ratio : ratio <= target.ratio;
        note += `; target ${target.op} ${target.ratio}×: ${met ? 'pass' : 'MISS'}`;
      }
      return `${fig.format(v)}${note ? ` (${note})` : ''}`;
    });
    // A figure nobody measured in this table (e.g. idle memory in the workers table) is left out.
    if (cells.every((c) => c === '—' || c === 'n/a')) continue;
    rows.push([fig.name, ...cells]);
  }
  const lines = [
    `### ${spec.title}`,
    '',
    `| ${header.join(' | ')} |`,
    `| ${header.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  for (const p of paths) {
    const why = spec.unavailable[p];
    if (why) lines.push('', `${spec.labels[p] ?? PATH_LABELS[p]}: not available — ${why}`);
  }
  const targetLines: string[] = [];
  for (const p of paths) {
    for (const [name, t] of Object.entries(spec.targets?.[p] ?? {})) {
      if (spec.unavailable[p] || spec.unavailable.haproxy) targetLines.push(`${spec.labels[p] ?? PATH_LABELS[p]} ${name.trim()} ${t.op} ${t.ratio}× HAProxy: not measured`);
    }
  }
  if (targetLines.length > 0) lines.push('', `Targets not measured: ${targetLines.join('; ')}.`);
  if (spec.notes && spec.notes.length > 0) lines.push('', ...spec.notes);
  return lines.join('\n');
}

/** Every round's value, so a reader can see the spread behind each median. */
export function renderSamples(spec: TableSpec): string {
  const lines = [`Per-round samples (${spec.title}):`, ''];
  for (const fig of FIGURES) {
    // Every figure, the interference rows (other processes, host steal) included: a round that was
    // disturbed shows as such next to its figures.
    const parts: string[] = [];
    for (const p of spec.paths) {
      const values = (spec.results[p] ?? []).map(fig.pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
      if (values.length > 0) parts.push(`${spec.labels[p] ?? PATH_LABELS[p]} ${values.map(fig.format).join(' / ')}`);
    }
    if (parts.length > 0) lines.push(`- ${fig.name.trim()}: ${parts.join('; ')}`);
  }
  const tw: string[] = [];
  for (const p of spec.paths) {
    const rounds = (spec.results[p] ?? []).map((b) => b.timeWait).filter((t) => t !== undefined);
    if (rounds.length > 0) {
      const one = (t: NonNullable<BlockResult['timeWait']>) =>
        `${int(t.client)} / ${int(t.balancerClientLeg)} + ${int(t.balancerUpstreamLeg)} / ${int(t.backend)} of ${int(t.connections)}`;
      tw.push(`${spec.labels[p] ?? PATH_LABELS[p]} ${rounds.map(one).join('; ')}`);
    }
  }
  if (tw.length > 0) lines.push(`- (b) TIME_WAIT sockets left, client / balancer client leg + upstream leg / backend, of the connections made: ${tw.join('; ')}`);
  const errors: string[] = [];
  for (const p of spec.paths) {
    (spec.results[p] ?? []).forEach((b, round) => {
      for (const e of b.errors) errors.push(`- ${spec.labels[p] ?? PATH_LABELS[p]} round ${round + 1}: ${e}`);
      const wrkErrors = (b.keepAlive?.errors ?? 0) + (b.newConn?.errors ?? 0) + (b.latency?.errors ?? 0);
      if (wrkErrors > 0) errors.push(`- ${spec.labels[p] ?? PATH_LABELS[p]} round ${round + 1}: wrk counted ${wrkErrors} socket/status errors`);
    });
  }
  if (errors.length > 0) lines.push('', 'Errors:', ...errors);
  return lines.join('\n');
}
