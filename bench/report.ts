import type { BlockResult } from './measure';
import { PATH_LABELS, type PathName } from './paths';
import { median } from './util';

/**
 * Turns the blocks of one table into a markdown table: per figure and path, the median over rounds,
 * its ratio to HAProxy, and for vipd the target next to the ratio.
 */

export interface TableSpec {
  readonly title: string;
  readonly paths: readonly PathName[];
  /** Column headers per path (e.g. "HAProxy nbthread 2"). */
  readonly labels: Partial<Record<PathName, string>>;
  /** A path that could not be measured, with the reason; printed in place of its figures. */
  readonly unavailable: Partial<Record<PathName, string>>;
  /** Results by path: one BlockResult per round. */
  readonly results: Partial<Record<PathName, BlockResult[]>>;
}

type Direction = 'higher' | 'lower' | 'info';

interface Figure {
  readonly name: string;
  readonly pick: (b: BlockResult) => number | undefined;
  readonly format: (v: number) => string;
  readonly direction: Direction;
  /** vipd's target as a ratio to HAProxy. */
  readonly target?: { readonly op: '≥' | '≤'; readonly ratio: number };
}

const int = (v: number) => Math.round(v).toLocaleString('en-US');
const fixed1 = (v: number) => v.toFixed(1);

export const FIGURES: readonly Figure[] = [
  { name: '(a) keep-alive req/s', pick: (b) => b.keepAlive?.rate, format: int, direction: 'higher', target: { op: '≥', ratio: 0.9 } },
  { name: '  proxy CPU % in (a)', pick: (b) => b.keepAlive?.cpuPercent, format: (v) => `${v.toFixed(0)}%`, direction: 'info' },
  { name: '  proxy CPU µs per request', pick: (b) => b.keepAlive?.cpuUsPerOp, format: fixed1, direction: 'lower' },
  { name: '(b) new connections/s', pick: (b) => b.newConn?.rate, format: int, direction: 'higher', target: { op: '≥', ratio: 0.6 } },
  { name: '  proxy CPU % in (b)', pick: (b) => b.newConn?.cpuPercent, format: (v) => `${v.toFixed(0)}%`, direction: 'info' },
  { name: '  proxy CPU µs per connection', pick: (b) => b.newConn?.cpuUsPerOp, format: fixed1, direction: 'lower' },
  { name: '(c) bulk download MiB/s', pick: (b) => (b.bulkBps === undefined ? undefined : b.bulkBps / 2 ** 20), format: int, direction: 'higher', target: { op: '≥', ratio: 0.9 } },
  { name: '  proxy CPU % in (c)', pick: (b) => b.bulkCpuPercent, format: (v) => `${v.toFixed(0)}%`, direction: 'info' },
  { name: '(d) p50 latency µs', pick: (b) => b.latency?.p50Us, format: int, direction: 'lower' },
  { name: '(d) p99 latency µs', pick: (b) => b.latency?.p99Us, format: int, direction: 'lower', target: { op: '≤', ratio: 1.5 } },
  { name: '  achieved rate in (d), req/s', pick: (b) => b.latency?.rate, format: int, direction: 'info' },
  { name: '(e) RSS MiB per 10k idle conns', pick: (b) => b.idle?.mibPer10k, format: fixed1, direction: 'lower' },
  { name: 'other processes on the machine, CPU %', pick: (b) => b.interference?.foreignPercent, format: (v) => `${v.toFixed(0)}%`, direction: 'info' },
  { name: 'host steal (CPU the hypervisor took), %', pick: (b) => b.interference?.stealPercent, format: (v) => `${v.toFixed(0)}%`, direction: 'info' },
];

export function medianOf(blocks: readonly BlockResult[] | undefined, pick: (b: BlockResult) => number | undefined): number | undefined {
  const values = (blocks ?? []).map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
  return values.length === 0 ? undefined : median(values);
}

export function renderTable(spec: TableSpec): string {
  const paths = spec.paths;
  const header = ['figure', ...paths.map((p) => spec.labels[p] ?? PATH_LABELS[p])];
  const showTarget = paths.includes('vipd') && paths.includes('haproxy');
  if (showTarget) header.push('vipd target');
  const rows: string[][] = [];
  for (const fig of FIGURES) {
    const base = spec.results.haproxy && !spec.unavailable.haproxy ? medianOf(spec.results.haproxy, fig.pick) : undefined;
    const cells = paths.map((p) => {
      if (spec.unavailable[p]) return 'n/a';
      const v = medianOf(spec.results[p], fig.pick);
      if (v === undefined) return '—';
      const ratio = base !== undefined && base !== 0 && p !== 'haproxy' && fig.direction !== 'info' ? ` (${(v / base).toFixed(2)}×)` : '';
      return `${fig.format(v)}${ratio}`;
    });
    // A figure nobody measured in this table (e.g. idle memory in the workers table) is left out.
    if (cells.every((c) => c === '—' || c === 'n/a')) continue;
    const row = [fig.name, ...cells];
    if (showTarget) row.push(targetCell(fig, spec));
    rows.push(row);
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
  return lines.join('\n');
}

function targetCell(fig: Figure, spec: TableSpec): string {
  if (!fig.target) return '';
  const t = `${fig.target.op} ${fig.target.ratio}×`;
  if (spec.unavailable.vipd || spec.unavailable.haproxy) return t;
  const v = medianOf(spec.results.vipd, fig.pick);
  const base = medianOf(spec.results.haproxy, fig.pick);
  if (v === undefined || base === undefined || base === 0) return t;
  const ratio = v / base;
  const met = fig.target.op === '≥' ? ratio >= fig.target.ratio : ratio <= fig.target.ratio;
  return `${t} ${met ? 'met' : 'NOT met'}`;
}

/** Every round's value, so a reader can see the spread behind each median. */
export function renderSamples(spec: TableSpec): string {
  const lines = [`Per-round samples (${spec.title}):`, ''];
  for (const fig of FIGURES) {
    if (fig.direction === 'info') continue;
    const parts: string[] = [];
    for (const p of spec.paths) {
      const values = (spec.results[p] ?? []).map(fig.pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
      if (values.length > 0) parts.push(`${spec.labels[p] ?? PATH_LABELS[p]} ${values.map(fig.format).join(' / ')}`);
    }
    if (parts.length > 0) lines.push(`- ${fig.name.trim()}: ${parts.join('; ')}`);
  }
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
