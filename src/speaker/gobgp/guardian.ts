import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { Backoff } from '../../lib/backoff';
import type { Clock, TimerHandle } from '../../lib/clock';
import { VipdError, errorMessage } from '../../lib/errors';
import type { Logger } from '../../lib/logger';
import { GUARDIAN_READY, GUARDIAN_RELEASE } from './guardian-protocol';

export interface PathGuardianOptions {
  /** The external gobgpd's API, as vipd reaches it. */
  readonly api: string;
  /** The large community on vipd's paths (ownership.ts). */
  readonly mark: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The guardian's script; default guardian-main.js beside this file. */
  readonly entryPath?: string;
  /** How long start() waits for "armed". Default 10 s. */
  readonly readyTimeoutMs?: number;
  /** The guardian also deletes the paths when vipd's heartbeat stops this long (T17). Unset: no heartbeat. */
  readonly hangTimeoutMs?: number;
}

/** How often vipd's event loop proves it is alive to the guardian. */
const HEARTBEAT_INTERVAL_MS = 500;

/**
 * Fate-sharing with a gobgpd vipd does not manage: a small process that deletes vipd's marked paths
 * when vipd dies (guardian-main.ts). It is bound to vipd by a pipe, not by PR_SET_PDEATHSIG: the pipe's
 * write end lives only in vipd (libuv opens it close-on-exec, so no other child inherits it), and the
 * kernel closes it however vipd ends, so the guardian's read sees EOF with no race at start (a death
 * signal set after vipd already died never fires unless the child checks getppid), no dependence on
 * which of vipd's threads forked it (the signal follows the thread, not the process), and no loss
 * across a credential change. `release()` tells it the paths are gone (a clean stop); `trigger()` or
 * vipd's death makes it act. Started detached, so a signal to vipd's process group does not reach it.
 */
export class PathGuardian {
  private child: ChildProcess | undefined;
  private stdin: Writable | undefined;
  private done = false;
  private restartTimer: TimerHandle | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly restarts = new Backoff(1000, 30_000);
  private readonly log: Logger;

  constructor(private readonly options: PathGuardianOptions) {
    this.log = options.logger.child({ component: 'guardian' });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the guardian; resolves once it says it is armed. Rejects when it cannot be started. */
  start(): Promise<void> {
    const { options } = this;
    const entry = options.entryPath ?? path.join(__dirname, 'guardian-main.js');
    const hang = options.hangTimeoutMs === undefined ? [] : ['--hang-timeout', String(options.hangTimeoutMs)];
    const child = spawn(process.execPath, [entry, '--api', options.api, '--mark', options.mark, ...hang], {
      detached: true,
      stdio: ['pipe', 'inherit', 'inherit', 'pipe'],
    });
    this.child = child;
    this.stdin = child.stdin!;
    // A write after the guardian died must not throw in vipd; its exit is handled below.
    child.stdin!.on('error', () => undefined);
    child.unref();
    if (options.hangTimeoutMs !== undefined) {
      clearInterval(this.heartbeat);
      // Real time, not the injected clock: what is measured is whether this event loop runs at all.
      this.heartbeat = setInterval(() => child.stdin!.write('.'), HEARTBEAT_INTERVAL_MS);
      this.heartbeat.unref();
    }
    const readyPipe = child.stdio[3] as Readable;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        timer.cancel();
        readyPipe.destroy();
        (child.stdin as Writable & { unref?: () => void }).unref?.();
        if (err) reject(err);
        else resolve();
      };
      const timer = options.clock.setTimeout(() => {
        this.log.warn({ event: 'guardian', pid: child.pid }, 'the guardian did not report armed in time; it keeps starting');
        settle();
      }, options.readyTimeoutMs ?? 10_000);
      let said = '';
      readyPipe.setEncoding('utf8');
      readyPipe.on('data', (chunk: string) => {
        said += chunk;
        if (said.includes(GUARDIAN_READY)) {
          this.log.info({ event: 'guardian', pid: child.pid, mark: options.mark }, 'guardian armed');
          this.restarts.reset();
          settle();
        }
      });
      readyPipe.on('error', () => undefined);
      child.on('error', (err) => settle(new VipdError('VIPD_ERR_GOBGP_PROCESS', `the path guardian could not start: ${err.message}`, { cause: err })));
      child.on('exit', (code, signal) => {
        settle(new VipdError('VIPD_ERR_GOBGP_PROCESS', `the path guardian exited at start (${signal ?? `code ${code}`})`));
        this.onExit(child, code, signal);
      });
    });
  }

  /** A clean stop: vipd's paths are already withdrawn, the guardian exits without acting. Idempotent. */
  release(): void {
    this.finish(GUARDIAN_RELEASE);
  }

  /** vipd stops without having withdrawn: the guardian deletes the marked paths now. Idempotent. */
  trigger(): void {
    this.finish('');
  }

  private finish(message: string): void {
    if (this.done) return;
    this.done = true;
    this.restartTimer?.cancel();
    clearInterval(this.heartbeat);
    this.stdin?.end(message);
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child || this.done) return;
    // Without it, a SIGKILL of vipd would leave the paths in gobgpd: say so and bring it back.
    const delayMs = this.restarts.next();
    this.log.error({ event: 'guardian', code, signal, retryInMs: delayMs }, 'the path guardian exited while vipd runs; restarting it');
    this.restartTimer = this.options.clock.setTimeout(() => {
      this.restartTimer = undefined;
      if (this.done) return;
      this.start().catch((err: unknown) => this.log.error({ event: 'guardian', err: errorMessage(err) }, 'the path guardian could not be restarted'));
    }, delayMs);
  }
}
