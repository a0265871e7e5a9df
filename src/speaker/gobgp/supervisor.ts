import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Backoff } from '../../lib/backoff';
import type { Clock, TimerHandle } from '../../lib/clock';
import { VipdError, errorMessage } from '../../lib/errors';
import { ListenerSet } from '../../lib/listener-set';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import { StateMachine } from '../../lib/transition';
import { isLoopbackAddress } from '../../net/address';
import { renderGobgpdConfig, type GobgpdConfig } from './gobgpd-config';
import { checkSearchableBy, lookupGobgpdUser, setprivArgs, type GobgpdIdentity } from './gobgpd-user';
import { HangWatchdog } from './hang-watchdog';
import { API_SOCKET_DIR, privateDirPrefix, removeStaleDirs } from './runtime-dir';

/**
 * Runs gobgpd as vipd's child. gobgpd forgets API paths when it exits and keeps them while it lives,
 * so it must never outlive vipd: it runs under `setpriv --pdeathsig TERM`, which makes the kernel
 * send it SIGTERM (graceful: it sends a Cease to its peers) when vipd dies, even by SIGKILL.
 * It is restarted with back-off when it exits on its own. Its configuration, API socket and log live
 * in a private mkdtemp directory, so that several vipd instances (one per network namespace) can
 * share a host. The directory's name carries vipd's pid: at start, directories of vipd instances that
 * are gone (killed by SIGKILL, which cannot clean up) are removed.
 *
 * gobgpd writes its log to a file that the supervisor tails, not to a pipe: when vipd dies, a pipe
 * loses its only reader, and gobgpd's "stopping gobgpd server" line then kills it with SIGPIPE
 * before it can send the Cease (Go dies on EPIPE on stdout even with SIGPIPE ignored). Measured: the
 * router saw "read-failed" instead of "cease" until this was changed.
 *
 * gobgpd runs as an unprivileged user (gobgpd-user.ts) with no capabilities. The private directory stays
 * root's (0711) and so do the files vipd opens as root (the log): a directory gobgpd's user could write
 * would let any process of that user swap gobgpd.log for a symlink to a file root would then append to.
 * gobgpd reads gobgpd.toml (root:gobgpd's group, 0640: it can read, not change it) and creates its API
 * socket in `api/`, the one directory it owns (0700): root (vipd) and gobgpd's user reach the API, nobody
 * else.
 */

export interface GobgpdSupervisorOptions {
  readonly config: GobgpdConfig;
  /**
   * API address as the client dials it: a loopback "127.0.0.1:PORT" / "[::1]:PORT" or
   * "unix:/absolute/path". Default: a unix socket inside the private directory (gobgpd's user and root only).
   */
  readonly api?: string;
  /** A TCP api is refused unless this is set: gobgpd's gRPC API is unauthenticated. */
  readonly allowTcpApi?: boolean;
  /** The user gobgpd runs as (default `nobody`); must exist. */
  readonly user?: string;
  readonly gobgpdPath?: string;
  readonly setprivPath?: string;
  /** Run gobgpd under another command that execs it, e.g. ["ip", "netns", "exec", "blue"]. */
  readonly commandPrefix?: readonly string[];
  readonly restartBackoff?: { readonly initialMs: number; readonly maxMs: number };
  /** After a process has stayed up this long, the next restart starts from the initial delay. */
  readonly stableAfterMs?: number;
  /** SIGTERM, then SIGKILL after this long. Default 3000. */
  readonly stopTimeoutMs?: number;
  /**
   * Parent of the private directory; default os.tmpdir(). A vipd killed by SIGKILL cannot remove
   * its directory; the next start removes it, and a per-service runtime directory (systemd
   * RuntimeDirectory=) is a better home anyway.
   */
  readonly runtimeDir?: string;
  /**
   * With vipd's event loop silent this long (SIGSTOP, a blocked loop), a watchdog outside it stops
   * gobgpd so that the routes are withdrawn (hang-watchdog.ts). Undefined: no watchdog.
   */
  readonly hangTimeoutMs?: number;
  /**
   * Graceful restart: a respawned gobgpd starts with no neighbors, and gets them (a rewrite of its file and
   * SIGHUP) only from releaseNeighbors(), which vipd calls once its paths are back in gobgpd's RIB, or
   * after this many ms at the latest. A new session's first UPDATEs then carry vipd's paths before the
   * End-of-RIB, which is where the ToR (graceful-restart helper) flushes what is still stale. Undefined:
   * a respawned gobgpd starts with its neighbors (no graceful restart).
   */
  readonly holdNeighborsOnRestartMs?: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export type SupervisorEvent =
  | { readonly type: 'started'; readonly pid: number; readonly restart: boolean }
  | { readonly type: 'exited'; readonly pid: number; readonly code: number | null; readonly signal: string | null; readonly expected: boolean };

type SupervisorState = 'new' | 'running' | 'closing' | 'closed';

const NOT_CLOSED: readonly SupervisorState[] = ['new', 'running', 'closing'];


const GOBGPD_LEVELS: Record<string, 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  trace: 'debug',
  debug: 'debug',
  info: 'info',
  warning: 'warn',
  error: 'error',
  fatal: 'fatal',
  panic: 'fatal',
};

