import cluster, { type Worker } from 'node:cluster';
import { extname, join } from 'node:path';
import { AggregatorRegistry } from 'prom-client';
import type { PoolSnapshot } from '../health/health';
import { Backoff } from '../lib/backoff';
import { systemClock, type Clock, type TimerHandle } from '../lib/clock';
import { VipdError, errorMessage } from '../lib/errors';
import { ListenerSet } from '../lib/listener-set';
import type { Logger } from '../lib/logger';
import { StateMachine } from '../lib/transition';
import type { Metrics } from '../lib/metrics';
import type { Endpoint } from '../net/endpoint';
import type { SnapshotSource } from './backend-load';
import type { BackendCounters, ListenerSpec, ListenerStats, OutOfService, PoolLoad, PoolSpec, ProxyLimitsSpec, ProxyListener } from './proxy';
import { isProtocolMessage, type FromWorker, type MetricsJson, type ToWorker } from './worker-protocol';

/**
 * Multi-core proxy: N worker processes accept on the same listening sockets, while health, the
 * announce decision and BGP stay in this (primary) process, so what is announced is decided once.
 *
 * Sharing: node:cluster with SCHED_NONE. The primary binds each VIP:port once, without listening, and
 * hands the socket to every worker; each worker listens and accepts on it and the kernel picks which
 * worker's accept() gets the next connection. Measured on the 2-core target (2,000 connections at 1, 10
 * and 100 in flight): 56/44, 52/48 and 49/51 splits; a trivial server costs ~100 µs of CPU per
 * connection over all processes, against ~80 µs in a single process. The alternatives:
 * - SCHED_RR: the primary accepts and passes each socket over IPC. A perfect split, but 250..410 µs of
 *   CPU per connection, most of it in the primary, and every accept then waits on the event loop that
 *   also runs health checks and BGP keepalives: the process that must stay responsive becomes the
 *   bottleneck of the data path.
 * - child_process.fork() with the server as a send handle: the same mechanism, but Node 20's public API
 *   can only bind by listening, so the primary would accept on the socket itself; cluster binds without
 *   listening (net._createServerHandle) on our behalf.
 * - SO_REUSEPORT (a socket per worker) needs net's reusePort, which arrived after Node 20.
 * Consequence of SCHED_NONE: cluster closes a shared socket once no worker listens on it. When every
 * worker is gone the port is really closed, and bound() says so, so the VIP is withdrawn.
 *
 * Counters come from periodic worker reports; metrics are pulled from the workers at scrape time and
 * summed with the primary's registry.
 */

export interface WorkerPoolOptions {
  /** Worker processes, ≥ 1 (1 works, but a single process without a pool does the same for less). */
  readonly workers: number;
  /** Every pool a listener may use, with its health (PoolHealth is a SnapshotSource). */
  readonly pools: ReadonlyArray<{ readonly spec: PoolSpec; readonly health: SnapshotSource }>;
  readonly logger: Logger;
  /** The primary's metrics: listener_bound is set here, everything the workers count is merged in by metricsText(). */
  readonly metrics: Metrics;
  /** Process-wide limits for the whole pool; each worker enforces its share. */
  readonly limits?: ProxyLimitsSpec;
  readonly clock?: Clock;
  /** How often workers send their counters (default 500 ms). */
  readonly reportIntervalMs?: number;
  /** Node flags for the workers (default: this process's, minus --test*, --inspect* and --watch*). */
  readonly execArgv?: readonly string[];
}

export type WorkerState = 'starting' | 'up' | 'down' | 'stopped';

export interface WorkerInfo {
  readonly index: number;
  readonly pid: number | undefined;
  readonly state: WorkerState;
  /** Times this slot's worker was started again after dying. */
  readonly restarts: number;
  /** The current process's counters per listener id, as of its last report. */
  readonly listeners: Readonly<Record<string, ListenerStats>>;
}

/** A ProxyListener whose sockets live in the workers. */
export interface WorkerProxyListener extends ProxyListener {
  /** The port the workers accept on, once one has bound (the real port when spec.port is 0). */
  address(): { readonly port: number } | undefined;
  /** Workers accepting on this listener now. */
  workersBound(): number;
  /** Reload: new sessions use `spec` in every worker (same id, same pool), and so does a worker started later. */
  reconfigure(spec: ListenerSpec): void;
}

/**
 * The pool-wide view of one backend pool: counters summed over the workers (as of their last report),
 * and the operator drain, which every worker applies.
 */
export interface WorkerPoolLoad extends PoolLoad {
  /**
   * Stops (true) or resumes new connections to the backend in every worker, and in workers started
   * later; established ones carry on. False (nothing changed) for a backend that is not in the pool.
   */
  drainBackend(backendKey: string, drained: boolean): boolean;
  /** Clients waiting in the pool's queues of all workers. */
  queued(): number;
  /** Connection-count skew across the backends in service, over all workers (see BackendLoadTracker.skew). */
  skew(): number;
  /** Reload removed the pool: it leaves every worker (see WorkerPool.removePool). */
  close(): void;
}

const DEFAULT_REPORT_INTERVAL_MS = 500;
/** Snapshots whose version did not change (a new lastResult only) reach the workers at most this often. */
const SNAPSHOT_REFRESH_MS = 1000;
/** A worker whose listener could not join the socket tries again this often while the listener is wanted. */
const BIND_RETRY_MS = 1000;
/** A scrape waits this long for each worker; one that does not answer contributes its last answer. */
const METRICS_TIMEOUT_MS = 1000;
/** close(graceMs) stops waiting for a worker that has not confirmed graceMs + this later. */
const CLOSE_SLACK_MS = 2000;
/** How long close() lets workers exit on their own before killing them. */
const EXIT_TIMEOUT_MS = 2000;
/** A worker silent for this long (no report: its event loop is stuck) is killed and restarted. */
const WATCHDOG_MS = 10_000;
const RESTART_INITIAL_MS = 100;
const RESTART_MAX_MS = 10_000;
/** A worker that ran this long before dying restarts at the initial back-off again. */
const STABLE_AFTER_MS = 10_000;

