import cluster, { type Worker } from 'node:cluster';
import { extname, join } from 'node:path';
import { Backoff } from '../../lib/backoff';
import type { Clock, TimerHandle } from '../../lib/clock';
import { errorMessage } from '../../lib/errors';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import { StateMachine } from '../../lib/transition';
import type { BackendCounters, ListenerStats, MetricsJson } from '../data-plane';
import { isProtocolMessage, type FromWorker, type ToWorker } from './protocol';

/**
 * Supervision and IPC of the proxy worker processes: fork, heartbeat, restart with back-off, stop.
 * What the workers serve is the host's business (worker-pool.ts); this file only keeps N processes
 * alive and answering, and tells the host when one stops serving.
 *
 * Hang watchdog (issue 11, T17 with workers): every heartbeat the primary pings each worker, and a
 * worker answers at once from its event loop. One that has said nothing (no pong, no report) for
 * proxy.hangTimeout is declared hung: the host is told first (its listeners stop counting that worker
 * as accepting, so the announce gate sees it at once) and then the process is SIGKILLed (which also
 * ends a SIGSTOPped one) and restarted like any worker that died.
 */

export type WorkerState = 'starting' | 'up' | 'hung' | 'down' | 'stopped';

/** Worker-side counters of one process, as of its last report (the host fills them). */
export interface WorkerReports {
  readonly listenerStats: Map<string, ListenerStats>;
  readonly backendCounters: Map<string, Map<string, BackendCounters>>;
  /** The process's last answer to a metrics request. */
  metrics: MetricsJson | undefined;
}

const RESTART_INITIAL_MS = 100;
const RESTART_MAX_MS = 10_000;
/** A worker that ran this long before dying restarts at the initial back-off again. */
const STABLE_AFTER_MS = 10_000;
/** A forked worker that has not said ready in this long (or hangTimeout, if longer) is killed: Node's start can be slow on a loaded node. */
const STARTUP_TIMEOUT_MS = 10_000;
/** How long close() lets workers exit on their own before killing them. */
const EXIT_TIMEOUT_MS = 2000;
/** Default proxy.hangTimeout. */
export const DEFAULT_HANG_TIMEOUT_MS = 2000;

interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((res) => (resolve = res));
  return { promise, resolve };
}

/** One worker position; its process is replaced when it dies or hangs. */
export class WorkerSlot implements WorkerReports {
  worker: Worker | undefined;
  /** down -> starting (forked) -> up (ready) -> [hung (killed) ->] down (exited) ...; stopped once the pool stops. */
  readonly machine: StateMachine<WorkerState>;
  startedAt = 0;
  lastHeard = 0;
  restarts = 0;
  /** Processes of this slot killed by the hang watchdog. */
  hangs = 0;
  restartTimer: TimerHandle | undefined;
  /** Settles at the first ready or exit of the first process: start() waits for every slot once. */
  readonly firstOutcome = deferred();
  readonly backoff = new Backoff(RESTART_INITIAL_MS, RESTART_MAX_MS);
  /** Per listener id: this worker's next try to join a listener whose bind failed. */
  readonly bindRetries = new Map<string, TimerHandle>();
  readonly listenerStats = new Map<string, ListenerStats>();
  readonly backendCounters = new Map<string, Map<string, BackendCounters>>();
  metrics: MetricsJson | undefined;

  constructor(
    readonly index: number,
    log: Logger,
  ) {
    this.machine = new StateMachine<WorkerState>('down', { machine: 'worker', logger: log.child({ worker: index }), level: 'info' });
  }

  get state(): WorkerState {
    return this.machine.state;
  }

  /** A process that can be sent work: running, connected, and not declared hung. */
  live(): boolean {
    return this.worker !== undefined && this.worker.isConnected() && !this.machine.is('hung');
  }
}

/** What the supervisor asks of, and tells, the pool that gives the workers their work. */
export interface WorkerHost {
  /** The first message for a freshly forked process of `slot` (vipd:init: pools, listeners, shares). */
  init(slot: WorkerSlot): ToWorker;
  /** Sent after init: the listeners the process should join now. */
  forked(slot: WorkerSlot): void;
  /** Every protocol message but ready and pong (the supervisor's own). */
  message(slot: WorkerSlot, message: FromWorker): void;
  /** The process stopped serving (hung): nothing it says counts from now on; `exited` follows. */
  unresponsive(slot: WorkerSlot): void;
  /** The process is gone: its reports are retired, its listeners left. */
  exited(slot: WorkerSlot): void;
}

export interface WorkerSupervisorOptions {
  readonly workers: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  /** A worker silent this long is killed and restarted. */
  readonly hangTimeoutMs: number;
  /** Node flags for the workers. */
  readonly execArgv: readonly string[];
  /** Starts one worker process (default: node:cluster's fork of entry.ts). Tests pass fakes. */
  readonly fork?: () => Worker;
}