function processError(message: string, cause?: unknown): VipdError {
  return new VipdError('VIPD_ERR_GOBGP_PROCESS', message, cause === undefined ? undefined : { cause });
}

/**
 * gobgpd's --api-hosts syntax for a client address; refuses anything reachable from outside the host,
 * and a TCP address at all unless `allowTcp` (any local user could drive an unauthenticated API).
 */
export function gobgpdApiHost(address: string, allowTcp = true): string {
  if (address.startsWith('unix:')) {
    const socketPath = address.replace(/^unix:(\/\/)?/, '');
    if (!path.isAbsolute(socketPath)) throw processError(`api ${address}: unix socket path must be absolute`);
    // sun_path holds 108 bytes; past that gobgpd only logs "listen failed" and runs without an API.
    if (Buffer.byteLength(socketPath) > 107) throw processError(`api ${address}: unix socket path longer than 107 bytes`);
    return `unix://${socketPath}`;
  }
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  const host = m?.[1] ?? '';
  const loopback = isLoopbackAddress(host);
  if (!m || !loopback) throw processError(`api ${address}: must be a loopback address or a unix socket; gobgpd's API has no authentication`);
  if (!allowTcp) throw processError(`api ${address}: a TCP API lets any local user drive gobgpd (its gRPC API is unauthenticated); use a unix socket or set allowTcpApi`);
  return address;
}

function unixSocketPath(address: string): string | undefined {
  return address.startsWith('unix:') ? address.replace(/^unix:(\/\/)?/, '') : undefined;
}

export class GobgpdSupervisor {
  private readonly machine: StateMachine<SupervisorState>;
  private identity: GobgpdIdentity | undefined;
  private destroying: Promise<void> | undefined;
  private dir: string | undefined;
  private configFile = '';
  /** What gobgpd.toml holds now (reloadNeighbors replaces the neighbors). */
  private currentConfig: GobgpdConfig;
  private api = '';
  private child: ChildProcess | undefined;
  private childStartedAt = 0;
  /** The watchdog of the running gobgpd, if hangTimeoutMs is set. */
  private watchdog: HangWatchdog | undefined;
  private restartTimer: TimerHandle | undefined;
  /** A respawned gobgpd runs without its neighbors until releaseNeighbors() (holdNeighborsOnRestartMs). */
  private held = false;
  /** Once a held gobgpd has its neighbors, each file it reads marks them restarting (see installConfig). */
  private restarting = false;
  private heldTimer: TimerHandle | undefined;
  private logTail: GobgpdLogTail | undefined;
  private closing: Promise<void> | undefined;
  private readonly exitWaiters: Array<() => void> = [];
  private readonly listeners: ListenerSet<SupervisorEvent>;
  private readonly backoff: Backoff;
  private readonly log: Logger;
  private readonly daemonLog: Logger;