type SlotListenerState = 'starting' | 'bound' | 'failed';

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** One worker position; its process is replaced when it dies. */
class WorkerSlot {
  worker: Worker | undefined;
  /** down -> starting (forked) -> up (ready) -> down (exited) ...; stopped once the pool stops. */
  readonly machine: StateMachine<WorkerState>;
  startedAt = 0;
  lastHeard = 0;
  restarts = 0;
  restartTimer: TimerHandle | undefined;
  /** Settles at the first ready or exit of the first process: start() waits for every slot once. */
  readonly firstOutcome = deferred<void>();
  readonly backoff = new Backoff(RESTART_INITIAL_MS, RESTART_MAX_MS);
  readonly bindRetries = new Map<string, TimerHandle>();
  /** Latest report of the current process. */
  readonly listenerStats = new Map<string, ListenerStats>();
  readonly backendCounters = new Map<string, Map<string, BackendCounters>>();
  /** The current process's last answer to a metrics request. */
  metrics: MetricsJson | undefined;

  constructor(
    readonly index: number,
    log: Logger,
  ) {
    this.machine = new StateMachine<WorkerState>('down', { machine: 'worker', logger: log, level: 'info' });
  }

  get state(): WorkerState {
    return this.machine.state;
  }

  live(): boolean {
    return this.worker !== undefined && this.worker.isConnected();
  }
}

export class WorkerPool {
  private readonly options: WorkerPoolOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly slots: WorkerSlot[];
  private readonly listenerById = new Map<string, WorkerListener>();
  private readonly loads = new Map<string, PoolLoadView>();
  private readonly sources = new Map<string, SnapshotSource>();
  /** As configured: each worker gets its share (perWorkerPoolSpec) when it is forked. */
  private readonly poolSpecs = new Map<string, PoolSpec>();
  private readonly lastSent = new Map<string, PoolSnapshot>();
  /** Per pool: stops pushing its snapshots (set while running). */
  private readonly unsubscribes = new Map<string, () => void>();
  private readonly pendingMetrics = new Map<number, { readonly slot: WorkerSlot; readonly done: (json: MetricsJson | undefined) => void }>();
  private readonly reportIntervalMs: number;
  /** Counters of dead worker processes, so that totals never go backwards when a worker is replaced. */
  private readonly retiredCounters = new Map<string, { readonly header: MetricsJson[number]; readonly values: Map<string, MetricsJson[number]['values'][number]> }>();
  /** Every counter series' last published value: a total may lag (see retire) but never decrease. */
  private readonly counterFloor = new Map<string, number>();
  private nextMetricsRequest = 0;
  private tick: TimerHandle | undefined;
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private destroying: Promise<void> | undefined;
  /** stopped: close() or destroy() was called; nothing starts or restarts from then on. */
  private readonly lifecycle: StateMachine<'idle' | 'running' | 'stopped'>;

  constructor(options: WorkerPoolOptions) {
    if (!Number.isInteger(options.workers) || options.workers < 1) {
      throw new VipdError('VIPD_ERR_CONFIG', `proxy workers must be a positive integer, got ${options.workers}`);
    }
    this.options = options;
    this.clock = options.clock ?? systemClock;
    // pino would print a key bound twice twice.
    this.log = 'component' in options.logger.bindings() ? options.logger : options.logger.child({ component: 'proxy' });
    this.reportIntervalMs = options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
    this.lifecycle = new StateMachine<'idle' | 'running' | 'stopped'>('idle', { machine: 'workerPool', logger: this.log, level: 'info' });
    this.slots = Array.from({ length: options.workers }, (_, i) => new WorkerSlot(i, this.log));
    for (const pool of options.pools) {
      this.sources.set(pool.spec.name, pool.health);
      this.poolSpecs.set(pool.spec.name, pool.spec);
      this.loads.set(pool.spec.name, new PoolLoadView(pool.spec, pool.health, this));
    }
  }

  get size(): number {
    return this.slots.length;
  }

  /**
   * The listener for `spec`, served by every worker. Before start() a worker learns it when it is
   * forked; after (a reload) every live worker is sent it at once, and its start() binds it. A stopped
   * listener's id may be reused.
   */
  listener(spec: ListenerSpec): WorkerProxyListener {
    if (this.lifecycle.is('stopped')) throw new VipdError('VIPD_ERR_CLOSED', `listener ${spec.id}: the worker pool is closed`);
    const existing = this.listenerById.get(spec.id);
    if (existing !== undefined && !existing.stopped()) throw new VipdError('VIPD_ERR_CONFIG', `listener ${spec.id} exists already`);
    if (!this.sources.has(spec.pool.name)) throw new VipdError('VIPD_ERR_CONFIG', `listener ${spec.id}: pool ${spec.pool.name} was not given to the worker pool`);
    const listener = new WorkerListener(spec, this, this.options.metrics, this.log, this.clock);
    this.listenerById.set(spec.id, listener);
    if (this.starting !== undefined) {
      for (const slot of this.slots) this.post(slot, { type: 'vipd:addListener', listener: { spec: perWorkerSpec(spec, this.slots.length, slot.index), start: false } });
    }
    return listener;
  }

  /**
   * Reload: a new pool, in every live worker at once and in every worker forked later. Add it before
   * its listeners.
   */
  addPool(spec: PoolSpec, health: SnapshotSource): WorkerPoolLoad {
    if (this.sources.has(spec.name)) throw new VipdError('VIPD_ERR_CONFIG', `pool ${spec.name} exists already`);
    this.sources.set(spec.name, health);
    this.poolSpecs.set(spec.name, spec);
    const load = new PoolLoadView(spec, health, this);
    this.loads.set(spec.name, load);
    if (this.lifecycle.is('running')) {
      this.unsubscribes.set(spec.name, health.onChange((snapshot) => this.pushSnapshot(spec.name, snapshot)));
      for (const slot of this.slots) {
        this.post(slot, { type: 'vipd:addPool', pool: { spec: perWorkerPoolSpec(spec, this.slots.length, slot.index), snapshot: health.snapshot(), drained: [] } });
      }
    }
    return load;
  }

