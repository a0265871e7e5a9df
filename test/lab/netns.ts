import { execFileSync, spawn as spawnChild } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ExecOptions, ExecResult, isAlive, processStartTime, run, runOk, sleep } from './util';

/**
 * Every namespace is named `vl<creator pid, base 36>-<4 random chars>-<node>`. The random part keeps
 * parallel runs apart; the pid lets sweepStale() tell a crashed run's leftovers from a live run's.
 */
export const NS_NAME_RE = /^vl([0-9a-z]+)-([0-9a-z]{4})-([a-z][a-z0-9]*)$/;
/** The lab's temp dir is `<tmpdir>/vipd-lab-<lab id>-XXXXXX`, so a sweep can find it from the id. */
const TMP_PREFIX = 'vipd-lab-';
const TMP_DIR_RE = /^vipd-lab-(vl[0-9a-z]+-[0-9a-z]{4})-/;
const MARKER = 'lab.json';

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Log file stem: `<lab dir>/logs/<node>.<name>.log`. Defaults to the program's basename. */
  name?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Default true: the process gets PR_SET_PDEATHSIG=SIGKILL (through setpriv, kept across `ip netns exec`),
   * so a test runner killed with SIGKILL cannot leave routers and etcd members running.
   */
  dieWithParent?: boolean;
}

/** A long-running program inside a namespace, with stdout and stderr going to one log file. */
export class LabProcess {
  readonly exited: Promise<ProcessExit>;
  private exit: ProcessExit | undefined;

