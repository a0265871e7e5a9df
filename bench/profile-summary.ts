import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Reads a V8 .cpuprofile (what `node --cpu-prof` writes) and prints where the time went:
 * the functions with the most self time, and self time grouped by where the code lives (vipd's own
 * files, Node's stream and net internals, npm packages, GC). Percentages are of busy time, that is
 * the profile minus "(idle)", the time the event loop sat in epoll waiting for work.
 *
 * Samples from before the first one inside vipd's proxy code (process start) are left out unless
 * --with-startup is given.
 *
 *   node dist/bench/profile-summary.js FILE.cpuprofile [...] [--top N] [--with-startup]
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTimeRow {
  readonly function: string;
  readonly location: string;
  readonly selfMs: number;
  /** Percent of busy time. */
  readonly percent: number;
}

export interface ProfileSummary {
  /** Process start, left out of every other figure (0 with includeStartup). */
  readonly startupMs: number;
  readonly totalMs: number;
  readonly idleMs: number;
  readonly busyMs: number;
  readonly top: readonly SelfTimeRow[];
  readonly byArea: readonly { area: string; selfMs: number; percent: number }[];
  /**
   * vipd's own functions (dist/src/) by inclusive time: their self time plus everything they called
   * (stream writes, syscalls, metrics). It maps the self-time figures back to vipd's call sites.
   */
  readonly vipdInclusive: readonly SelfTimeRow[];
}

/**
 * Where a function lives, short: "src/proxy/session.ts:231" (vipd's frames mapped back to the
 * TypeScript source through the build's source maps), "node:internal/streams/writable:400".
 */
function location(frame: CallFrame): string {
  const url = frame.url;
  if (url === '') return '';
  const line = frame.lineNumber >= 0 ? `:${frame.lineNumber + 1}` : '';
  const dist = url.indexOf('/dist/');
  if (dist >= 0) {
    const original = originalPosition(url.replace(/^file:\/\//, ''), frame.lineNumber, frame.columnNumber);
    if (original) return original;
    return `${url.slice(dist + '/dist/'.length)}${line}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return `${url.slice(nm + 1)}${line}`;
  return `${url.replace(/^file:\/\//, '')}${line}`;
}

// Source maps (version 3, as tsc writes them): just enough to map a generated line and column back.

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Per generated line: segments [generated column, source index, original line, original column]. */
type DecodedMap = { sources: string[]; lines: number[][][] };
const mapCache = new Map<string, DecodedMap | undefined>();

function decodeVlqSegment(text: string): number[] {
  const values: number[] = [];
  let value = 0;
  let shift = 0;
  for (const ch of text) {
    const digit = BASE64.indexOf(ch);
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
    } else {
      values.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return values;
}

function loadMap(jsFile: string): DecodedMap | undefined {
  if (mapCache.has(jsFile)) return mapCache.get(jsFile);
  let decoded: DecodedMap | undefined;
  try {
    const raw = JSON.parse(fs.readFileSync(`${jsFile}.map`, 'utf8')) as { sources: string[]; sourceRoot?: string; mappings: string };
    const dir = path.dirname(jsFile);
    const sources = raw.sources.map((src) => path.resolve(dir, raw.sourceRoot ?? '', src));
    const lines: number[][][] = [];
    let source = 0;
    let origLine = 0;
    let origCol = 0;
    for (const lineText of raw.mappings.split(';')) {
      let genCol = 0;
      const segments: number[][] = [];
      for (const segText of lineText.split(',')) {
        if (segText === '') continue;
        const v = decodeVlqSegment(segText);
        genCol += v[0]!;
        if (v.length >= 4) {
          source += v[1]!;
          origLine += v[2]!;
          origCol += v[3]!;
          segments.push([genCol, source, origLine, origCol]);
        }
      }
      lines.push(segments);
    }
    decoded = { sources, lines };
  } catch {
    decoded = undefined;
  }
  mapCache.set(jsFile, decoded);
  return decoded;
}

/** "src/proxy/session.ts:231" for a 0-based generated position, or undefined without a usable map. */
function originalPosition(jsFile: string, line: number, column: number): string | undefined {
  const map = loadMap(jsFile);
  const segments = map?.lines[line];
  if (!map || !segments || segments.length === 0) return undefined;
  let best = segments[0]!;
  for (const seg of segments) if (seg[0]! <= column) best = seg;
  const source = map.sources[best[1]!];
  if (!source) return undefined;
  const srcIdx = source.lastIndexOf(`${path.sep}src${path.sep}`);
  return `${srcIdx >= 0 ? source.slice(srcIdx + 1) : source}:${best[2]! + 1}`;
}

/** A coarse bucket for the by-area view. */
function area(frame: CallFrame): string {
  const url = frame.url;
  if (url === '') {
    // V8's pseudo-frames: (garbage collector), (program), (idle), (root); and native builtins.
    // Everything else without a URL is native: V8 builtins and Node's C++ bindings, and with them the
    // system calls they make (writeBuffer is the write(2) of a socket write, for instance).
    return frame.functionName.startsWith('(') ? frame.functionName : 'native (bindings, builtins, their syscalls)';
  }
  const dist = url.indexOf('/dist/src/');
  if (dist >= 0) {
    const rel = url.slice(dist + '/dist/'.length);
    return `vipd ${path.dirname(rel)}/`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return `npm ${parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]}`;
  }
  if (url.startsWith('node:internal/')) {
    const parts = url.slice('node:internal/'.length).split('/');
    return `node internal/${parts.length > 1 ? `${parts[0]}/` : parts[0]}`;
  }
  if (url.startsWith('node:')) return `node ${url.slice('node:'.length)}`;
  return url;
}

/**
 * Index of the first sample taken while vipd's proxy code was on the stack: everything before it is
 * process start (module loading, config parsing), which a short profile would otherwise be full of.
 */
function firstProxySample(profile: CpuProfile, byId: ReadonlyMap<number, ProfileNode>): number {
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  const inProxy = new Map<number, boolean>();
  const check = (id: number): boolean => {
    const known = inProxy.get(id);
    if (known !== undefined) return known;
    const node = byId.get(id);
    // Named functions only: a module's top-level code runs as an anonymous function at its URL while
    // it is being loaded, and loading is exactly what is to be left out.
    const here = node !== undefined && node.callFrame.url.includes('/dist/src/proxy/') && node.callFrame.functionName !== '';
    const up = parent.get(id);
    const result = here || (up !== undefined && check(up));
    inProxy.set(id, result);
    return result;
  };
  const i = profile.samples.findIndex((id) => check(id));
  return i < 0 ? 0 : i;
}

export interface SummaryOptions {
  readonly top?: number;
  /** Keep the samples of process start too (default: they are dropped, see firstProxySample). */
  readonly includeStartup?: boolean;
}

export function summariseProfile(profile: CpuProfile, opts: SummaryOptions = {}): ProfileSummary {
  const topN = opts.top ?? 20;
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  // Sample i covers the time until the next sample (timeDeltas[i + 1]); the last one gets the mean.
  const selfUs = new Map<number, number>();
  const n = profile.samples.length;
  const meanDelta = n > 0 ? (profile.endTime - profile.startTime) / n : 0;
  const first = opts.includeStartup ? 0 : firstProxySample(profile, byId);
  let startupUs = 0;
  for (let i = 0; i < first; i++) startupUs += i + 1 < n ? Math.max(0, profile.timeDeltas[i + 1]!) : meanDelta;
  for (let i = first; i < n; i++) {
    const d = i + 1 < n ? profile.timeDeltas[i + 1]! : meanDelta;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, d));
  }
  const byFunction = new Map<string, { function: string; location: string; us: number }>();
  const byArea = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    totalUs += us;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const key = `${frame.functionName}@${frame.url}:${frame.lineNumber}:${frame.columnNumber}`;
    const row = byFunction.get(key) ?? { function: frame.functionName || '(anonymous)', location: location(frame), us: 0 };
    row.us += us;
    byFunction.set(key, row);
    const a = area(frame);
    byArea.set(a, (byArea.get(a) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number) => (busyUs > 0 ? (100 * us) / busyUs : 0);
  const vipdInclusive = inclusiveByVipdFunction(profile, byId, selfUs);
  return {
    startupMs: startupUs / 1000,
    totalMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    busyMs: busyUs / 1000,
    top: [...byFunction.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((r) => ({ function: r.function, location: r.location, selfMs: r.us / 1000, percent: pct(r.us) })),
    byArea: [...byArea.entries()].sort((a, b) => b[1] - a[1]).map(([areaName, us]) => ({ area: areaName, selfMs: us / 1000, percent: pct(us) })),
    vipdInclusive: [...vipdInclusive.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((r) => ({ function: r.function, location: r.location, selfMs: r.us / 1000, percent: pct(r.us) })),
  };
}

function isVipdFrame(frame: CallFrame): boolean {
  return frame.url.includes('/dist/src/');
}

/**
 * Walks the call tree once, carrying the set of vipd functions on the current path; each node's self
 * time is added once to each of them, so recursion is not counted twice.
 */
function inclusiveByVipdFunction(
  profile: CpuProfile,
  byId: ReadonlyMap<number, ProfileNode>,
  selfUs: ReadonlyMap<number, number>,
): Map<string, { function: string; location: string; us: number }> {
  const out = new Map<string, { function: string; location: string; us: number }>();
  const childIds = new Set(profile.nodes.flatMap((n) => n.children ?? []));
  const roots = profile.nodes.filter((n) => !childIds.has(n.id));
  const stack: { node: ProfileNode; onPath: readonly string[] }[] = roots.map((node) => ({ node, onPath: [] }));
  while (stack.length > 0) {
    const { node, onPath } = stack.pop()!;
    const frame = node.callFrame;
    let path = onPath;
    if (isVipdFrame(frame)) {
      const key = `${frame.functionName}@${frame.url}:${frame.lineNumber}:${frame.columnNumber}`;
      if (!out.has(key)) out.set(key, { function: frame.functionName || '(anonymous)', location: location(frame), us: 0 });
      if (!onPath.includes(key)) path = [...onPath, key];
    }
    const us = selfUs.get(node.id) ?? 0;
    if (us > 0) for (const key of path) out.get(key)!.us += us;
    for (const child of node.children ?? []) {
      const c = byId.get(child);
      if (c) stack.push({ node: c, onPath: path });
    }
  }
  return out;
}

export function readProfile(file: string): CpuProfile {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
}

export function formatSummary(title: string, s: ProfileSummary, areas = 12): string {
  const lines = [
    `#### ${title}`,
    '',
    `Profile ${(s.totalMs / 1000).toFixed(1)} s after ${(s.startupMs / 1000).toFixed(1)} s of process start (left out), busy ${(s.busyMs / 1000).toFixed(1)} s (${s.totalMs > 0 ? ((100 * s.busyMs) / s.totalMs).toFixed(0) : 0}%), idle ${(s.idleMs / 1000).toFixed(1)} s. Percentages are of busy time.`,
    '',
    '| self % | self ms | function | where |',
    '| ---: | ---: | --- | --- |',
    ...s.top.map((r) => `| ${r.percent.toFixed(1)} | ${r.selfMs.toFixed(0)} | ${r.function} | ${r.location} |`),
    '',
    '| self % | area |',
    '| ---: | --- |',
    ...s.byArea.slice(0, areas).map((a) => `| ${a.percent.toFixed(1)} | ${a.area} |`),
  ];
  if (s.vipdInclusive.length > 0) {
    lines.push(
      '',
      '| incl. % | incl. ms | vipd function (with what it calls) | where |',
      '| ---: | ---: | --- | --- |',
      ...s.vipdInclusive.slice(0, 12).map((r) => `| ${r.percent.toFixed(1)} | ${r.selfMs.toFixed(0)} | ${r.function} | ${r.location} |`),
    );
  }
  return lines.join('\n');
}

const CLI_USAGE = 'usage: profile-summary FILE.cpuprofile [...] [--top N] [--with-startup]\n';

function main(argv: string[]): void {
  let top = 20;
  let includeStartup = false;
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--top') {
      top = Number(argv[++i]);
      if (!Number.isInteger(top) || top < 1) throw new Error('--top needs a positive integer');
    } else if (a === '--with-startup') {
      includeStartup = true;
    } else if (a === '-h' || a === '--help') {
      process.stdout.write(CLI_USAGE);
      return;
    } else {
      files.push(a);
    }
  }
  if (files.length === 0) {
    process.stderr.write(CLI_USAGE);
    process.exitCode = 2;
    return;
  }
  for (const f of files) process.stdout.write(`${formatSummary(path.basename(f), summariseProfile(readProfile(f), { top, includeStartup }))}\n\n`);
}

if (require.main === module) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`profile-summary: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