  /**
   * Reload: the pool's backends, weights, caps and settings become `spec` in every worker (each its
   * share), as BackendLoadTracker.reconfigure does in process: kept backends keep their sessions,
   * removed ones drain (or are closed under closeOnBackendDown). The pool's listeners take the new
   * spec too. Returns the removed backends' keys.
   */
  updatePool(spec: PoolSpec): string[] {
    const load = this.loads.get(spec.name);
    if (load === undefined) throw new VipdError('VIPD_ERR_CONFIG', `pool ${spec.name} was not given to the worker pool`);
    const removed = load.reconfigure(spec);
    this.poolSpecs.set(spec.name, spec);
    for (const slot of this.slots) this.post(slot, { type: 'vipd:updatePool', spec: perWorkerPoolSpec(spec, this.slots.length, slot.index) });
    // Workers update their listeners' pool with updatePool; this side keeps the spec a restarted worker gets.
    for (const listener of this.listenerById.values()) if (listener.spec.pool.name === spec.name) listener.setSpec({ ...listener.spec, pool: spec });
    return removed;
  }

  /** Reload: the pool leaves every worker. Close its listeners first. */
  removePool(name: string): void {
    if (!this.sources.has(name)) return;
    this.unsubscribes.get(name)?.();
    this.unsubscribes.delete(name);
    this.sources.delete(name);
    this.poolSpecs.delete(name);
    this.loads.delete(name);
    this.lastSent.delete(name);
    this.broadcast({ type: 'vipd:removePool', pool: name });
  }

  /** Reload: new sessions of the listener use `spec` (same id and pool), in every worker. */
  reconfigureListener(listener: WorkerListener, spec: ListenerSpec): void {
    listener.setSpec(spec);
    for (const slot of this.slots) this.post(slot, { type: 'vipd:updateListener', spec: perWorkerSpec(spec, this.slots.length, slot.index) });
  }

  /** Pool-wide counters and backend drain for status and the admin API. */
  load(pool: string): WorkerPoolLoad {
    const load = this.loads.get(pool);
    if (load === undefined) throw new VipdError('VIPD_ERR_CONFIG', `pool ${pool} was not given to the worker pool`);
    return load;
  }

  /**
   * Forks the workers; resolves once each has come up or died once. Workers that die are restarted
   * from then on, so a listener whose start() found none running succeeds on a later try.
   * Idempotent; a listener's start() calls it.
   */
  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  workers(): WorkerInfo[] {
    return this.slots.map((s) => ({
      index: s.index,
      pid: s.worker?.process.pid,
      state: s.state,
      restarts: s.restarts,
      listeners: Object.fromEntries(s.listenerStats),
    }));
  }

  /** The primary's registry and every worker's, in Prometheus text format (see WORKER_SERIES for how they combine). */
  async metricsText(): Promise<string> {
    for (const load of this.loads.values()) this.options.metrics.poolConnectionSkew.set({ pool: load.pool }, load.skew());
    const own = await this.options.metrics.registry.getMetricsAsJSON();
    const workers = await Promise.all(this.slots.map((slot) => this.workerMetrics(slot)));
    const fromWorkers = (json: MetricsJson): MetricsJson => json.filter((m) => WORKER_SERIES.get(m.name) !== 'primary');
    const inputs: MetricsJson[] = [
      own,
      ...workers.filter((w): w is MetricsJson => w !== undefined).map(fromWorkers),
      this.retiredMetrics(),
    ];
    for (const input of inputs) {
      // prom-client lets the first input's aggregator decide; its own choices for default metrics
      // ('omit', 'first', 'average') would drop or alter the primary's series, which no worker has.
      for (const metric of input) metric.aggregator = WORKER_SERIES.get(metric.name) === 'max' ? 'max' : 'sum';
    }
    const merged = await AggregatorRegistry.aggregate(inputs).getMetricsAsJSON();
    this.clampCounters(merged);
    return AggregatorRegistry.aggregate([merged]).metrics();
  }

  /**
   * Destroys whatever listener is still open and stops the workers (killing those that do not exit
   * within 2 s). Idempotent. Call it after the listeners' own close().
   */
  close(): Promise<void> {
    this.closing ??= this.destroying ?? this.shutdown();
    return this.closing;
  }

  /**
   * At once: destroys every listener and kills the workers (SIGKILL), without asking them to exit.
   * Idempotent; resolves once every worker has exited. A close() under way ends with it.
   */
  destroy(): Promise<void> {
    this.destroying ??= this.killNow();
    return this.destroying;
  }

  // For WorkerListener and PoolLoadView.

  /** Sends `start` for the listener to every live worker. */
  askToStart(listener: WorkerListener): void {
    for (const slot of this.slots) {
      if (this.post(slot, { type: 'vipd:start', listener: listener.spec.id })) listener.slotStarting(slot);
    }
  }

  /** Sends `message` to every live worker; the slots reached. */
  broadcast(message: ToWorker): WorkerSlot[] {
    return this.slots.filter((slot) => this.post(slot, message));
  }

  cancelBindRetries(listenerId: string): void {
    for (const slot of this.slots) {
      slot.bindRetries.get(listenerId)?.cancel();
      slot.bindRetries.delete(listenerId);
    }
  }

  liveListenerStats(listenerId: string): ListenerStats[] {
    const stats: ListenerStats[] = [];
    for (const slot of this.slots) {
      const s = slot.worker === undefined ? undefined : slot.listenerStats.get(listenerId);
      if (s !== undefined) stats.push(s);
    }
    return stats;
  }

  liveBackendCounters(pool: string, backendKey: string): BackendCounters[] {
    const counters: BackendCounters[] = [];
    for (const slot of this.slots) {
      const c = slot.worker === undefined ? undefined : slot.backendCounters.get(pool)?.get(backendKey);
      if (c !== undefined) counters.push(c);
    }
    return counters;
  }