  constructor(
    readonly node: string,
    readonly ns: string,
    readonly name: string,
    readonly argv: readonly string[],
    readonly pid: number,
    readonly logPath: string,
    exited: Promise<ProcessExit>,
  ) {
    this.exited = exited.then((e) => (this.exit = e));
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  get exitStatus(): ProcessExit | undefined {
    return this.exit;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (!this.running) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGTERM, then SIGKILL after timeoutMs. SIGCONT too, as a stopped process would never act on SIGTERM. */
  async stop(timeoutMs = 3000): Promise<ProcessExit> {
    if (!this.running) return this.exit as ProcessExit;
    this.kill('SIGTERM');
    this.kill('SIGCONT');
    const timer = sleep(timeoutMs).then(() => undefined);
    const res = await Promise.race([this.exited, timer]);
    if (res) return res;
    this.kill('SIGKILL');
    return this.exited;
  }

  readLog(): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** The last lines of the log, for assertion messages. */
  logTail(lines = 30): string {
    return this.readLog().split('\n').slice(-lines - 1).join('\n');
  }
}

export interface DestroyOptions {
  /** How long processes get to exit on SIGTERM before SIGKILL; default 300 ms. */
  graceMs?: number;
  /** Keep <lab dir>/logs (everything else, e.g. etcd data, is removed). Default: env VIPD_LAB_KEEP_LOGS=1. */
  keepLogs?: boolean;
}

export interface DestroyReport {
  namespaces: string[];
  /** Every pid the lab started or found in its namespaces, all verified dead. */
  pids: number[];
  /** Namespaces or pids still present after cleanup; empty unless the kernel refused. */
  leftovers: string[];
  keptDir?: string;
}

type Hook = () => void | Promise<void>;

const liveLabs = new Set<NetnsLab>();

/** A set of namespaces, links and processes that belong to one lab run, and their cleanup. */
export class NetnsLab {
  private readonly nsByNode = new Map<string, string>();
  private readonly procs: LabProcess[] = [];
  private readonly cleanupHooks: Hook[] = [];
  private destroying: Promise<DestroyReport> | undefined;
  private reaper: NodeJS.WritableStream | undefined;
  private logSeq = new Map<string, number>();

  private constructor(
    readonly id: string,
    readonly dir: string,
  ) {}

  static async create(): Promise<NetnsLab> {
    const id = `vl${process.pid.toString(36)}-${randomBytes(3).toString('hex').slice(0, 4)}`;
    const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), `${TMP_PREFIX}${id}-`));
    // FRR drops privileges to the frr user; it must be able to reach its own subdir below this one.
    await fs.promises.chmod(dir, 0o711);
    await fs.promises.mkdir(path.join(dir, 'logs'));
    await fs.promises.writeFile(
      path.join(dir, MARKER),
      JSON.stringify({ id, pid: process.pid, startTime: processStartTime(process.pid), created: new Date().toISOString() }),
    );
    const lab = new NetnsLab(id, dir);
    registerEmergencyCleanup(lab);
    lab.startReaper();
    return lab;
  }

  /**
   * Starts a detached watcher that holds the read end of a pipe from this process. If this process dies
   * in any way, SIGKILL included, the pipe closes and the watcher reaps the lab. pdeathsig alone is not
   * enough: FRR daemons switch to the frr user, and a credential change clears the parent-death signal.
   */
  private startReaper(): void {
    const script = path.join(__dirname, 'reaper.js');
    if (!fs.existsSync(script)) return;
    const child = spawnChild(process.execPath, [script, this.id, this.dir], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
    child.unref();
    const stdin = child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null;
    stdin?.on('error', () => undefined);
    stdin?.unref?.();
    this.reaper = stdin ?? undefined;
  }

  /** Tells the reaper the lab was cleaned up, so it exits without acting. */
  private releaseReaper(): void {
    this.reaper?.end('done\n');
    this.reaper = undefined;
  }

  nsName(node: string): string {
    const ns = this.nsByNode.get(node);
    if (!ns) throw new Error(`lab ${this.id} has no node "${node}"`);
    return ns;
  }

  get nodes(): string[] {
    return [...this.nsByNode.keys()];
  }

  get namespaces(): string[] {
    return [...this.nsByNode.values()];
  }

  get processes(): readonly LabProcess[] {
    return this.procs;
  }

  /** Runs after every process is dead and before the namespaces and the temp dir go. */
  onCleanup(hook: Hook): void {
    this.cleanupHooks.push(hook);
  }

  /**
   * Creates the namespace with lo up and applies sysctls. Call before any link is added: the
   * `default` sysctls (accept_dad=0) only apply to interfaces created afterwards.
   */
  async addNode(node: string, sysctls: Record<string, string> = {}): Promise<string> {
    if (!/^[a-z][a-z0-9]*$/.test(node)) throw new Error(`node name "${node}" must be [a-z][a-z0-9]*`);
    if (this.nsByNode.has(node)) throw new Error(`node "${node}" exists`);
    const ns = `${this.id}-${node}`;
    // Registered before it exists, so a failure half-way still gets it cleaned up, in creation order.
    this.nsByNode.set(node, ns);
    await runOk(['ip', 'netns', 'add', ns]);
    await runOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    await this.sysctl(node, sysctls);
    return ns;
  }

  async sysctl(node: string, kv: Record<string, string>): Promise<void> {
    const pairs = Object.entries(kv).map(([k, v]) => `${k}=${v}`);
    if (pairs.length === 0) return;
    await this.execOk(node, ['sysctl', '-q', '-w', ...pairs]);
  }

  /**
   * Both ends are created directly inside their namespaces (`netns` on both sides of the veth request),
   * so no interface ever appears in the host's root namespace, even for an instant.
   */
  async addVeth(aNode: string, aIf: string, bNode: string, bIf: string): Promise<void> {
    const a = this.nsName(aNode);
    const b = this.nsName(bNode);
    await runOk(['ip', 'link', 'add', aIf, 'netns', a, 'type', 'veth', 'peer', 'name', bIf, 'netns', b]);
    await runOk(['ip', '-n', a, 'link', 'set', aIf, 'up']);
    await runOk(['ip', '-n', b, 'link', 'set', bIf, 'up']);
  }

  async addAddress(node: string, ifname: string, cidr: string): Promise<void> {
    assertLabAddress(cidr);
    const fam = cidr.includes(':') ? '-6' : '-4';
    await runOk(['ip', '-n', this.nsName(node), fam, 'addr', 'add', cidr, 'dev', ifname]);
  }

  async addRoute(node: string, dst: string, via: string): Promise<void> {
    assertLabAddress(dst);
    assertLabAddress(via);
    const fam = dst.includes(':') ? '-6' : '-4';
    await runOk(['ip', '-n', this.nsName(node), fam, 'route', 'replace', dst, 'via', via]);
  }

  exec(node: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
    return execIn(this.nsName(node), argv, opts);
  }

  async execOk(node: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
    const r = await this.exec(node, argv, opts);
    if (r.code !== 0) throw new Error(`[${node}] ${argv.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    return r;
  }

  spawn(node: string, argv: readonly string[], opts: SpawnOptions = {}): LabProcess {
    if (this.destroying) throw new Error(`lab ${this.id} is being destroyed`);
    const ns = this.nsName(node);
    if (argv.length === 0) throw new Error('spawn: empty argv');
    const name = opts.name ?? path.basename(argv[0] as string);
    const logPath = path.join(this.dir, 'logs', `${node}.${name}.log`);
    const seq = (this.logSeq.get(logPath) ?? 0) + 1;
    this.logSeq.set(logPath, seq);
    const fd = fs.openSync(logPath, 'a');
    try {
      fs.writeSync(fd, `=== start #${seq} ${new Date().toISOString()} [${ns}] ${argv.join(' ')}\n`);
      const full = ['ip', 'netns', 'exec', ns, ...argv];
      const cmd = opts.dieWithParent === false ? full : ['setpriv', '--pdeathsig', 'KILL', '--', ...full];
      const child = spawnChild(cmd[0] as string, cmd.slice(1), {
        stdio: ['ignore', fd, fd],
        env: opts.env ?? process.env,
        cwd: opts.cwd ?? this.dir,
      });
      if (child.pid === undefined) throw new Error(`spawn failed: ${cmd.join(' ')}`);
      const exited = new Promise<ProcessExit>((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.once('error', () => resolve({ code: 127, signal: null }));
      });
      const proc = new LabProcess(node, ns, name, argv, child.pid, logPath, exited);
      this.procs.push(proc);
      return proc;
    } finally {
      fs.closeSync(fd);
    }
  }

  async nsPids(node: string): Promise<number[]> {
    return pidsInNamespace(this.nsName(node));
  }

  /**
   * Kills every process (ours by pid, then anything else found in our namespaces, such as the gobgpd a
   * vipd started), deletes the namespaces, runs the cleanup hooks and removes the temp dir. Idempotent.
   */
  destroy(opts: DestroyOptions = {}): Promise<DestroyReport> {
    this.destroying ??= this.doDestroy(opts);
    return this.destroying;
  }

  private async doDestroy(opts: DestroyOptions): Promise<DestroyReport> {
    // Short: this is teardown, not a shutdown test. A 3-member etcd losing quorum keeps its last
    // member stuck in SIGTERM (leadership transfer) for seconds, and nothing here needs a clean exit.
    const graceMs = opts.graceMs ?? 300;
    const keepLogs = opts.keepLogs ?? process.env.VIPD_LAB_KEEP_LOGS === '1';
    const pids = new Set<number>(this.procs.map((p) => p.pid));

    const running = this.procs.filter((p) => p.running);
    for (const p of running) {
      p.kill('SIGTERM');
      p.kill('SIGCONT');
    }
    await Promise.race([Promise.all(running.map((p) => p.exited)), sleep(graceMs)]);
    for (const p of running) p.kill('SIGKILL');
    await Promise.race([Promise.all(running.map((p) => p.exited)), sleep(5000)]);

    for (const ns of this.namespaces) for (const pid of await killNamespace(ns)) pids.add(pid);

    for (const hook of this.cleanupHooks) {
      try {
        await hook();
      } catch (err) {
        process.stderr.write(`lab ${this.id}: cleanup hook failed: ${(err as Error).message}\n`);
      }
    }

    const leftovers: string[] = [];
    for (const ns of this.namespaces) {
      const r = await run(['ip', 'netns', 'del', ns]);
      if (r.code !== 0 && !/No such file/.test(r.stderr)) leftovers.push(`namespace ${ns}: ${r.stderr.trim()}`);
    }
    const remaining = new Set(await listNamespaces());
    for (const ns of this.namespaces) if (remaining.has(ns)) leftovers.push(`namespace ${ns} still listed`);
    for (const pid of pids) if (isAlive(pid)) leftovers.push(`pid ${pid} alive`);

    let keptDir: string | undefined;
    if (keepLogs) {
      for (const entry of await fs.promises.readdir(this.dir)) {
        if (entry !== 'logs') await fs.promises.rm(path.join(this.dir, entry), { recursive: true, force: true });
      }
      keptDir = this.dir;
    } else {
      await fs.promises.rm(this.dir, { recursive: true, force: true });
    }
    liveLabs.delete(this);
    this.releaseReaper();
    return { namespaces: this.namespaces, pids: [...pids], leftovers, ...(keptDir ? { keptDir } : {}) };
  }

  /** Synchronous last resort for process exit and fatal signals; the async destroy() is the normal path. */
  emergencyCleanupSync(): void {
    for (const p of this.procs) p.kill('SIGKILL');
    for (const ns of this.namespaces) {
      try {
        const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* sweepStale() in the next run finishes what is left */
      }
    }
    liveLabs.delete(this);
  }
}