  constructor(private readonly options: GobgpdSupervisorOptions) {
    this.currentConfig = options.config;
    const b = options.restartBackoff ?? { initialMs: 500, maxMs: 30_000 };
    this.backoff = new Backoff(b.initialMs, b.maxMs);
    this.log = options.logger;
    this.daemonLog = options.logger.child({ component: 'gobgpd' });
    this.machine = new StateMachine<SupervisorState>('new', { machine: 'supervisor', logger: options.logger, level: 'info' });
    this.listeners = new ListenerSet((err) => this.log.error({ event: 'daemon', err: errorMessage(err) }, 'supervisor listener failed'));
  }

  private get state(): SupervisorState {
    return this.machine.state;
  }

  /** The user gobgpd runs as, once start() has looked it up. */
  get user(): GobgpdIdentity | undefined {
    return this.identity;
  }

  /** Where the client reaches the API. Valid once start() has resolved. */
  get apiAddress(): string {
    return this.api;
  }

  /** pid of the running gobgpd, if any. */
  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  /** The neighbors in gobgpd's config now (the last reload's, or the start's). */
  get neighbors(): GobgpdConfig['neighbors'] {
    return this.currentConfig.neighbors;
  }

  /** True while a respawned gobgpd runs without its neighbors, waiting for releaseNeighbors(). */
  get neighborsHeld(): boolean {
    return this.held;
  }

  /** Directory holding gobgpd.toml (and the API socket by default); removed on close. */
  get directory(): string | undefined {
    return this.dir;
  }