  private async doStart(): Promise<void> {
    if (!this.lifecycle.transition(['idle'], 'running', 'start()')) throw new VipdError('VIPD_ERR_CLOSED', 'the worker pool is closed');
    setUpCluster(this.options.execArgv ?? defaultExecArgv());
    for (const [name, source] of this.sources) {
      this.unsubscribes.set(name, source.onChange((snapshot) => this.pushSnapshot(name, snapshot)));
    }
    this.scheduleTick();
    for (const slot of this.slots) this.fork(slot);
    await Promise.all(this.slots.map((s) => s.firstOutcome.promise));
    const up = this.slots.filter((s) => s.state === 'up').length;
    if (up === 0) this.log.error({ event: 'workersStarted', workers: this.slots.length, up }, 'no proxy worker came up; see their output; retrying');
    else this.log.info({ event: 'workersStarted', workers: this.slots.length, up }, `${up} of ${this.slots.length} proxy workers up`);
  }

  private fork(slot: WorkerSlot): void {
    slot.restartTimer = undefined;
    if (this.lifecycle.is('stopped')) return;
    const worker = cluster.fork();
    slot.worker = worker;
    slot.machine.transition(['down'], 'starting', slot.restarts === 0 ? 'forked' : `restart ${slot.restarts}`);
    slot.startedAt = this.clock.now();
    slot.lastHeard = slot.startedAt;
    slot.metrics = undefined;
    worker.on('message', (message: unknown) => {
      if (slot.worker === worker && isProtocolMessage<FromWorker>(message)) this.onMessage(slot, message);
    });
    worker.on('exit', (code: number | null, signal: string | null) => {
      if (slot.worker === worker) this.onExit(slot, worker, code, signal);
    });
    // Send failures on a dying channel; 'exit' follows and handles the rest.
    worker.on('error', (err: Error) => this.log.debug({ event: 'workerError', worker: slot.index, err: errorMessage(err) }, 'worker IPC error'));
    const listeners = [...this.listenerById.values()].filter((l) => !l.stopped());
    const workers = this.slots.length;
    this.post(slot, {
      type: 'vipd:init',
      worker: slot.index,
      log: { level: this.log.level, bindings: ownBindings(this.options.logger) },
      reportIntervalMs: this.reportIntervalMs,
      limits: perWorkerLimits(this.options.limits ?? {}, workers, slot.index),
      pools: [...this.sources].map(([name, source]) => ({
        spec: perWorkerPoolSpec(this.poolSpecs.get(name)!, workers, slot.index),
        snapshot: source.snapshot(),
        drained: [...this.loads.get(name)!.drained],
      })),
      listeners: listeners.map((l) => ({ spec: perWorkerSpec(l.spec, workers, slot.index), start: l.wanted() })),
    });
    for (const listener of listeners) if (listener.wanted()) listener.slotStarting(slot);
  }

  private onMessage(slot: WorkerSlot, message: FromWorker): void {
    slot.lastHeard = this.clock.now();
    switch (message.type) {
      case 'vipd:ready':
        slot.machine.transition(['starting'], 'up', 'ready');
        this.log.info({ event: 'workerUp', worker: slot.index, pid: slot.worker?.process.pid, restarts: slot.restarts }, `proxy worker ${slot.index} up`);
        slot.firstOutcome.resolve();
        return;
      case 'vipd:bound': {
        const listener = this.listenerById.get(message.listener);
        if (listener === undefined) return;
        if (message.bound) listener.slotBound(slot, message.port);
        else listener.slotUnbound(slot);
        return;
      }
      case 'vipd:bindFailed': {
        const listener = this.listenerById.get(message.listener);
        if (listener === undefined) return;
        const err: NodeJS.ErrnoException = new Error(message.message);
        if (message.code !== undefined) err.code = message.code;
        listener.slotFailed(slot, err);
        // Whatever the others do: if the listener is still wanted when the timer fires, this worker joins.
        this.scheduleBindRetry(slot, listener);
        return;
      }
      case 'vipd:report':
        for (const l of message.listeners) slot.listenerStats.set(l.id, l.stats);
        for (const p of message.pools) slot.backendCounters.set(p.pool, new Map(p.backends.map((b) => [b.key, b.counters])));
        for (const load of this.loads.values()) load.checkEjections();
        return;
      case 'vipd:closed':
        this.listenerById.get(message.listener)?.slotClosed(slot);
        return;
      case 'vipd:metrics': {
        const pending = this.pendingMetrics.get(message.request);
        if (pending?.slot === slot) pending.done(message.metrics);
        return;
      }
    }
  }

  private onExit(slot: WorkerSlot, worker: Worker, code: number | null, signal: string | null): void {
    slot.worker = undefined;
    for (const timer of slot.bindRetries.values()) timer.cancel();
    slot.bindRetries.clear();
    this.retire(slot);
    for (const [request, pending] of this.pendingMetrics) {
      if (pending.slot === slot) {
        this.pendingMetrics.delete(request);
        pending.done(undefined);
      }
    }
    for (const listener of this.listenerById.values()) listener.slotGone(slot);
    for (const load of this.loads.values()) load.checkEjections();
    slot.firstOutcome.resolve();
    const exit = signal ?? `code ${code}`;
    if (this.lifecycle.is('stopped')) {
      slot.machine.transition(['down', 'starting', 'up'], 'stopped', `exited (${exit}) while the pool stops`);
      return;
    }
    slot.machine.transition(['starting', 'up'], 'down', `exited (${exit})`);
    const ranMs = this.clock.now() - slot.startedAt;
    if (ranMs >= STABLE_AFTER_MS) slot.backoff.reset();
    const delayMs = slot.backoff.next();
    this.log.warn(
      { event: 'workerExited', worker: slot.index, pid: worker.process.pid, code, signal, ranMs: Math.round(ranMs), restartInMs: delayMs },
      `proxy worker ${slot.index} exited (${signal ?? `code ${code}`}); restarting in ${delayMs} ms`,
    );
    slot.restartTimer = this.clock.setTimeout(() => {
      slot.restarts++;
      this.fork(slot);
    }, delayMs);
  }