export class WorkerSupervisor {
  readonly slots: WorkerSlot[];
  private readonly log: Logger;
  private readonly clock: Clock;
  private heartbeat: TimerHandle | undefined;
  private seq = 0;
  /** stopped: nothing forks or restarts from then on. */
  private readonly lifecycle: StateMachine<'idle' | 'running' | 'stopped'>;
  private host: WorkerHost | undefined;

  constructor(private readonly options: WorkerSupervisorOptions) {
    this.log = options.logger;
    this.clock = options.clock;
    this.lifecycle = new StateMachine<'idle' | 'running' | 'stopped'>('idle', { machine: 'workerPool', logger: this.log, level: 'info' });
    this.slots = Array.from({ length: options.workers }, (_, i) => new WorkerSlot(i, this.log));
  }

  stopped(): boolean {
    return this.lifecycle.is('stopped');
  }

  running(): boolean {
    return this.lifecycle.is('running');
  }

  /**
   * Heartbeat period: eight pings per hangTimeout, so that a hang is seen at most an eighth of it late
   * (T17's 3 s at the ToR with the default 2 s) and one ping lost to a busy moment never counts.
   */
  get heartbeatMs(): number {
    return Math.max(50, Math.floor(this.options.hangTimeoutMs / 8));
  }

  /** Forks every worker; resolves once each has come up or died once. False once stopped. */
  async start(host: WorkerHost): Promise<boolean> {
    if (!this.lifecycle.transition(['idle'], 'running', 'start()')) return false;
    this.host = host;
    if (this.options.fork === undefined) setUpCluster(this.options.execArgv);
    this.scheduleHeartbeat();
    for (const slot of this.slots) this.fork(slot);
    await Promise.all(this.slots.map((s) => s.firstOutcome.promise));
    const up = this.slots.filter((s) => s.state === 'up').length;
    if (up === 0) this.log.error({ event: 'workersStarted', workers: this.slots.length, up }, 'no proxy worker came up; see their output; retrying');
    else this.log.info({ event: 'workersStarted', workers: this.slots.length, up }, `${up} of ${this.slots.length} proxy workers up`);
    return true;
  }

  /** Sends `message` to the slot's live process; false when there is none (or the channel is closing). */
  post(slot: WorkerSlot, message: ToWorker): boolean {
    const worker = slot.worker;
    if (worker === undefined || !slot.live()) return false;
    try {
      // Errors also come through the callback when the channel closes under the send; 'exit' handles them.
      worker.send(message, () => undefined);
      return true;
    } catch {
      return false;
    }
  }

  /** Sends `message` to every live worker; the slots reached. */
  broadcast(message: ToWorker): WorkerSlot[] {
    return this.slots.filter((slot) => this.post(slot, message));
  }

  /**
   * Asks every worker to exit (vipd:exit) and kills those that have not within 2 s; `force` kills at
   * once. Nothing restarts from then on. Resolves once every process has exited.
   */
  async stop(force: boolean): Promise<void> {
    this.lifecycle.transition(['idle', 'running'], 'stopped', force ? 'destroyed' : 'closed');
    this.heartbeat?.cancel();
    const exits: Array<Promise<void>> = [];
    for (const slot of this.slots) {
      slot.restartTimer?.cancel();
      slot.restartTimer = undefined;
      const worker = slot.worker;
      if (worker === undefined) {
        slot.machine.transition(['down', 'starting', 'up', 'hung'], 'stopped', 'pool closed');
        continue;
      }
      exits.push(new Promise<void>((resolve) => worker.once('exit', () => resolve())));
      if (force || !this.post(slot, { type: 'vipd:exit' })) worker.process.kill('SIGKILL');
    }
    const all = Promise.all(exits).then(() => true);
    const exited = force || (await Promise.race([all, new Promise<false>((resolve) => this.clock.setTimeout(() => resolve(false), EXIT_TIMEOUT_MS))]));
    if (!exited) {
      for (const slot of this.slots) {
        if (slot.worker === undefined) continue;
        this.log.warn({ event: 'workerKilled', worker: slot.index, pid: slot.worker.process.pid }, `proxy worker ${slot.index} did not exit; killing it`);
        slot.worker.process.kill('SIGKILL');
      }
    }
    await all;
    this.log.info({ event: 'workersStopped', force }, force ? 'proxy workers killed' : 'proxy workers stopped');
  }

  private fork(slot: WorkerSlot): void {
    slot.restartTimer = undefined;
    const host = this.host;
    if (this.lifecycle.is('stopped') || host === undefined) return;
    const worker = this.options.fork?.() ?? cluster.fork();
    slot.worker = worker;
    slot.machine.transition(['down'], 'starting', slot.restarts === 0 ? 'forked' : `restart ${slot.restarts}`);
    slot.startedAt = this.clock.now();
    slot.lastHeard = slot.startedAt;
    slot.metrics = undefined;
    worker.on('message', (message: unknown) => {
      if (slot.worker === worker && !slot.machine.is('hung') && isProtocolMessage<FromWorker>(message)) this.onMessage(slot, message);
    });
    worker.on('exit', (code: number | null, signal: string | null) => {
      if (slot.worker === worker) this.onExit(slot, worker, code, signal);
    });
    // Send failures on a dying channel; 'exit' follows and handles the rest.
    worker.on('error', (err: Error) => this.log.debug({ event: 'workerError', worker: slot.index, err: errorMessage(err) }, 'worker IPC error'));
    this.post(slot, host.init(slot));
    host.forked(slot);
  }

