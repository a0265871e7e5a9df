import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { LARGE_FILE_BYTES, BACKEND_PORT } from './configs';
import { curlDownload, wrk, type WrkResult } from './load';
import type { RunningPath } from './paths';
import type { Namespaces } from './netns';
import { cpuMeter, softirqMeter, startProcess, treeRssKiB, type Interference } from './procs';
import { errorText, progress, run, sleep } from './util';

/** How long each load runs, per table (options.ts durationsFor; --quick shortens them). */
export interface Durations {
  /** (a) keep-alive, wrk -c 50. */
  readonly keepAliveS: number;
  /** (b) new connections, wrk -c 50 with Connection: close. */
  readonly newConnS: number;
  /** (d) paced latency run. */
  readonly latencyS: number;
  /** Short keep-alive run before (a): JIT warm-up for vipd, first-touch of buffers for everyone. */
  readonly warmupS: number;
}

/**
 * (d): LATENCY_CONNECTIONS connections, each pausing LATENCY_DELAY_MS before every request: at most
 * 2,000 req/s. The achieved rate is a little lower (each cycle is the pause plus the answer's latency
 * plus wrk's millisecond timer slack), and is printed; a longer pause on more connections keeps that
 * slack small relative to the cycle.
 */
export const LATENCY_CONNECTIONS = 40;
export const LATENCY_DELAY_MS = 20;
export const LATENCY_TARGET_RATE = (LATENCY_CONNECTIONS * 1000) / LATENCY_DELAY_MS;
/** (a) and (b) concurrency. */
export const LOAD_CONNECTIONS = 50;

export interface Scripts {
  readonly plain: string;
  readonly close: string;
  readonly paced: string;
}

export interface RateFigure {
  rate: number;
  errors: number;
  /** Proxy CPU over the run, percent of one core (may exceed 100 with several workers). */
  cpuPercent?: number;
  /** Proxy CPU per request (a) or per connection (b): efficiency, whatever the bottleneck. */
  cpuUsPerOp?: number;
  /** Percent of one core per process of the proxy's tree, root first. */
  cpuPerProcess?: number[];
  /** The whole machine's softirq time over the run (forwarding, NAT, TCP receive), percent of one core. */
  softirqPercent?: number;
  /** The same per core (core 0 first). */
  softirqPerCore?: number[];
  requests?: number;
}

/**
 * TIME_WAIT sockets the (b) load left, per namespace and leg: who closed each connection first.
 * A TIME_WAIT on the client holds one of the client's ephemeral ports towards the VIP for 60 s; one on
 * the balancer's client leg sits on the listening port and holds no port; one on its upstream leg holds
 * one of the balancer's ports towards the backend; one on the backend holds none of its own.
 */
export interface TimeWaitFigure {
  connections: number;
  client: number;
  balancerClientLeg: number;
  balancerUpstreamLeg: number;
  backend: number;
}

export interface IdleFigure {
  connections: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  /** Established backend-side sockets while the clients were idle: proof that the upstream legs exist. */
  upstreamLegs: number;
  /** (after - before), scaled to 10,000 connections, in MiB. */
  mibPer10k: number;
}

export interface BlockResult {
  keepAlive?: RateFigure;
  newConn?: RateFigure;
  /** Bytes per second of the one large download. */
  bulkBps?: number;
  latency?: { p50Us: number; p99Us: number; rate: number; errors: number };
  idle?: IdleFigure;
  /** Proxy process count seen while loaded. */
  processes?: number;
  /** CPU that other processes and the host took during the block (see interferenceMeter). */
  interference?: Interference;
  /** Proxy CPU during (c), percent of one core. */
  bulkCpuPercent?: number;
  bulkSoftirqPercent?: number;
  timeWait?: TimeWaitFigure;
  errors: string[];
}

/** The figures a block measures (a table may skip some to keep the whole run short). */
export type FigureKey = 'a' | 'b' | 'c' | 'd';