  /** Moves a dead process's counters into the retired totals; its active counts died with it. */
  private retire(slot: WorkerSlot): void {
    for (const [id, stats] of slot.listenerStats) this.listenerById.get(id)?.retire(stats);
    for (const [pool, counters] of slot.backendCounters) {
      const view = this.loads.get(pool);
      if (view !== undefined) for (const [key, c] of counters) view.retire(key, c);
    }
    for (const metric of slot.metrics ?? []) {
      if (!isCounter(metric)) continue;
      let retired = this.retiredCounters.get(metric.name);
      if (retired === undefined) {
        retired = { header: { ...metric, values: [] }, values: new Map() };
        this.retiredCounters.set(metric.name, retired);
      }
      for (const value of metric.values) {
        const key = seriesKey(metric.name, value);
        const before = retired.values.get(key)?.value ?? 0;
        retired.values.set(key, { ...value, value: before + value.value });
      }
    }
    slot.listenerStats.clear();
    slot.backendCounters.clear();
    slot.metrics = undefined;
  }

  private retiredMetrics(): MetricsJson {
    return [...this.retiredCounters.values()].map(({ header, values }) => ({ ...header, values: [...values.values()] }));
  }

  private clampCounters(metrics: MetricsJson): void {
    for (const metric of metrics) {
      if (!isCounter(metric)) continue;
      for (const value of metric.values) {
        const key = seriesKey(metric.name, value);
        const floor = this.counterFloor.get(key) ?? 0;
        if (value.value < floor) value.value = floor;
        else this.counterFloor.set(key, value.value);
      }
    }
  }

  private workerMetrics(slot: WorkerSlot): Promise<MetricsJson | undefined> {
    const request = this.nextMetricsRequest++;
    if (slot.state !== 'up' || !this.post(slot, { type: 'vipd:metrics', request })) return Promise.resolve(slot.metrics);
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => finish(undefined), METRICS_TIMEOUT_MS);
      const finish = (json: MetricsJson | undefined): void => {
        timer.cancel();
        this.pendingMetrics.delete(request);
        if (json !== undefined) slot.metrics = json;
        resolve(slot.metrics);
      };
      this.pendingMetrics.set(request, { slot, done: finish });
    });
  }

  private scheduleBindRetry(slot: WorkerSlot, listener: WorkerListener): void {
    const id = listener.spec.id;
    slot.bindRetries.get(id)?.cancel();
    slot.bindRetries.set(
      id,
      this.clock.setTimeout(() => {
        slot.bindRetries.delete(id);
        if (listener.wanted() && this.post(slot, { type: 'vipd:start', listener: id })) listener.slotStarting(slot);
      }, BIND_RETRY_MS),
    );
  }

  private pushSnapshot(pool: string, snapshot: PoolSnapshot): void {
    if (this.lastSent.get(pool) === snapshot) return;
    this.lastSent.set(pool, snapshot);
    this.broadcast({ type: 'vipd:snapshot', snapshot });
  }

  /** Once a second: snapshots that changed without a transition, and the watchdog. */
  private scheduleTick(): void {
    this.tick = this.clock.setTimeout(() => {
      for (const [name, source] of this.sources) this.pushSnapshot(name, source.snapshot());
      const now = this.clock.now();
      for (const slot of this.slots) {
        if (slot.live() && now - slot.lastHeard > Math.max(WATCHDOG_MS, 10 * this.reportIntervalMs)) {
          this.log.error({ event: 'workerUnresponsive', worker: slot.index, pid: slot.worker?.process.pid, silentMs: Math.round(now - slot.lastHeard) }, `proxy worker ${slot.index} stopped reporting; killing it`);
          slot.worker?.process.kill('SIGKILL');
        }
      }
      this.scheduleTick();
    }, SNAPSHOT_REFRESH_MS);
  }

  private post(slot: WorkerSlot, message: ToWorker): boolean {
    const worker = slot.worker;
    if (worker === undefined || !worker.isConnected()) return false;
    try {
      // Errors also come through the callback when the channel closes under the send; 'exit' handles them.
      worker.send(message, () => undefined);
      return true;
    } catch {
      return false;
    }
  }

  /** Refuses new work: no start, no restart, no snapshot; unbinds every listener still open. */
  private stopWork(): void {
    if (!this.lifecycle.transition(['idle', 'running'], 'stopped', 'closed')) return;
    this.tick?.cancel();
    for (const unsubscribe of this.unsubscribes.values()) unsubscribe();
    this.unsubscribes.clear();
    for (const listener of this.listenerById.values()) if (!listener.stopped()) void listener.destroy();
    for (const slot of this.slots) {
      slot.restartTimer?.cancel();
      slot.restartTimer = undefined;
      if (slot.worker === undefined) slot.machine.transition(['down', 'starting', 'up'], 'stopped', 'pool closed');
    }
  }

  private async killNow(): Promise<void> {
    this.stopWork();
    const exits: Array<Promise<void>> = [];
    for (const slot of this.slots) {
      const worker = slot.worker;
      if (worker === undefined) continue;
      exits.push(new Promise<void>((resolve) => worker.once('exit', () => resolve())));
      worker.process.kill('SIGKILL');
    }
    await Promise.all(exits);
    this.log.info({ event: 'workersStopped' }, 'proxy workers killed');
  }

  private async shutdown(): Promise<void> {
    this.stopWork();
    const exits: Array<Promise<void>> = [];
    for (const slot of this.slots) {
      const worker = slot.worker;
      if (worker === undefined) continue;
      exits.push(new Promise<void>((resolve) => worker.once('exit', () => resolve())));
      if (!this.post(slot, { type: 'vipd:exit' })) worker.process.kill('SIGKILL');
    }
    const all = Promise.all(exits).then(() => true);
    const exited = await Promise.race([all, new Promise<false>((resolve) => this.clock.setTimeout(() => resolve(false), EXIT_TIMEOUT_MS))]);
    if (!exited) {
      for (const slot of this.slots) {
        if (slot.worker !== undefined) {
          this.log.warn({ event: 'workerKilled', worker: slot.index, pid: slot.worker.process.pid }, `proxy worker ${slot.index} did not exit; killing it`);
          slot.worker.process.kill('SIGKILL');
        }
      }
      await all;
    }
    this.log.info({ event: 'workersStopped' }, 'proxy workers stopped');
  }
}

