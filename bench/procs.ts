import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { run, sleep } from './util';

/**
 * Long-running programs of the benchmark (backend, proxies, idle client) and what the benchmark reads
 * about them from /proc. Every process started here is registered, so that one call (stopAll) ends
 * exactly the processes this run started, by pid, whatever went wrong.
 */

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** CPU list for taskset ("0", "1", "0,1"). */
  cores: string;
  /** Soft RLIMIT_NOFILE, raised in the spawning shell (`ulimit -n`): the idle-connection test needs ~2 fds per connection. */
  nofile?: number;
  /** stdout and stderr go here. */
  logFile: string;
  /** Extra environment for the program. */
  env?: NodeJS.ProcessEnv;
  /** Keep stdout as a pipe (for the idle client's "ready" lines) instead of the log file. */
  pipeStdout?: boolean;
  /** Network namespace to run in (`ip netns exec`, which execs: the pid stays the program's); default: the benchmark's own (the client's). */
  netns?: string;
}

const live = new Set<Managed>();

export class Managed {
  readonly exited: Promise<ProcessExit>;
  private exit: ProcessExit | undefined;

  constructor(
    readonly name: string,
    readonly pid: number,
    readonly logFile: string,
    exited: Promise<ProcessExit>,
    readonly stdout: NodeJS.ReadableStream | null,
  ) {
    this.exited = exited.then((e) => {
      this.exit = e;
      live.delete(this);
      return e;
    });
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  get exitStatus(): ProcessExit | undefined {
    return this.exit;
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      /* already gone */
    }
  }

  /** SIGTERM, then SIGKILL after graceMs. Any descendants left behind (nginx workers) are killed by pid too. */
  async stop(graceMs = 5000): Promise<ProcessExit> {
    const descendants = descendantPids(this.pid);
    if (this.running) {
      this.signal('SIGTERM');
      const timedOut = await Promise.race([this.exited.then(() => false), sleep(graceMs).then(() => true)]);
      if (timedOut) this.signal('SIGKILL');
    }
    const exit = await this.exited;
    for (const pid of descendants) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* exited with its parent, as it should */
      }
    }
    return exit;
  }

  logTail(lines = 20): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

/**
 * Starts `argv` pinned with taskset, with a raised fd limit. The shell `exec`s the program, so the pid
 * we hold is the program's own (RSS and CPU are read from it, and signals reach it directly).
 */
export function startProcess(name: string, argv: readonly string[], opts: StartOptions): Managed {
  const out = fs.openSync(opts.logFile, 'a');
  const script = 'ulimit -n "$1" || exit 97; shift; exec taskset -c "$@"';
  const shell = ['bash', '-c', script, 'bash', String(opts.nofile ?? 4096), opts.cores, ...argv];
  const [cmd, ...args] = opts.netns === undefined ? shell : ['ip', 'netns', 'exec', opts.netns, ...shell];
  const child = spawn(cmd!, args, {
    stdio: ['ignore', opts.pipeStdout ? 'pipe' : out, out],
    env: { ...process.env, ...opts.env },
  });
  fs.closeSync(out);
  const exited = new Promise<ProcessExit>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', () => resolve({ code: 127, signal: null }));
  });
  const managed = new Managed(name, child.pid ?? -1, opts.logFile, exited, child.stdout);
  live.add(managed);
  return managed;
}

/** Stops every process this run started and still running, in reverse start order. */
export async function stopAll(graceMs = 2000): Promise<void> {
  const all = [...live].reverse();
  await Promise.all(all.map((p) => p.stop(graceMs)));
}

export function liveProcesses(): readonly Managed[] {
  return [...live];
}

// /proc readers. All figures are for a process tree: nginx's workers and (when implemented) vipd's
// worker processes are children of the pid we started.

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime, in clock ticks, all threads included. */
  cpuTicks: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { pid, ppid: Number(rest[1]), cpuTicks: Number(rest[11]) + Number(rest[12]) };
}

function allStats(): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const s = readStat(Number(entry));
    if (s) stats.push(s);
  }
  return stats;
}

export function descendantPids(root: number): number[] {
  const stats = allStats();
  const found: number[] = [];
  let frontier = [root];
  while (frontier.length > 0) {
    const next = stats.filter((s) => frontier.includes(s.ppid)).map((s) => s.pid);
    found.push(...next);
    frontier = next;
  }
  return found;
}

export function treePids(root: number): number[] {
  return [root, ...descendantPids(root)];
}

/** Resident set size of the tree in KiB (VmRSS of each process, summed). */
export function treeRssKiB(root: number): number {
  let total = 0;
  for (const pid of treePids(root)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) total += Number(m[1]);
    } catch {
      /* exited between listing and reading */
    }
  }
  return total;
}

/** CPU time used so far by the tree, in seconds. */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of treePids(root)) ticks += readStat(pid)?.cpuTicks ?? 0;
  return ticks / clockTicks;
}