export interface BlockContext {
  readonly path: RunningPath;
  readonly loadCores: string;
  readonly durations: Durations;
  readonly scripts: Scripts;
  /** Run (e) with this many connections; undefined skips it. */
  readonly idleConnections?: number;
  readonly idleClientJs: string;
  readonly nofile: number;
  readonly logDir: string;
  readonly label: string;
  /** Which of (a)-(d) to run; (e) runs when idleConnections is set. */
  readonly figures: ReadonlySet<FigureKey>;
  readonly namespaces: Namespaces;
  /** The client's source address in this block (netns.ts freshClientSource). */
  readonly clientSource: string;
  /** The port the path listens on at the balancer (for the TIME_WAIT split); undefined for direct. */
  readonly proxyPort: number | undefined;
}

function softirqFields(s: { total: number; perCore: number[] }): { softirqPercent: number; softirqPerCore: number[] } {
  return { softirqPercent: s.total, softirqPerCore: s.perCore };
}

async function withCpu(p: RunningPath, body: () => Promise<WrkResult>): Promise<RateFigure> {
  const meter = p.proc ? cpuMeter(p.proc.pid) : undefined;
  const softirq = softirqMeter();
  const r = await body();
  const cpu = meter?.stop();
  return {
    rate: r.rate,
    errors: r.errors,
    requests: r.requests,
    ...softirqFields(softirq.stop()),
    ...(cpu
      ? {
          cpuPercent: cpu.percent,
          cpuUsPerOp: r.requests > 0 ? (cpu.seconds * 1e6) / r.requests : Number.NaN,
          cpuPerProcess: cpu.perProcess.map((p) => p.percent),
        }
      : {}),
  };
}

/** Runs every figure of one block on one started path. A failed figure is recorded and the block goes on. */
export async function measureBlock(ctx: BlockContext): Promise<BlockResult> {
  const p = ctx.path;
  const url = (file: string) => `http://${p.host}:${p.port}/${file}`;
  const d = ctx.durations;
  const res: BlockResult = { errors: [] };
  const step = async (name: string, body: () => Promise<void>): Promise<void> => {
    try {
      await body();
    } catch (err) {
      res.errors.push(`${name}: ${errorText(err).split('\n')[0]}`);
      progress(`  ${ctx.label} ${name} FAILED: ${errorText(err)}`);
    }
  };

  // (e) first, on the freshly started proxy: later loads grow heaps and pools that would absorb the
  // idle connections' memory and make the figure depend on what ran before.
  if (ctx.idleConnections !== undefined && p.proc) {
    await step('(e) idle memory', async () => {
      res.idle = await idleMemory(ctx, ctx.idleConnections!);
      progress(`  ${ctx.label} (e) ${res.idle.connections} idle: +${((res.idle.rssAfterKiB - res.idle.rssBeforeKiB) / 1024).toFixed(1)} MiB RSS, ${res.idle.mibPer10k.toFixed(1)} MiB per 10k (${res.idle.upstreamLegs} upstream legs)`);
    });
  }

  const f = ctx.figures;
  await step('warm-up', async () => {
    await wrk({ url: url('small'), connections: LOAD_CONNECTIONS, durationS: d.warmupS, script: ctx.scripts.plain, cores: ctx.loadCores });
  });

  if (f.has('a')) await step('(a) keep-alive', async () => {
    res.keepAlive = await withCpu(p, () =>
      wrk({ url: url('small'), connections: LOAD_CONNECTIONS, durationS: d.keepAliveS, script: ctx.scripts.plain, cores: ctx.loadCores }),
    );
    progress(`  ${ctx.label} (a) keep-alive ${fmtRate(res.keepAlive)}`);
  });

  if (f.has('b')) await step('(b) new connections', async () => {
    const before = await timeWaitSnapshot(ctx);
    res.newConn = await withCpu(p, () =>
      wrk({ url: url('small'), connections: LOAD_CONNECTIONS, durationS: d.newConnS, script: ctx.scripts.close, cores: ctx.loadCores }),
    );
    res.timeWait = await timeWaitSince(ctx, before, res.newConn.requests ?? 0);
    const tw = res.timeWait;
    progress(`  ${ctx.label} (b) new conns ${fmtRate(res.newConn)}; TIME_WAIT left: client ${tw.client}, balancer ${tw.balancerClientLeg} + ${tw.balancerUpstreamLeg} upstream, backend ${tw.backend}`);
  });

  if (f.has('c')) await step('(c) bulk', async () => {
    const meter = p.proc ? cpuMeter(p.proc.pid) : undefined;
    const softirq = softirqMeter();
    res.bulkBps = await curlDownload(url('large'), LARGE_FILE_BYTES, ctx.loadCores);
    const cpu = meter?.stop();
    if (cpu) res.bulkCpuPercent = cpu.percent;
    res.bulkSoftirqPercent = softirq.stop().total;
    progress(`  ${ctx.label} (c) bulk ${(res.bulkBps / 2 ** 20).toFixed(0)} MiB/s${cpu ? `, proxy CPU ${cpu.percent.toFixed(0)}%` : ''}`);
  });

  if (f.has('d')) await step('(d) latency', async () => {
    const r = await wrk({ url: url('small'), connections: LATENCY_CONNECTIONS, durationS: d.latencyS, script: ctx.scripts.paced, cores: ctx.loadCores });
    res.latency = { p50Us: r.p50Us, p99Us: r.p99Us, rate: r.rate, errors: r.errors };
    progress(`  ${ctx.label} (d) at ${r.rate.toFixed(0)} req/s: p50 ${r.p50Us} µs, p99 ${r.p99Us} µs${r.errors ? `, ${r.errors} errors` : ''}`);
  });
  return res;
}