type ListenerState = 'idle' | 'starting' | 'listening' | 'stopped';
const LISTENER_NOT_STOPPED: readonly ListenerState[] = ['idle', 'starting', 'listening'];

/**
 * Primary-side face of one listener. bound() is true while at least one worker accepts on it: the
 * announce gate reads it, so it must never claim a socket that nobody serves.
 */
class WorkerListener implements WorkerProxyListener {
  private readonly machine: StateMachine<ListenerState>;
  private isBound = false;
  private port: number | undefined;
  private readonly perSlot = new Map<WorkerSlot, SlotListenerState>();
  private readonly boundListeners: ListenerSet<boolean>;
  private pendingStart: { readonly deferred: Deferred<void>; readonly asked: Set<WorkerSlot>; lastError?: Error } | undefined;
  private closing: Promise<void> | undefined;
  private destroyed = false;
  private closeWait: { readonly waiting: Set<WorkerSlot>; readonly done: () => void } | undefined;
  private retiredStats = { accepted: 0, refused: 0, errors: 0 };
  private readonly labels: { readonly listener: string };

  constructor(
    private current: ListenerSpec,
    private readonly pool: WorkerPool,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    this.labels = { listener: current.id };
    this.metrics.listenerBound.set(this.labels, 0);
    const spec = current;
    const listenerLog = log.child({ listener: spec.id });
    this.machine = new StateMachine<ListenerState>('idle', { machine: 'listener', logger: listenerLog });
    this.boundListeners = new ListenerSet((err) =>
      listenerLog.error({ event: 'listenerError', err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'a bound listener threw'),
    );
  }

  /** Replaced only by a reload (reconfigure). */
  get spec(): ListenerSpec {
    return this.current;
  }

  reconfigure(spec: ListenerSpec): void {
    if (spec.id !== this.current.id || spec.pool.name !== this.current.pool.name) {
      throw new VipdError('VIPD_ERR_CONFIG', `listener ${this.current.id}: a reload may not change its id or pool (got ${spec.id} on pool ${spec.pool.name})`);
    }
    this.pool.reconfigureListener(this, spec);
  }

  start(): Promise<void> {
    if (this.machine.is('stopped')) return Promise.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} is closed`));
    if (this.machine.is('listening')) return Promise.resolve();
    if (this.pendingStart !== undefined) return this.pendingStart.deferred.promise;
    this.machine.transition(['idle'], 'starting', 'start()');
    const pending = { deferred: deferred<void>(), asked: new Set<WorkerSlot>() };
    this.pendingStart = pending;
    this.pool.start().then(
      () => {
        if (this.pendingStart !== pending) return;
        this.pool.askToStart(this);
        if (pending.asked.size === 0) this.failStart(new VipdError('VIPD_ERR_NET', `no proxy worker is running to accept on ${this.spec.id}`));
      },
      (err: Error) => {
        if (this.pendingStart === pending) this.failStart(err);
      },
    );
    return pending.deferred.promise;
  }

  bound(): boolean {
    return this.isBound;
  }

  onBoundChange(listener: (bound: boolean) => void): () => void {
    return this.boundListeners.add(listener);
  }

  stats(): ListenerStats {
    let { accepted, refused, errors } = this.retiredStats;
    let active = 0;
    for (const s of this.pool.liveListenerStats(this.spec.id)) {
      accepted += s.accepted;
      active += s.active;
      refused += s.refused;
      errors += s.errors;
    }
    return { accepted, active, refused, errors };
  }

  address(): { readonly port: number } | undefined {
    return this.port === undefined ? undefined : { port: this.port };
  }

  workersBound(): number {
    let n = 0;
    for (const state of this.perSlot.values()) if (state === 'bound') n++;
    return n;
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= this.shutdown(graceMs, false);
    return this.closing;
  }

  destroy(): Promise<void> {
    if (this.closing === undefined) this.closing = this.shutdown(0, true);
    else if (!this.destroyed) this.pool.broadcast({ type: 'vipd:destroy', listener: this.spec.id });
    this.destroyed = true;
    return this.closing;
  }

  // For WorkerPool.

  setSpec(spec: ListenerSpec): void {
    this.current = spec;
  }

  stopped(): boolean {
    return this.machine.is('stopped');
  }

  /** The workers should be accepting: a (re)started worker joins, a failed join is retried. */
  wanted(): boolean {
    return this.machine.is('starting', 'listening');
  }

  slotStarting(slot: WorkerSlot): void {
    if (this.perSlot.get(slot) === 'bound') return;
    this.perSlot.set(slot, 'starting');
    this.pendingStart?.asked.add(slot);
  }

  slotBound(slot: WorkerSlot, port: number | undefined): void {
    // A bound that crosses close() on the channel: the worker is closing it already.
    if (this.machine.is('stopped')) return;
    this.perSlot.set(slot, 'bound');
    if (port !== undefined) this.port = port;
    if (this.machine.transition(['idle', 'starting'], 'listening', `worker ${slot.index} bound`)) {
      const pending = this.pendingStart;
      this.pendingStart = undefined;
      pending?.deferred.resolve();
    }
    this.updateBound();
  }

  slotUnbound(slot: WorkerSlot): void {
    this.perSlot.delete(slot);
    this.updateBound();
  }

  slotFailed(slot: WorkerSlot, err: Error): void {
    if (this.machine.is('stopped')) return;
    this.perSlot.set(slot, 'failed');
    this.log.warn({ event: 'bindFailed', listener: this.spec.id, worker: slot.index, code: (err as NodeJS.ErrnoException).code }, `worker ${slot.index} cannot accept on ${this.spec.id}: ${err.message}`);
    const pending = this.pendingStart;
    if (pending === undefined) return;
    pending.lastError = err;
    if (pending.asked.delete(slot) && pending.asked.size === 0) this.failStart(err);
  }

  slotGone(slot: WorkerSlot): void {
    this.perSlot.delete(slot);
    this.slotClosed(slot);
    const pending = this.pendingStart;
    if (pending !== undefined && pending.asked.delete(slot) && pending.asked.size === 0) {
      this.failStart(pending.lastError ?? new VipdError('VIPD_ERR_NET', `every proxy worker asked to accept on ${this.spec.id} exited`));
    }
    this.updateBound();
  }

  slotClosed(slot: WorkerSlot): void {
    const wait = this.closeWait;
    if (wait !== undefined && wait.waiting.delete(slot) && wait.waiting.size === 0) wait.done();
  }

  retire(stats: ListenerStats): void {
    this.retiredStats = {
      accepted: this.retiredStats.accepted + stats.accepted,
      refused: this.retiredStats.refused + stats.refused,
      errors: this.retiredStats.errors + stats.errors,
    };
  }

  private failStart(err: Error): void {
    const pending = this.pendingStart;
    this.pendingStart = undefined;
    this.machine.transition(['starting'], 'idle', `start failed: ${err.message}`);
    pending?.deferred.reject(err);
  }

  private async shutdown(graceMs: number, destroy: boolean): Promise<void> {
    const pending = this.pendingStart;
    this.pendingStart = undefined;
    this.machine.transition(LISTENER_NOT_STOPPED, 'stopped', destroy ? 'destroyed' : 'closed');
    pending?.deferred.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} closed while starting`));
    this.pool.cancelBindRetries(this.spec.id);
    const asked = this.pool.broadcast(destroy ? { type: 'vipd:destroy', listener: this.spec.id } : { type: 'vipd:close', listener: this.spec.id, graceMs });
    // Unbound from now on: workers stop accepting as soon as the message arrives, and the gate must
    // never lag behind that.
    this.perSlot.clear();
    this.updateBound();
    if (asked.length === 0) return;
    let timer: TimerHandle | undefined;
    await new Promise<void>((resolve) => {
      this.closeWait = { waiting: new Set(asked), done: resolve };
      timer = this.clock.setTimeout(() => {
        this.log.warn({ event: 'closeTimeout', listener: this.spec.id, workers: [...(this.closeWait?.waiting ?? [])].map((s) => s.index) }, `workers did not confirm closing ${this.spec.id}`);
        resolve();
      }, graceMs + CLOSE_SLACK_MS);
    });
    timer?.cancel();
    this.closeWait = undefined;
  }

  private updateBound(): void {
    const bound = !this.machine.is('stopped') && this.workersBound() > 0;
    if (bound === this.isBound) return;
    this.isBound = bound;
    this.metrics.listenerBound.set(this.labels, bound ? 1 : 0);
    this.log.info({ event: bound ? 'listenerBound' : 'listenerUnbound', listener: this.spec.id, address: this.spec.address, port: this.port ?? this.spec.port });
    this.boundListeners.emit(bound);
  }
}