let clockTicks = 100;
/** USER_HZ; 100 on every Linux we run on, but asked once rather than assumed. */
export async function initClockTicks(): Promise<void> {
  const r = await run(['getconf', 'CLK_TCK']);
  const n = Number(r.stdout.trim());
  if (r.code === 0 && Number.isFinite(n) && n > 0) clockTicks = n;
}

export interface CpuUse {
  seconds: number;
  /** Percent of one core over the interval. */
  percent: number;
  /** Per process of the tree, root first, then by CPU: shows whether worker processes shared the load. */
  perProcess: { pid: number; percent: number }[];
}

/** CPU used by a process tree over an interval: start before the load, stop() after. */
export function cpuMeter(root: number): { stop(): CpuUse } {
  const perPid = () => new Map(treePids(root).map((pid) => [pid, (readStat(pid)?.cpuTicks ?? 0) / clockTicks] as const));
  const before = perPid();
  const t0 = process.hrtime.bigint();
  return {
    stop() {
      const after = perPid();
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const pct = (sec: number) => (wall > 0 ? (100 * sec) / wall : 0);
      // A process that exited during the interval is missing from `after`; its CPU is lost to this
      // figure (a proxy's workers live as long as the proxy, so this does not happen in practice).
      const perProcess = [...after].map(([pid, sec]) => ({ pid, percent: pct(sec - (before.get(pid) ?? 0)) }));
      perProcess.sort((a, b) => (a.pid === root ? -1 : b.pid === root ? 1 : b.percent - a.percent));
      const seconds = [...after].reduce((sum, [pid, sec]) => sum + sec - (before.get(pid) ?? 0), 0);
      return { seconds, percent: pct(seconds), perProcess };
    },
  };
}

/** The machine's CPU counters from /proc/stat, in seconds. */
function machineCpuSeconds(): { busy: number; steal: number } {
  const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy is user and kernel code of any process (irq
  // and softirq excluded); steal is time the hypervisor ran something else while this VM wanted a CPU.
  const [user = 0, nice = 0, system = 0, , , , , steal = 0] = cpu;
  return { busy: (user + nice + system) / clockTicks, steal: steal / clockTicks };
}

/** This process's CPU plus that of every child it has reaped (wrk, curl, stopped proxies and all their children). */
function ownCpuSeconds(): number {
  const text = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
  // Fields 14-17 of stat (utime, stime, cutime, cstime) are 11-14 here, counted from field 3.
  return (f[11]! + f[12]! + f[13]! + f[14]!) / clockTicks;
}

/** What else took CPU from the benchmark during one block, in percent of one core. */
export interface Interference {
  /** Processes that are not the benchmark's (see interferenceMeter). */
  foreignPercent: number;
  /** The hypervisor: time this virtual machine wanted a CPU and the host ran something else. */
  stealPercent: number;
}

/**
 * How much other work competed with the benchmark over an interval. The benchmark shares its machine
 * with whatever else runs there, and a compile or test run on the same cores moves every figure; on a
 * virtual machine the host's other guests do the same, invisibly to `top`, and show only as steal
 * time, which stalls every process of this machine at random moments (p99 first). Start it before a
 * proxy is started and stop it after that proxy has exited, so the proxy's CPU is counted as the
 * benchmark's; `live` are long-running children still alive at stop() (the backend).
 */
export function interferenceMeter(live: readonly number[]): { stop(): Interference } {
  const ownLive = () => live.reduce((sum, pid) => sum + treeCpuSeconds(pid), 0);
  const machine0 = machineCpuSeconds();
  const own0 = ownCpuSeconds() + ownLive();
  const t0 = process.hrtime.bigint();
  return {
    stop() {
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const machine = machineCpuSeconds();
      const foreign = machine.busy - machine0.busy - (ownCpuSeconds() + ownLive() - own0);
      const percent = (seconds: number) => (wall > 0 ? Math.max(0, (100 * seconds) / wall) : 0);
      return { foreignPercent: percent(foreign), stealPercent: percent(machine.steal - machine0.steal) };
    },
  };
}

/**
 * Softirq time over an interval, in percent of one core: the whole machine's and per core (cpu0,
 * cpu1, ...). Packet forwarding and the kernel's NAT run there (and the receive side of every TCP
 * connection): for the kernel data path it is the only place its cost shows, since no process of its
 * own carries the traffic, and the per-core split shows which core did the work.
 */
export function softirqMeter(): { stop(): { total: number; perCore: number[] } } {
  const read = () =>
    fs
      .readFileSync('/proc/stat', 'utf8')
      .split('\n')
      .filter((l) => /^cpu\d* /.test(l))
      .map((l) => Number(l.trim().split(/\s+/)[7] ?? 0) / clockTicks);
  const s0 = read();
  const t0 = process.hrtime.bigint();
  return {
    stop() {
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const s1 = read();
      const pct = (i: number) => (wall > 0 ? (100 * ((s1[i] ?? 0) - (s0[i] ?? 0))) / wall : 0);
      return { total: pct(0), perCore: s1.slice(1).map((_, i) => pct(i + 1)) };
    },
  };
}
