import * as path from 'node:path';
import { DEFAULT_PATHS, PATH_NAMES, type PathName } from './paths';
import { VIPD_BIN } from './util';
import type { Durations } from './measure';

/** Command line of `npm run bench -- [options]`. */
export interface BenchOptions {
  /** Rounds per table; each figure is the median over them. */
  readonly rounds: number;
  readonly quick: boolean;
  readonly only: readonly PathName[];
  /** The "checks" block (bench/checks.ts): cost of 1,000 health checks, vipd next to HAProxy. */
  readonly checks: boolean;
  /** Profile vipd under the (a), (b) and (c) loads with --cpu-prof, after the tables. */
  readonly profile: boolean;
  readonly profileDir: string | undefined;
  /** Skip the second table (vipd workers 2, HAProxy nbthread 2, nginx 2 workers). */
  readonly workersTable: boolean;
  /** Skip the block on the kernel's default sysctls (ip_local_port_range, tcp_tw_reuse). */
  readonly defaultSysctlsBlock: boolean;
  /** Skip the block that measures vipd's first-byte wait (default 10s) against firstByte: 0s. */
  readonly firstByteBlock: boolean;
  /** Steer the balancer's veth receive work to the proxy core (RPS), as a NIC's queues would. */
  readonly rpsOnProxyCore: boolean;
  /** Keep the work directory (configs and logs of every process) instead of removing it. */
  readonly keep: boolean;
  /** vipd's CLI to run (default: this tree's dist/src/cli/bin.js), e.g. another build to compare with. */
  readonly vipdBin: string;
  /**
   * Priority boost (nice -N) for every benchmark process. The machine is shared: a compile or a test
   * run elsewhere takes CPU from whichever proxy is being measured and skews that path alone; at nice
   * -10 the scheduler gives the benchmark ~9 times the share of a default-priority process. 0 = off.
   */
  readonly boost: number;
}

export const USAGE = `usage: npm run bench -- [options]

Runs vipd (proxy and kernel data path), HAProxy, nginx stream and the direct path against one
nginx backend, in a routed topology of three network namespaces (client, balancer, backend), and
prints one markdown table per block (stdout); progress goes to stderr.

  --rounds N        rounds per table, alternating the paths; figures are medians (default 3)
  --quick           1 round, shorter loads, 2,000 idle connections: a smoke run (~3 min)
  --only LIST       comma-separated paths: vipd,vipd-kernel,haproxy,nginx,direct (default: these
                    five), and libuv: a bare relay on Node's internal libuv handles, the
                    reference for what net.Socket costs (bench/libuv-relay.ts);
                    and checks: the cost of 1,000 tcp and http health checks a second,
                    vipd next to HAProxy (bench/checks.ts; alone, it skips the tables)
  --profile         also profile vipd (node --cpu-prof) under the keep-alive, new-connection
                    and bulk loads, and print the top functions (adds ~40 s)
  --profile-dir DIR where the .cpuprofile files go (default: a new directory in $TMPDIR)
  --no-workers      skip the second table (2 workers / threads)
  --no-default-sysctls  skip the block on the kernel's default ip_local_port_range and tcp_tw_reuse
  --no-firstbyte    skip the block on vipd's first-byte wait (firstByte 10s against 0s)
  --rps             steer the balancer's packet work (conntrack, NAT, forwarding, TCP receive) to
                    the proxy core with RPS, as a NIC's queues would on a real balancer; without
                    it a veth runs that work on the sender's core, the load core
  --keep            keep the work directory (configs, logs) after the run
  --vipd-bin FILE   vipd CLI to run instead of dist/src/cli/bin.js (e.g. another build)
  --boost N         run every benchmark process at nice -N, so other work on the machine
                    disturbs the figures less (default 10; 0 = normal priority)
  -h, --help        this text

Needs root (network namespaces) and a build (npm run build).`;

export class UsageError extends Error {}