  private onMessage(slot: WorkerSlot, message: FromWorker): void {
    slot.lastHeard = this.clock.now();
    switch (message.type) {
      case 'vipd:ready':
        slot.machine.transition(['starting'], 'up', 'ready');
        this.log.info({ event: 'workerUp', worker: slot.index, pid: slot.worker?.process.pid, restarts: slot.restarts }, `proxy worker ${slot.index} up`);
        slot.firstOutcome.resolve();
        return;
      case 'vipd:pong':
        return;
      default:
        this.host?.message(slot, message);
    }
  }

  private onExit(slot: WorkerSlot, worker: Worker, code: number | null, signal: string | null): void {
    slot.worker = undefined;
    for (const timer of slot.bindRetries.values()) timer.cancel();
    slot.bindRetries.clear();
    this.host?.exited(slot);
    slot.listenerStats.clear();
    slot.backendCounters.clear();
    slot.metrics = undefined;
    slot.firstOutcome.resolve();
    const exit = signal ?? `code ${code}`;
    if (this.lifecycle.is('stopped')) {
      slot.machine.transition(['down', 'starting', 'up', 'hung'], 'stopped', `exited (${exit}) while the pool stops`);
      return;
    }
    const hung = slot.machine.is('hung');
    slot.machine.transition(['starting', 'up', 'hung'], 'down', hung ? `killed after hanging (${exit})` : `exited (${exit})`);
    const ranMs = this.clock.now() - slot.startedAt;
    if (ranMs >= STABLE_AFTER_MS) slot.backoff.reset();
    // A hung worker is replaced at once: its listeners fail the gate until the new one accepts.
    const delayMs = hung ? 0 : slot.backoff.next();
    this.options.metrics.proxyWorkerRestarts.inc({ reason: hung ? 'hung' : 'exited' });
    this.log.warn(
      { event: 'workerExited', worker: slot.index, pid: worker.process.pid, code, signal, hung, ranMs: Math.round(ranMs), restartInMs: delayMs },
      `proxy worker ${slot.index} ${hung ? 'killed after hanging' : `exited (${exit})`}; restarting in ${delayMs} ms`,
    );
    slot.restartTimer = this.clock.setTimeout(() => {
      slot.restarts++;
      this.fork(slot);
    }, delayMs);
  }

  /** Each heartbeat: a worker silent past its allowance is declared hung; the others are pinged. */
  private scheduleHeartbeat(): void {
    this.heartbeat = this.clock.setTimeout(() => {
      const now = this.clock.now();
      for (const slot of this.slots) {
        if (!slot.live()) continue;
        const silentMs = now - slot.lastHeard;
        const allowanceMs = slot.machine.is('starting') ? Math.max(STARTUP_TIMEOUT_MS, this.options.hangTimeoutMs) : this.options.hangTimeoutMs;
        if (silentMs > allowanceMs) this.declareHung(slot, silentMs);
        else this.post(slot, { type: 'vipd:ping', seq: this.seq++ });
      }
      this.options.metrics.proxyWorkersAnswering.set(this.slots.filter((s) => s.live() && s.machine.is('up')).length);
      this.scheduleHeartbeat();
    }, this.heartbeatMs);
  }

  private declareHung(slot: WorkerSlot, silentMs: number): void {
    const pid = slot.worker?.process.pid;
    const from = slot.state;
    if (!slot.machine.transition(['starting', 'up'], 'hung', `silent for ${Math.round(silentMs)} ms (hangTimeout ${this.options.hangTimeoutMs} ms)`)) return;
    slot.hangs++;
    this.log.error(
      { event: 'workerHung', worker: slot.index, pid, from, silentMs: Math.round(silentMs), hangTimeoutMs: this.options.hangTimeoutMs },
      `proxy worker ${slot.index} (pid ${pid}) has not answered for ${Math.round(silentMs)} ms: its listeners stop counting it, killing and restarting it`,
    );
    this.host?.unresponsive(slot);
    slot.worker?.process.kill('SIGKILL');
  }
}

function setUpCluster(execArgv: readonly string[]): void {
  // Must precede the first fork: node:cluster freezes the policy then (vipd is its only user).
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: join(__dirname, `entry${extname(__filename)}`), execArgv: [...execArgv], args: [], silent: false });
}

export function defaultExecArgv(): string[] {
  return process.execArgv.filter((arg) => !/^--(test|inspect|watch)/.test(arg));
}