class PoolLoadView implements WorkerPoolLoad {
  readonly pool: string;
  readonly drained = new Set<string>();
  private readonly retired = new Map<string, { total: number; connectErrors: number }>();
  private readonly serviceListeners = new ListenerSet<void>();
  /** outOfService().ejected as last told to the service listeners, joined. */
  private lastEjected = '';

  constructor(
    private spec: PoolSpec,
    private readonly health: SnapshotSource,
    private readonly owner: WorkerPool,
  ) {
    this.pool = spec.name;
  }

  /** Reload: the backends become `spec`'s; a removed backend's drain goes with it. Returns the removed keys. */
  reconfigure(spec: PoolSpec): string[] {
    const keep = new Set(spec.backends.map((b) => b.endpoint.key));
    const removed = this.spec.backends.map((b) => b.endpoint.key).filter((key) => !keep.has(key));
    this.spec = spec;
    for (const key of removed) {
      this.drained.delete(key);
      this.retired.delete(key);
    }
    this.serviceListeners.emit();
    return removed;
  }

  /** The pool left the workers (reload). */
  close(): void {
    this.owner.removePool(this.pool);
  }

  /**
   * A backend counts as ejected only while every live worker ejects it: each worker ejects on its own
   * dials and never its own last backend in service, so the workers together can still reach any
   * backend that one of them has not ejected.
   */
  outOfService(): OutOfService {
    const ejected: string[] = [];
    for (const b of this.spec.backends) {
      const live = this.owner.liveBackendCounters(this.pool, b.endpoint.key);
      if (live.length > 0 && live.every((c) => c.ejectedUntil !== undefined)) ejected.push(b.endpoint.key);
    }
    return { drained: [...this.drained], ejected };
  }

  onServiceChange(listener: () => void): () => void {
    return this.serviceListeners.add(listener);
  }

  /** Called after each worker report or exit: ejections start and end in the workers, and arrive here only with their reports. */
  checkEjections(): void {
    const ejected = this.outOfService().ejected.join(',');
    if (ejected === this.lastEjected) return;
    this.lastEjected = ejected;
    this.serviceListeners.emit();
  }

  active(backend: Endpoint): number {
    return this.counters(backend.key).active;
  }

  counters(backendKey: string): BackendCounters {
    const retired = this.retired.get(backendKey);
    let active = 0;
    let total = retired?.total ?? 0;
    let connectErrors = retired?.connectErrors ?? 0;
    let queued = 0;
    let ejectedUntil: number | undefined;
    for (const c of this.owner.liveBackendCounters(this.pool, backendKey)) {
      active += c.active;
      total += c.total;
      connectErrors += c.connectErrors;
      queued += c.queued;
      // Passive health runs in each worker on its own dials: the backend is out of service somewhere
      // until the last worker's ejection ends.
      if (c.ejectedUntil !== undefined) ejectedUntil = Math.max(ejectedUntil ?? 0, c.ejectedUntil);
    }
    const counters = { active, total, connectErrors, queued, drained: this.drained.has(backendKey) };
    return ejectedUntil === undefined ? counters : { ...counters, ejectedUntil };
  }