  onEvent(listener: (event: SupervisorEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Writes the config, checks it with `gobgpd --dry-run`, and spawns gobgpd. */
  async start(): Promise<void> {
    if (!this.machine.transition(['new'], 'running', 'start')) throw processError(`supervisor already ${this.state}`);
    try {
      const config = renderGobgpdConfig(this.currentConfig);
      if (this.options.api !== undefined) gobgpdApiHost(this.options.api, this.options.allowTcpApi ?? false);
      const identity = await lookupGobgpdUser(this.options.user ?? 'nobody');
      this.identity = identity;
      // Fails here, before anything is spawned, when vipd cannot switch to that user.
      this.setprivOptions();
      const runtimeDir = this.options.runtimeDir ?? os.tmpdir();
      await checkSearchableBy(runtimeDir, identity);
      await this.removeStaleDirs(runtimeDir);
      this.dir = await fs.promises.mkdtemp(privateDirPrefix(runtimeDir));
      this.configFile = path.join(this.dir, 'gobgpd.toml');
      const socketDir = path.join(this.dir, API_SOCKET_DIR);
      // The config may hold MD5 passwords: nobody but root and gobgpd's group reads it.
      await fs.promises.writeFile(this.configFile, config, { mode: 0o600 });
      await fs.promises.mkdir(socketDir, { mode: 0o700 });
      if (process.geteuid?.() === 0 && identity.uid !== 0) {
        await fs.promises.chown(this.configFile, 0, identity.gid);
        await fs.promises.chmod(this.configFile, 0o640);
        await fs.promises.chown(socketDir, identity.uid, identity.gid);
        // Searchable, not listable, so that gobgpd can reach its config and socket directory.
        await fs.promises.chmod(this.dir, 0o711);
      }
      this.api = this.options.api ?? `unix:${path.join(socketDir, 'api.sock')}`;
      gobgpdApiHost(this.api, this.options.allowTcpApi ?? false);
      this.logTail = new GobgpdLogTail(path.join(this.dir, 'gobgpd.log'), this.daemonLog, this.options.clock);
      await this.dryRun();
      await this.spawnDaemon(false);
    } catch (err) {
      await this.destroy();
      throw err instanceof VipdError ? err : processError(`cannot start gobgpd: ${errorMessage(err)}`, err);
    }
  }

  /**
   * SIGTERM (gobgpd sends a Cease to its peers), SIGKILL after stopTimeoutMs. Idempotent; resolves once
   * gobgpd has exited and its directory is gone.
   */
  close(): Promise<void> {
    this.closing ??= this.stop();
    return this.closing;
  }

  /** SIGKILL at once (no Cease: the peers notice by hold timer). Idempotent; resolves once gobgpd has exited. */
  destroy(): Promise<void> {
    if (this.destroying) return this.destroying;
    const child = this.pid !== undefined ? this.child : undefined;
    const exited = this.waitForExit();
    if (!this.machine.transition(NOT_CLOSED, 'closed', 'destroy')) return (this.destroying = this.closing ?? Promise.resolve());
    this.restartTimer?.cancel();
    this.cancelHold();
    this.stopWatchdog();
    child?.kill('SIGKILL');
    this.logTail?.stop();
    this.destroying = exited.then(() => this.removeDirectory());
    return this.destroying;
  }

  private async stop(): Promise<void> {
    if (!this.machine.transition(['new', 'running'], 'closing', 'close')) return this.destroying;
    this.restartTimer?.cancel();
    this.cancelHold();
    const child = this.child;
    this.stopWatchdog();
    if (child && this.pid !== undefined) {
      const exited = this.waitForExit();
      child.kill('SIGTERM');
      const timeoutMs = this.options.stopTimeoutMs ?? 3000;
      let timer: TimerHandle | undefined;
      const timedOut = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => (timer = this.options.clock.setTimeout(() => resolve(true), timeoutMs))),
      ]);
      timer?.cancel();
      if (timedOut) {
        this.log.warn({ event: 'daemon', op: 'kill', gobgpdPid: child.pid, timeoutMs }, 'gobgpd ignored SIGTERM; sending SIGKILL');
        child.kill('SIGKILL');
        await exited;
      }
    }
    // destroy() may have run meanwhile; it cleans up itself.
    if (!this.machine.transition(['closing'], 'closed', 'gobgpd stopped')) return;
    await this.logTail?.drain();
    this.logTail?.stop();
    this.removeDirectory();
  }

  private waitForExit(): Promise<void> {
    if (this.pid === undefined) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  /** Directories that vipd instances killed by SIGKILL left behind (runtime-dir.ts); never fatal. */
  private async removeStaleDirs(runtimeDir: string): Promise<void> {
    try {
      for (const stale of await removeStaleDirs(runtimeDir)) {
        this.log.info({ event: 'daemon', op: 'removeStale', dir: stale.dir, ownerPid: stale.ownerPid }, 'removed the gobgpd directory of a vipd that is gone');
      }
    } catch (err) {
      this.log.warn({ event: 'daemon', op: 'removeStale', dir: runtimeDir, err: errorMessage(err) }, 'cannot remove stale gobgpd directories');
    }
  }

  private removeDirectory(): void {
    if (!this.dir) return;
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch (err) {
      this.log.warn({ event: 'daemon', dir: this.dir, err: errorMessage(err) }, 'cannot remove gobgpd directory');
    }
  }

  /** Unprivileged user, no capabilities (CAP_NET_BIND_SERVICE only for a BGP port below 1024), parent-death signal. */
  private setprivOptions(): string[] {
    const port = this.options.config.listenPort;
    return setprivArgs({ identity: this.identity!, vipdUid: process.geteuid?.() ?? 0, bindPrivilegedPort: port >= 1 && port <= 1023 });
  }

  private gobgpdArgs(): string[] {
    return ['-f', this.configFile, '-t', 'toml', '--api-hosts', gobgpdApiHost(this.api), '--pprof-disable'];
  }

  /**
   * Reload: gobgpd's neighbors become `neighbors`. The new gobgpd.toml is checked with --dry-run beside
   * the old one, renamed over it (same owner and mode), and gobgpd is sent SIGHUP: gobgpd diffs its
   * neighbors itself and calls AddPeer, DeletePeer and UpdatePeer for the changed ones only, so an
   * unchanged session stays up. A respawned gobgpd reads the same file. Rejects (and changes nothing)
   * when gobgpd refuses the file or is not running.
   */
  async reloadNeighbors(neighbors: GobgpdConfig['neighbors']): Promise<void> {
    const pid = this.pid;
    if (!this.machine.is('running') || pid === undefined || this.configFile === '') throw processError('gobgpd is not running: its peers cannot change now');
    const config = { ...this.currentConfig, neighbors };
    if (this.held) {
      // gobgpd runs without neighbors for now: check the file, and let releaseNeighbors() install it.
      await this.installConfig(config, { check: true, install: false });
      this.currentConfig = config;
      this.log.info({ event: 'daemon', op: 'reloadNeighbors', neighbors: neighbors.map((n) => n.address), held: true }, 'new neighbors kept for gobgpd until vipd has re-added its paths');
      return;
    }
    await this.installConfig(config, { check: true, install: true });
    this.currentConfig = config;
    process.kill(pid, 'SIGHUP');
    this.log.info({ event: 'daemon', op: 'reloadNeighbors', neighbors: neighbors.map((n) => n.address) }, 'gobgpd.toml rewritten and gobgpd told (SIGHUP): it applies changed neighbors only');
  }

  /**
   * Ends the hold of a respawned gobgpd (holdNeighborsOnRestartMs): gobgpd.toml gets the neighbors back
   * and gobgpd is told (SIGHUP), which adds them exactly as at a start. Call it once vipd's paths are in
   * gobgpd's RIB: gobgpd had no session before, so every session's first UPDATEs carry them, then
   * End-of-RIB. A no-op when nothing is held. SIGHUP is safe here: gobgpd installs its handler before it
   * reads its file, and it answers vipd's AddPath only after that.
   */
  async releaseNeighbors(reason: string): Promise<void> {
    if (!this.held) return;
    this.cancelHold();
    const pid = this.pid;
    if (!this.machine.is('running') || pid === undefined) return;
    this.restarting = true;
    try {
      await this.installConfig(this.currentConfig, { check: false, install: true });
    } catch (err) {
      // Still held: the caller's next reconciliation pass tries again.
      this.held = true;
      throw err;
    }
    if (this.pid !== pid) return;
    process.kill(pid, 'SIGHUP');
    this.log.info({ event: 'daemon', op: 'releaseNeighbors', reason, neighbors: this.currentConfig.neighbors.map((n) => n.address), heldMs: Math.round(this.options.clock.now() - this.childStartedAt) }, 'gobgpd given its neighbors (SIGHUP)');
  }

  private cancelHold(): void {
    this.held = false;
    this.heldTimer?.cancel();
    this.heldTimer = undefined;
  }

  /** Writes `config` beside gobgpd.toml (same owner and mode), optionally checks it, and renames it over. */
  private async installConfig(config: GobgpdConfig, o: { check: boolean; install: boolean }): Promise<void> {
    const next = `${this.configFile}.next`;
    // A respawned gobgpd is the restarting speaker (GobgpdNeighbor.localRestarting). Every later file of
    // the same process says so too, so that a reload does not see that as a change of its neighbors.
    const written = this.restarting ? { ...config, neighbors: config.neighbors.map((n) => (n.gracefulRestart ? { ...n, localRestarting: true } : n)) } : config;
    await fs.promises.writeFile(next, renderGobgpdConfig(written), { mode: 0o600 });
    try {
      if (process.geteuid?.() === 0 && this.identity !== undefined && this.identity.uid !== 0) {
        await fs.promises.chown(next, 0, this.identity.gid);
        await fs.promises.chmod(next, 0o640);
      }
      if (o.check) await this.dryRun(next);
      if (o.install) await fs.promises.rename(next, this.configFile);
    } finally {
      await fs.promises.rm(next, { force: true });
    }
  }

  /** Catches config errors before the first spawn instead of in a restart loop. */
  private dryRun(file = this.configFile): Promise<void> {
    const gobgpd = this.options.gobgpdPath ?? 'gobgpd';
    return new Promise((resolve, reject) => {
      const child = spawn(gobgpd, ['-f', file, '-t', 'toml', '--dry-run'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      child.on('error', (err) => reject(processError(`cannot run ${gobgpd}: ${err.message}`, err)));
      child.on('close', (code) => {
        if (code === 0) resolve();
        else reject(processError(`gobgpd rejects its generated config (exit ${code}): ${output.trim().slice(-2000)}`));
      });
    });
  }

  private spawnDaemon(restart: boolean): Promise<void> {
    const socketPath = unixSocketPath(this.api);
    // A SIGKILLed gobgpd leaves its socket behind, and a new one then runs without any API.
    if (socketPath) fs.rmSync(socketPath, { force: true });
    const prefix = this.options.commandPrefix ?? [];
    const argv = [
      ...prefix,
      this.options.setprivPath ?? 'setpriv',
      ...this.setprivOptions(),
      '--',
      this.options.gobgpdPath ?? 'gobgpd',
      ...this.gobgpdArgs(),
    ];
    return new Promise((resolve, reject) => {
      const logFd = fs.openSync(this.logTail!.file, 'a', 0o600);
      let child: ChildProcess;
      try {
        child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', logFd, logFd] });
      } finally {
        fs.closeSync(logFd);
      }
      child.once('error', (err) => {
        // Only spawn failures arrive here before 'spawn'; kill() failures after are not fatal.
        if (child.pid === undefined) reject(processError(`cannot spawn ${argv[0]}: ${err.message}`, err));
        else this.log.warn({ event: 'daemon', err: err.message }, 'gobgpd process error');
      });
      child.once('spawn', () => {
        this.child = child;
        this.childStartedAt = this.options.clock.now();
        const pid = child.pid!;
        this.logTail!.follow(pid);
        child.once('exit', (code, signal) => this.onExit(child, code, signal));
        this.startWatchdog(pid);
        this.log.info({ event: 'daemon', op: restart ? 'restart' : 'start', gobgpdPid: pid, api: this.api, argv }, 'gobgpd started');
        this.emit({ type: 'started', pid, restart });
        resolve();
      });
    });
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    this.stopWatchdog();
    const pid = child.pid!;
    const expected = this.state !== 'running';
    const upMs = this.options.clock.now() - this.childStartedAt;
    // Its last words (a Go panic, a fatal config error) explain the exit: log them first.
    void this.logTail?.drain();
    for (const w of this.exitWaiters.splice(0)) w();
    this.emit({ type: 'exited', pid, code, signal, expected });
    if (expected) {
      this.log.info({ event: 'daemon', op: 'stop', gobgpdPid: pid, code, signal }, 'gobgpd stopped');
      return;
    }
    if (upMs >= (this.options.stableAfterMs ?? 30_000)) this.backoff.reset();
    this.log.error({ event: 'daemon', op: 'exit', gobgpdPid: pid, code, signal, upMs: Math.round(upMs) }, 'gobgpd exited unexpectedly; restarting');
    this.scheduleRestart();
  }

  private startWatchdog(gobgpdPid: number): void {
    const timeoutMs = this.options.hangTimeoutMs;
    if (timeoutMs === undefined) return;
    const stderrFd = fs.openSync(this.logTail!.file, 'a', 0o600);
    try {
      this.watchdog = new HangWatchdog(gobgpdPid, timeoutMs, stderrFd, (err) =>
        this.log.warn({ event: 'daemon', op: 'watchdog', err: err.message }, 'the hang watchdog failed: a hung vipd would keep its routes'),
      );
    } finally {
      fs.closeSync(stderrFd);
    }
    this.log.debug({ event: 'daemon', op: 'watchdog', gobgpdPid, watchdogPid: this.watchdog.pid, timeoutMs }, 'hang watchdog started');
  }

  private stopWatchdog(): void {
    this.watchdog?.stop();
    this.watchdog = undefined;
  }

  private scheduleRestart(): void {
    const delayMs = this.backoff.next();
    this.log.info({ event: 'daemon', op: 'restart', delayMs }, 'gobgpd restart scheduled');
    this.restartTimer = this.options.clock.setTimeout(() => {
      this.restartTimer = undefined;
      if (this.state !== 'running') return;
      this.options.metrics.daemonRestarts.inc();
      this.respawn().catch((err: unknown) => {
        this.log.error({ event: 'daemon', op: 'restart', err: errorMessage(err) }, 'cannot respawn gobgpd');
        if (this.state === 'running') this.scheduleRestart();
      });
    }, delayMs);
  }

  private async respawn(): Promise<void> {
    const holdMs = this.options.holdNeighborsOnRestartMs;
    if (holdMs !== undefined) {
      this.cancelHold();
      this.restarting = false;
      await this.installConfig({ ...this.currentConfig, neighbors: [] }, { check: false, install: true });
      if (this.state !== 'running') return;
      this.held = true;
      this.log.info({ event: 'daemon', op: 'holdNeighbors', fallbackMs: holdMs }, 'graceful restart: gobgpd starts without neighbors until vipd has re-added its paths');
      this.heldTimer = this.options.clock.setTimeout(() => {
        this.heldTimer = undefined;
        this.log.warn({ event: 'daemon', op: 'releaseNeighbors', fallbackMs: holdMs }, 'vipd has not re-added its paths in time; gobgpd gets its neighbors anyway');
        this.releaseNeighbors('fallback').catch((err: unknown) => this.log.error({ event: 'daemon', op: 'releaseNeighbors', err: errorMessage(err) }, 'cannot give gobgpd its neighbors'));
      }, holdMs);
    }
    await this.spawnDaemon(true);
  }

  private emit(event: SupervisorEvent): void {
    this.listeners.emit(event);
  }
}

/**
 * Follows gobgpd's log file and re-logs each line through pino: JSON lines keep their fields and
 * level, anything else (Go panics, setpriv errors) is logged as text at warn.
 */
class GobgpdLogTail {
  /** Past this size the file is emptied after being read, so that a long-lived gobgpd cannot fill the disk. */
  private static readonly MAX_BYTES = 8 * 1024 * 1024;
  private static readonly POLL_MS = 200;
  private offset = 0;
  private partial = '';
  private pid: number | undefined;
  private timer: TimerHandle | undefined;
  private reading: Promise<void> | undefined;
  private stopped = false;

  constructor(
    readonly file: string,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  follow(pid: number): void {
    this.pid = pid;
    if (!this.timer && !this.stopped) this.schedule();
  }

  /** Reads whatever is in the file now, after any read already under way. */
  drain(): Promise<void> {
    const next = (this.reading ?? Promise.resolve()).then(() => this.readNew());
    this.reading = next;
    return next;
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  private schedule(): void {
    this.timer = this.clock.setTimeout(() => {
      void this.drain().finally(() => {
        if (!this.stopped) this.schedule();
      });
    }, GobgpdLogTail.POLL_MS);
  }

  private async readNew(): Promise<void> {
    let handle: fs.promises.FileHandle | undefined;
    try {
      handle = await fs.promises.open(this.file, 'r+');
      const { size } = await handle.stat();
      if (size < this.offset) this.offset = 0;
      if (size > this.offset) {
        const buffer = Buffer.alloc(size - this.offset);
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, this.offset);
        this.offset += bytesRead;
        this.emitLines(buffer.subarray(0, bytesRead).toString('utf8'));
      }
      if (this.offset > GobgpdLogTail.MAX_BYTES) {
        // gobgpd appends (O_APPEND), so it goes on writing at the new end; a line written between
        // the read above and this truncation is lost, which is acceptable for a log.
        await handle.truncate(0);
        this.offset = 0;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: errorMessage(err) }, 'cannot read gobgpd log');
    } finally {
      await handle?.close();
    }
  }

  private emitLines(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      let parsed: Record<string, unknown> | undefined;
      try {
        const value: unknown = JSON.parse(line);
        if (value && typeof value === 'object' && !Array.isArray(value)) parsed = value as Record<string, unknown>;
      } catch {
        // Plain text is logged as it is.
      }
      if (!parsed) {
        this.log.warn({ gobgpdPid: this.pid }, line);
        continue;
      }
      const { level, msg, time, ...fields } = parsed;
      this.log[GOBGPD_LEVELS[String(level)] ?? 'warn']({ gobgpdPid: this.pid, gobgpdTime: time, ...fields }, String(msg ?? ''));
    }
  }
}