function fmtRate(f: RateFigure): string {
  const split = (f.cpuPerProcess?.length ?? 0) > 1 ? ` [per process ${f.cpuPerProcess!.map((p) => `${p.toFixed(0)}%`).join(' + ')}]` : '';
  const cpu = f.cpuPercent !== undefined ? `, proxy CPU ${f.cpuPercent.toFixed(0)}%${split} (${f.cpuUsPerOp!.toFixed(1)} µs/op)` : '';
  return `${Math.round(f.rate).toLocaleString('en-US')}/s${cpu}${f.errors ? `, ${f.errors} errors` : ''}`;
}

/**
 * (e): RSS of the proxy's process tree before and after `count` idle proxied connections. The client
 * is a separate Node process on the load core; its own memory is not counted.
 */
async function idleMemory(ctx: BlockContext, count: number): Promise<IdleFigure> {
  const p = ctx.path;
  const pid = p.proc!.pid;
  await sleep(300);
  const rssBeforeKiB = treeRssKiB(pid);
  const client = startProcess('idle-client', [process.execPath, ctx.idleClientJs, p.host, String(p.port), String(count), '/small'], {
    cores: ctx.loadCores,
    nofile: ctx.nofile,
    logFile: path.join(ctx.logDir, `idle-client-${ctx.label.replace(/\W+/g, '_')}.log`),
    pipeStdout: true,
  });
  try {
    const line = await firstLine(client.stdout!, 40_000);
    if (!line.startsWith('ready')) {
      const exit = await Promise.race([client.exited, sleep(1000).then(() => undefined)]);
      const how = exit ? `exit ${exit.signal ?? exit.code}` : 'still running';
      throw new Error(`idle client (${how}): ${line || '(no output)'} ${client.logTail(5)}`.trim());
    }
    // Let the proxy finish per-connection work (and Node its lazy allocations) before reading RSS.
    await sleep(1000);
    const rssAfterKiB = treeRssKiB(pid);
    const upstreamLegs = await establishedTo(ctx.namespaces.backend, BACKEND_PORT);
    return { connections: count, rssBeforeKiB, rssAfterKiB, upstreamLegs, mibPer10k: ((rssAfterKiB - rssBeforeKiB) / 1024) * (10_000 / count) };
  } finally {
    await client.stop(5000);
    // The proxy tears 2 x count sockets down; give it a moment so the next load does not pay for it.
    await sleep(700);
  }
}

