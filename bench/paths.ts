import * as fs from 'node:fs';
import * as path from 'node:path';
import { BACKEND_HOST, BACKEND_PORT, PROXY_PORTS, VIP, VIPD_ADMIN_PORT, haproxyConf, nginxStreamConf, vipdConfig, type Layout, type VipdVariant } from './configs';
import { httpGetStatus } from './load';
import { startProcess, treePids, type Managed } from './procs';
import { WaitAborted, run, waitFor } from './util';

/**
 * The paths to the backend. A proxy is started fresh for each measurement block (and stopped after
 * it), so every block, the idle-memory test in particular, starts from the same state whatever ran
 * before it. Proxies run in the balancer namespace, the backend in its own (netns.ts).
 * - `vipd`: the user-space proxy (`firstByte: 0s`; 1 process, or `proxy.workers: 2` in the workers table);
 * - `vipd-kernel`: vipd's kernel data path (`dataPath: kernel`: nftables DNAT to the backend, SNAT back);
 * - `vipd-firstbyte`: the proxy with vipd's default first-byte wait (10s), for the first-byte block only;
 * - `libuv` is a reference, run only when asked for (--only): the bare relay of libuv-relay.ts, which
 *   tells how much of vipd's cost is Node's net.Socket.
 */

export const PATH_NAMES = ['vipd', 'vipd-kernel', 'haproxy', 'nginx', 'direct', 'libuv', 'vipd-firstbyte'] as const;
export type PathName = (typeof PATH_NAMES)[number];
export const DEFAULT_PATHS: readonly PathName[] = ['vipd', 'vipd-kernel', 'haproxy', 'nginx', 'direct'];

export const PATH_LABELS: Record<PathName, string> = {
  vipd: 'vipd proxy',
  'vipd-kernel': 'vipd kernel',
  haproxy: 'HAProxy',
  nginx: 'nginx stream',
  direct: 'direct (routed, no proxy)',
  libuv: 'Node libuv-handle relay (reference)',
  'vipd-firstbyte': 'vipd proxy, firstByte 10s (default)',
};

/** Paths with a single process only: no workers table for them. */
export const SINGLE_PROCESS_PATHS: readonly PathName[] = ['libuv', 'vipd-kernel', 'vipd-firstbyte'];

/** Paths that are vipd, and which vipd: each has its own config file. */
export function vipdVariant(name: PathName, workers: number): VipdVariant | undefined {
  switch (name) {
    case 'vipd':
      return { workers, firstByte: '0s', kernel: false };
    case 'vipd-firstbyte':
      return { workers, firstByte: undefined, kernel: false };
    case 'vipd-kernel':
      return { workers: 1, firstByte: undefined, kernel: true };
    default:
      return undefined;
  }
}

export interface PathTarget {
  readonly host: string;
  readonly port: number;
}

export function targetOf(name: PathName): PathTarget {
  return name === 'direct' ? { host: BACKEND_HOST, port: BACKEND_PORT } : { host: VIP, port: PROXY_PORTS[name] };
}

export interface RunningPath extends PathTarget {
  readonly name: PathName;
  /** The proxy's process (the root of its tree); undefined for the direct path. */
  readonly proc: Managed | undefined;
  stop(): Promise<void>;
}

export interface StartContext {
  readonly layout: Layout;
  /** taskset CPU list for the proxy. */
  readonly cores: string;
  /** RLIMIT_NOFILE for the proxy. */
  readonly nofile: number;
  /** 1 = single process / thread; 2 = vipd proxy.workers 2, HAProxy nbthread 2, nginx 2 workers. */
  readonly workers: number;
  /** For HAProxy's maxconn: the most client connections any test opens. */
  readonly maxClientConnections: number;
  /**
   * Start vipd under `node --cpu-prof`, its profiles going to this directory. Node names each file
   * after the process, so worker processes (which inherit the flag) write their own next to it.
   */
  readonly cpuProfileDir?: string;
  /** Unique per start, so logs of successive blocks do not mix. */
  readonly tag: string;
  /** vipd's CLI entry point. */
  readonly vipdBin: string;
  /** The balancer's namespace, where the proxies run. */
  readonly netns: string;
}