  queued(): number {
    let queued = 0;
    for (const b of this.spec.backends) queued += this.counters(b.endpoint.key).queued;
    return queued;
  }

  skew(): number {
    const healthy = new Set(this.health.snapshot().healthy.map((e) => e.key));
    let sumActive = 0;
    let sumWeight = 0;
    let maxPerWeight = 0;
    for (const b of this.spec.backends) {
      const c = this.counters(b.endpoint.key);
      if (!healthy.has(b.endpoint.key) || c.drained || c.ejectedUntil !== undefined) continue;
      sumActive += c.active;
      sumWeight += b.weight;
      maxPerWeight = Math.max(maxPerWeight, c.active / b.weight);
    }
    return sumActive === 0 ? 1 : maxPerWeight / (sumActive / sumWeight);
  }

  drainBackend(backendKey: string, drained: boolean): boolean {
    if (!this.spec.backends.some((b) => b.endpoint.key === backendKey)) return false;
    if (this.drained.has(backendKey) === drained) return true;
    if (drained) this.drained.add(backendKey);
    else this.drained.delete(backendKey);
    this.owner.broadcast({ type: 'vipd:drainBackend', pool: this.pool, backend: backendKey, drained });
    this.serviceListeners.emit();
    return true;
  }

  retire(backendKey: string, counters: BackendCounters): void {
    const before = this.retired.get(backendKey) ?? { total: 0, connectErrors: 0 };
    this.retired.set(backendKey, { total: before.total + counters.total, connectErrors: before.connectErrors + counters.connectErrors });
  }
}

/**
 * How the workers' series of a metric combine (default: summed). Gauges that say "1 while ..." take
 * the max, so that 1 means "in some worker" rather than counting workers. 'primary' series are the
 * primary's alone: listener_bound says whether anyone accepts, and the skew is computed over the
 * summed counts (the sum of the workers' ratios would mean nothing).
 */
const WORKER_SERIES: ReadonlyMap<string, 'max' | 'primary'> = new Map([
  ['vipd_proxy_listener_bound', 'primary'],
  ['vipd_proxy_pool_connection_skew_ratio', 'primary'],
  ['vipd_proxy_backend_drained', 'max'],
  ['vipd_proxy_backend_ejected', 'max'],
]);

/**
 * The share of a pool that worker `index` of `workers` enforces. Total caps (per-backend connections,
 * queue length) are divided so that the shares add up to the configured total (see share()); the
 * kernel spreads connections evenly enough that a worker rarely refuses while another has room.
 */
export function perWorkerPoolSpec(pool: PoolSpec, workers: number, index: number): PoolSpec {
  return {
    ...pool,
    backends: pool.backends.map((b) => (b.maxConnections === undefined ? b : { ...b, maxConnections: share(b.maxConnections, workers, index) })),
    queue: { ...pool.queue, size: share(pool.queue.size, workers, index) },
  };
}

/** The share of a listener that worker `index` of `workers` enforces (its pool: perWorkerPoolSpec). */
export function perWorkerSpec(spec: ListenerSpec, workers: number, index: number): ListenerSpec {
  return {
    ...spec,
    ...(spec.maxConnections === undefined ? {} : { maxConnections: share(spec.maxConnections, workers, index) }),
    pool: perWorkerPoolSpec(spec.pool, workers, index),
  };
}

/**
 * Process-wide limits for worker `index` of `workers`. The global cap is divided like the listener
 * caps; the per-source cap is not: one client's few connections land on workers unpredictably, so a
 * divided cap would refuse a client well below its configured allowance, while an undivided one lets
 * it reach at most `workers` times the cap.
 */
export function perWorkerLimits(limits: ProxyLimitsSpec, workers: number, index: number): ProxyLimitsSpec {
  return {
    ...limits,
    ...(limits.maxConnections === undefined ? {} : { maxConnections: share(limits.maxConnections, workers, index) }),
  };
}

/**
 * Worker `index`'s part of a cap of `total`: the parts add up to `total` exactly (the first
 * total % workers workers take one more), except that a non-zero cap gives every worker at least 1. A
 * worker with 0 would refuse every client the kernel hands it, so a cap below the number of workers
 * is exceeded instead, at most `workers` in all; 0 (a queue that is off) stays 0.
 */
export function share(total: number, workers: number, index: number): number {
  if (total === 0) return 0;
  const part = Math.floor(total / workers) + (index < total % workers ? 1 : 0);
  return Math.max(1, part);
}

function setUpCluster(execArgv: readonly string[]): void {
  // Must precede the first fork: node:cluster freezes the policy then (vipd is its only user).
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ exec: join(__dirname, `worker-entry${extname(__filename)}`), execArgv: [...execArgv], args: [], silent: false });
}

function defaultExecArgv(): string[] {
  return process.execArgv.filter((arg) => !/^--(test|inspect|watch)/.test(arg));
}

/** The logger's bindings without pino's base fields: the worker's logger adds its own pid. */
function ownBindings(logger: Logger): Record<string, unknown> {
  const { pid: _pid, hostname: _hostname, ...rest } = logger.bindings() as Record<string, unknown>;
  return rest;
}

function isCounter(metric: MetricsJson[number]): boolean {
  // The JSON carries prom-client's type name as a string, whatever its typings say.
  return (metric.type as unknown) === 'counter';
}

function seriesKey(name: string, value: MetricsJson[number]['values'][number]): string {
  const labels = Object.entries(value.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const metricName = (value as { metricName?: string }).metricName ?? name;
  return `${metricName}\u0000${JSON.stringify(labels)}`;
}