/** Lab addresses live in 198.18.0.0/15 and 2001:db8::/32 only; refuse anything else before it reaches ip. */
export function assertLabAddress(addrOrCidr: string): void {
  const addr = addrOrCidr.split('/')[0] as string;
  if (addr.includes(':')) {
    if (!/^2001:db8(:|$)/i.test(addr)) throw new Error(`${addrOrCidr} is outside 2001:db8::/32`);
    return;
  }
  const m = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(addr);
  if (!m || m[1] !== '198' || (m[2] !== '18' && m[2] !== '19')) throw new Error(`${addrOrCidr} is outside 198.18.0.0/15`);
}

/** Runs a command in any namespace by its name (NetnsLab.exec() takes the lab's node names instead). */
export function execIn(ns: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
  return run(['ip', 'netns', 'exec', ns, ...argv], opts);
}

export async function listNamespaces(): Promise<string[]> {
  const r = await runOk(['ip', 'netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

export async function pidsInNamespace(ns: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', ns]);
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** SIGKILLs everything in the namespace until it is empty (a dying parent may still fork), returns the pids. */
async function killNamespace(ns: string): Promise<number[]> {
  const seen: number[] = [];
  const deadline = Date.now() + 5000;
  for (;;) {
    const pids = (await pidsInNamespace(ns)).filter(isAlive);
    if (pids.length === 0 || Date.now() > deadline) return seen;
    for (const pid of pids) {
      seen.push(pid);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* raced with its exit */
      }
    }
    await sleep(50);
  }
}

interface Marker {
  id: string;
  pid: number;
  startTime?: string;
}

function readMarker(dir: string): Marker | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

/** True while the run that created lab `id` still exists; a reused pid is detected by its start time. */
function creatorAlive(id: string, dirs: Map<string, string[]>): boolean {
  const m = /^vl([0-9a-z]+)-/.exec(id);
  const pid = m ? parseInt(m[1] as string, 36) : NaN;
  if (!Number.isFinite(pid) || !isAlive(pid)) return false;
  for (const dir of dirs.get(id) ?? []) {
    const marker = readMarker(dir);
    if (marker && marker.pid === pid && marker.startTime !== undefined && marker.startTime !== processStartTime(pid)) return false;
  }
  return true;
}

export interface SweepReport {
  namespaces: string[];
  dirs: string[];
  killed: number[];
}

/**
 * Kills everything in lab `id`'s namespaces, deletes them, and removes its temp dirs (all of `dirs`, or
 * every dir but logs/ with keepLogs). Shared by sweepStale() and the per-lab reaper process.
 */
export async function reapLab(id: string, dirs: readonly string[], opts: { keepLogs?: boolean } = {}): Promise<SweepReport> {
  const report: SweepReport = { namespaces: [], dirs: [], killed: [] };
  const mine = (await listNamespaces()).filter((ns) => ns.startsWith(`${id}-`) && NS_NAME_RE.test(ns));
  for (const ns of mine) report.killed.push(...(await killNamespace(ns)));
  for (const ns of mine) {
    await run(['ip', 'netns', 'del', ns]);
    report.namespaces.push(ns);
  }
  for (const dir of dirs) {
    await removeFrrRuntimeLeftovers(dir);
    if (opts.keepLogs) {
      let entries: string[] = [];
      try {
        entries = await fs.promises.readdir(dir);
      } catch {
        /* already gone */
      }
      for (const e of entries) if (e !== 'logs') await fs.promises.rm(path.join(dir, e), { recursive: true, force: true });
    } else {
      await fs.promises.rm(dir, { recursive: true, force: true });
    }
    report.dirs.push(dir);
  }
  return report;
}

/**
 * Removes what crashed earlier runs left: namespaces matching the lab pattern whose creator process is
 * dead (their processes are killed first), and the matching temp dirs. A live run's lab is never touched.
 */
export async function sweepStale(): Promise<SweepReport> {
  const tmp = os.tmpdir();
  const dirsById = new Map<string, string[]>();
  for (const entry of await fs.promises.readdir(tmp)) {
    const m = TMP_DIR_RE.exec(entry);
    if (!m) continue;
    const list = dirsById.get(m[1] as string) ?? [];
    list.push(path.join(tmp, entry));
    dirsById.set(m[1] as string, list);
  }
  const ids = new Set<string>(dirsById.keys());
  for (const ns of await listNamespaces()) {
    const m = NS_NAME_RE.exec(ns);
    if (m) ids.add(`vl${m[1]}-${m[2]}`);
  }
  const report: SweepReport = { namespaces: [], dirs: [], killed: [] };
  for (const id of ids) {
    if (creatorAlive(id, dirsById)) continue;
    const r = await reapLab(id, dirsById.get(id) ?? []);
    report.namespaces.push(...r.namespaces);
    report.dirs.push(...r.dirs);
    report.killed.push(...r.killed);
  }
  return report;
}

/**
 * FRR daemons keep a crash-log dir /var/tmp/frr/<daemon>.<pid> that only a clean exit removes. Each FRR
 * of the lab (the ToR in <lab dir>/frr, node routers in <lab dir>/frr-<node>) records its daemons' pids
 * there, so only dirs of this lab's own daemons are removed.
 */
export async function removeFrrRuntimeLeftovers(labDir: string): Promise<void> {
  let dirs: string[];
  try {
    dirs = (await fs.promises.readdir(labDir)).filter((d) => d === 'frr' || d.startsWith('frr-'));
  } catch {
    return;
  }
  for (const dir of dirs) {
    const frrDir = path.join(labDir, dir);
    let entries: string[];
    try {
      entries = await fs.promises.readdir(frrDir);
    } catch {
      continue;
    }
    for (const entry of entries) {
      const m = /^(zebra|bgpd|bfdd|staticd)\.pids$/.exec(entry);
      if (!m) continue;
      const pids = (await fs.promises.readFile(path.join(frrDir, entry), 'utf8')).split(/\s+/).filter(Boolean);
      for (const pid of pids) {
        if (isAlive(Number(pid))) continue;
        await fs.promises.rm(`/var/tmp/frr/${m[1]}.${pid}`, { recursive: true, force: true });
      }
    }
  }
}

let handlersInstalled = false;

function registerEmergencyCleanup(lab: NetnsLab): void {
  liveLabs.add(lab);
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const l of [...liveLabs]) l.emergencyCleanupSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const l of [...liveLabs]) l.emergencyCleanupSync();
      // Re-raise with the default action so the exit status still says which signal ended the run.
      process.kill(process.pid, sig);
    });
  }
}