function firstLine(stream: NodeJS.ReadableStream, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: stream });
    let done = false;
    const timer = setTimeout(() => finish(`no answer within ${timeoutMs} ms`), timeoutMs);
    // close() emits 'close' synchronously, which calls finish again: the first caller wins.
    const finish = (line: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(line);
      rl.close();
    };
    rl.once('line', finish);
    rl.once('close', () => finish(''));
  });
}

/** Established TCP sockets in the backend namespace whose local port is `port` (the backend's side of each upstream leg). */
async function establishedTo(ns: string, port: number): Promise<number> {
  const r = await run(['ip', 'netns', 'exec', ns, 'ss', '-Htn', 'state', 'established', `( sport = :${port} )`]);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

interface TimeWaitSocket {
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
  /** local and peer address:port: a connection's identity while it is in TIME_WAIT. */
  key: string;
}

function splitHostPort(text: string): [string, number] {
  const i = text.lastIndexOf(':');
  return [text.slice(0, i).replace(/^\[|\]$/g, ''), Number(text.slice(i + 1))];
}

async function timeWaitSockets(ns: string): Promise<TimeWaitSocket[]> {
  const r = await run(['ip', 'netns', 'exec', ns, 'ss', '-Htan', 'state', 'time-wait'], { timeoutMs: 30_000 });
  const out: TimeWaitSocket[] = [];
  for (const line of r.stdout.split('\n')) {
    // Recv-Q Send-Q Local:Port Peer:Port
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4) continue;
    const [local, localPort] = splitHostPort(cols[2]!);
    const [peer, peerPort] = splitHostPort(cols[3]!);
    out.push({ local, localPort, peer, peerPort, key: `${cols[2]} ${cols[3]}` });
  }
  return out;
}

type TimeWaitSnapshot = readonly [ReadonlySet<string>, ReadonlySet<string>, ReadonlySet<string>];

function namespacesOf(ctx: BlockContext): string[] {
  return [ctx.namespaces.client, ctx.namespaces.balancer, ctx.namespaces.backend];
}

/** The TIME_WAIT sockets in each namespace before the load: those are not the load's. */
async function timeWaitSnapshot(ctx: BlockContext): Promise<TimeWaitSnapshot> {
  const lists = await Promise.all(namespacesOf(ctx).map(timeWaitSockets));
  return lists.map((l) => new Set(l.map((s) => s.key))) as unknown as TimeWaitSnapshot;
}

/**
 * Counts the TIME_WAIT sockets the load made, per namespace and leg: those present after it and not
 * before (a TIME_WAIT lasts 60 s, longer than any load here, so none of the load's is gone yet).
 */
async function timeWaitSince(ctx: BlockContext, before: TimeWaitSnapshot, connections: number): Promise<TimeWaitFigure> {
  const [client, balancer, backend] = await Promise.all(namespacesOf(ctx).map(timeWaitSockets));
  const count = (list: TimeWaitSocket[] | undefined, old: ReadonlySet<string>, pred: (s: TimeWaitSocket) => boolean) =>
    (list ?? []).filter((s) => !old.has(s.key) && pred(s)).length;
  return {
    connections,
    client: count(client, before[0], (s) => s.local === ctx.clientSource),
    balancerClientLeg: ctx.proxyPort === undefined ? 0 : count(balancer, before[1], (s) => s.localPort === ctx.proxyPort),
    balancerUpstreamLeg: count(balancer, before[1], (s) => s.peerPort === BACKEND_PORT),
    backend: count(backend, before[2], (s) => s.localPort === BACKEND_PORT),
  };
}