export function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  let rounds: number | undefined;
  let quick = false;
  let only: PathName[] = [...DEFAULT_PATHS];
  let checks = false;
  let profile = false;
  let profileDir: string | undefined;
  let workersTable = true;
  let defaultSysctlsBlock = true;
  let firstByteBlock = true;
  let rpsOnProxyCore = false;
  let keep = false;
  let vipdBin = VIPD_BIN;
  let boost = 10;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--rounds': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 1 || n > 20) throw new UsageError('--rounds must be 1..20');
        rounds = n;
        break;
      }
      case '--quick':
        quick = true;
        break;
      case '--only': {
        const names = value().split(',').map((s) => s.trim()).filter(Boolean);
        // vipd-firstbyte is the first-byte block's own path, not one to pick.
        const pickable = PATH_NAMES.filter((n) => n !== 'vipd-firstbyte') as readonly string[];
        const bad = names.filter((n) => !pickable.includes(n) && n !== 'checks');
        if (bad.length > 0 || names.length === 0) throw new UsageError(`--only takes a list of ${pickable.join(', ')}, checks; got ${bad.join(', ') || 'nothing'}`);
        only = PATH_NAMES.filter((n) => names.includes(n));
        checks = names.includes('checks');
        break;
      }
      case '--profile':
        profile = true;
        break;
      case '--profile-dir':
        profileDir = value();
        profile = true;
        break;
      case '--no-workers':
        workersTable = false;
        break;
      case '--no-default-sysctls':
        defaultSysctlsBlock = false;
        break;
      case '--no-firstbyte':
        firstByteBlock = false;
        break;
      case '--rps':
        rpsOnProxyCore = true;
        break;
      case '--keep':
        keep = true;
        break;
      case '--vipd-bin':
        vipdBin = path.resolve(value());
        break;
      case '--boost': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 0 || n > 20) throw new UsageError('--boost must be 0..20');
        boost = n;
        break;
      }
      case '-h':
      case '--help':
        return 'help';
      default:
        throw new UsageError(`unknown option ${arg}`);
    }
  }
  return { rounds: rounds ?? (quick ? 1 : 3), quick, only, checks, profile, profileDir, workersTable, defaultSysctlsBlock, firstByteBlock, rpsOnProxyCore, keep, vipdBin, boost };
}

/** The blocks of a run, each printed as its own table. */
export type BlockKind = 'single' | 'workers' | 'sysctls' | 'firstbyte';

/**
 * Load lengths per block, so that three rounds of the four blocks, with the kernel path and nginx,
 * fit in twelve minutes on the 2-core machine: (a) in the main table is 4 s (issue 3 used 5; the
 * figure was the steadiest of all), (b) 3 s still makes ten thousand connections or more per run. (d)
 * is the longest: at ~1,900 req/s on 40 connections, one stall of the process (a host steal burst, a
 * GC pause) delays about 40 requests at once; in 3 s (5,700 samples, 57 above p99) a single such stall
 * sets the p99, in 6 s (11,400 samples) it takes a few more. The workers table skips (c) (one download is one
 * connection, on one worker), the default-sysctl block runs (b) only (the sysctls are about ports, which
 * only new connections use), the first-byte block (b) and (d) only (measure.ts FigureKey).
 */
export function durationsFor(o: BenchOptions, kind: BlockKind): Durations {
  if (o.quick) return { keepAliveS: 3, newConnS: 2, latencyS: 2, warmupS: 1 };
  switch (kind) {
    case 'single':
      return { keepAliveS: 4, newConnS: 3, latencyS: 6, warmupS: 1 };
    case 'workers':
      return { keepAliveS: 3, newConnS: 2, latencyS: 3, warmupS: 1 };
    case 'sysctls':
      return { keepAliveS: 0, newConnS: 2, latencyS: 0, warmupS: 1 };
    case 'firstbyte':
      return { keepAliveS: 0, newConnS: 3, latencyS: 4, warmupS: 1 };
  }
}