function variantKey(v: VipdVariant): string {
  return v.kernel ? 'kernel' : `w${v.workers}${v.firstByte === undefined ? '-fbdefault' : ''}`;
}

/** vipd's config file for a variant, written once and validated with `vipd check-config`. */
export function vipdConfigFile(l: Layout, v: VipdVariant): string {
  return path.join(l.dir, `vipd-${variantKey(v)}.yaml`);
}

/** Writes the vipd config and asks vipd itself whether it is valid; returns undefined or the refusal. */
export async function prepareVipdConfig(l: Layout, v: VipdVariant, vipdBin: string): Promise<string | undefined> {
  const file = vipdConfigFile(l, v);
  const key = variantKey(v);
  fs.writeFileSync(file, `${JSON.stringify(vipdConfig(v, VIPD_ADMIN_PORT, path.join(l.dir, `vipd-state-${key}`), path.join(l.dir, `vipd-${key}.sock`)), null, 2)}\n`);
  const r = await run([process.execPath, vipdBin, 'check-config', file], { timeoutMs: 30_000 });
  if (r.code === 0) return undefined;
  return (r.stderr || r.stdout).trim().replace(/\s+/g, ' ');
}

export async function startPath(name: PathName, ctx: StartContext): Promise<RunningPath> {
  const target = targetOf(name);
  if (name === 'direct') return { name, ...target, proc: undefined, stop: async () => undefined };
  const logFile = path.join(ctx.layout.dir, 'logs', `${name}-${ctx.tag}.log`);
  let argv: string[];
  switch (name) {
    case 'vipd':
    case 'vipd-kernel':
    case 'vipd-firstbyte': {
      const nodeFlags = ctx.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', ctx.cpuProfileDir] : [];
      argv = [process.execPath, ...nodeFlags, ctx.vipdBin, 'run', '--config', vipdConfigFile(ctx.layout, vipdVariant(name, ctx.workers)!)];
      break;
    }
    case 'haproxy': {
      const file = path.join(ctx.layout.dir, `haproxy-t${ctx.workers}.cfg`);
      fs.writeFileSync(file, haproxyConf(ctx.workers, ctx.maxClientConnections + 100));
      argv = ['haproxy', '-db', '-f', file];
      break;
    }
    case 'nginx': {
      const file = path.join(ctx.layout.dir, `nginx-stream-w${ctx.workers}.conf`);
      fs.writeFileSync(file, nginxStreamConf(ctx.layout, ctx.workers, ctx.nofile));
      argv = ['nginx', '-e', path.join(ctx.layout.dir, 'nginx-stream.error.log'), '-c', file];
      break;
    }
    case 'libuv':
      argv = [process.execPath, path.join(__dirname, 'libuv-relay.js'), VIP, String(PROXY_PORTS.libuv), BACKEND_HOST, String(BACKEND_PORT)];
      break;
  }
  const proc = startProcess(name, argv, { cores: ctx.cores, nofile: ctx.nofile, logFile, netns: ctx.netns });
  const running: RunningPath = { name, ...target, proc, stop: async () => void (await proc.stop(10_000)) };
  try {
    await waitFor(
      `${name} to serve ${target.host}:${target.port}`,
      async () => {
        if (!proc.running) throw new WaitAborted(`${name} exited (${describeExit(proc)}) during start:\n${proc.logTail()}`);
        return (await httpGetStatus(target.host, target.port, '/small')) === 200;
      },
      20_000,
      100,
    );
  } catch (err) {
    await proc.stop(2000);
    throw err instanceof WaitAborted ? err : new Error(`${err instanceof Error ? err.message : String(err)}\n${proc.logTail()}`);
  }
  return running;
}

export function describeExit(p: Managed): string {
  const e = p.exitStatus;
  if (!e) return 'running';
  return e.signal ? `signal ${e.signal}` : `exit ${e.code}`;
}

/** Processes in a running proxy's tree: tells whether `workers: 2` really started a second process. */
export function processCount(p: RunningPath): number {
  return p.proc ? treePids(p.proc.pid).length : 0;
}
