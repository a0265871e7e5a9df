import type { PoolSnapshot } from '../../health/health';
import { systemClock, type Clock, type TimerHandle } from '../../lib/clock';
import { VipdError } from '../../lib/errors';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import type { ProxyLimitsSpec } from '../../proxy/proxy';
import type { BackendCounters, DataPlane, DataPlaneMetrics, ListenerSpec, ListenerStats, PoolSpec, SnapshotSource } from '../data-plane';
import { PROXY_FEATURES } from '../in-process';
import { MetricsMerge } from '../metrics-merge';
import { WorkerListener, type WorkerListenerHost, type WorkerProxyListener } from './listener';
import { WorkerMetrics } from './metrics';
import { WorkerPoolLoad, type WorkerLoadHost } from './pool-load';
import type { FromWorker, ToWorker } from './protocol';
import { perWorkerLimits, perWorkerPoolSpec, perWorkerSpec } from './shares';
import { DEFAULT_HANG_TIMEOUT_MS, WorkerSupervisor, defaultExecArgv, type WorkerHost, type WorkerSlot, type WorkerState } from './supervisor';

/**
 * The workers data plane (proxy.workers > 1): N worker processes accept on the same listening
 * sockets, while health, the announce decision and BGP stay in this (primary) process, so what is
 * announced is decided once. This file gives the workers their work; the pieces are beside it:
 * supervision, heartbeat and IPC (supervisor.ts), the primary-side listener (listener.ts), the
 * pool-wide load view (pool-load.ts), scrape-time metrics (metrics.ts) and cap shares (shares.ts).
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
  /** Pools to start with (more may be added with addPool), with their health (PoolHealth is a SnapshotSource). */
  readonly pools?: ReadonlyArray<{ readonly spec: PoolSpec; readonly health: SnapshotSource }>;
  readonly logger: Logger;
  /** The primary's metrics: listener_bound is set here, everything the workers count is merged in at scrape time. */
  readonly metrics: Metrics;
  /** Process-wide limits for the whole pool; each worker enforces its share. */
  readonly limits?: ProxyLimitsSpec;
  readonly clock?: Clock;
  /** How often workers send their counters (default 500 ms). */
  readonly reportIntervalMs?: number;
  /** A worker that has not answered its heartbeat this long is killed and restarted (proxy.hangTimeout; default 2 s). */
  readonly hangTimeoutMs?: number;
  /** Node flags for the workers (default: this process's, minus --test*, --inspect* and --watch*). */
  readonly execArgv?: readonly string[];
  /** Starts one worker process (default node:cluster's fork); tests pass fakes. */
  readonly fork?: ConstructorParameters<typeof WorkerSupervisor>[0]['fork'];
}

export type { WorkerState } from './supervisor';
export type { WorkerProxyListener } from './listener';
export type { WorkerPoolLoad } from './pool-load';

export interface WorkerInfo {
  readonly index: number;
  readonly pid: number | undefined;
  readonly state: WorkerState;
  /** Times this slot's worker was started again after dying or hanging. */
  readonly restarts: number;
  /** Of those, the processes the hang watchdog killed. */
  readonly hangs: number;
  /** The current process's counters per listener id, as of its last report. */
  readonly listeners: Readonly<Record<string, ListenerStats>>;
}

const DEFAULT_REPORT_INTERVAL_MS = 500;
/** Snapshots whose version did not change (a new lastResult only) reach the workers at most this often. */
const SNAPSHOT_REFRESH_MS = 1000;
/** A worker whose listener could not join the socket tries again this often while the listener is wanted. */
const BIND_RETRY_MS = 1000;

export class WorkerPool implements DataPlane, WorkerHost, WorkerListenerHost, WorkerLoadHost {
  readonly kind = 'workers';
  readonly features = PROXY_FEATURES;
  private readonly options: WorkerPoolOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly supervisor: WorkerSupervisor;
  private readonly workerMetrics: WorkerMetrics;
  private readonly merge = new MetricsMerge();
  private readonly listenerById = new Map<string, WorkerListener>();
  private readonly loads = new Map<string, WorkerPoolLoad>();
  private readonly sources = new Map<string, SnapshotSource>();
  private readonly lastSent = new Map<string, PoolSnapshot>();
  /** Per pool: stops pushing its snapshots (set while running). */
  private readonly unsubscribes = new Map<string, () => void>();
  private readonly reportIntervalMs: number;
  private tick: TimerHandle | undefined;
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private destroying: Promise<void> | undefined;

  constructor(options: WorkerPoolOptions) {
    if (!Number.isInteger(options.workers) || options.workers < 1) {
      throw new VipdError('VIPD_ERR_CONFIG', `proxy workers must be a positive integer, got ${options.workers}`);
    }
    this.options = options;
    this.clock = options.clock ?? systemClock;
    // pino would print a key bound twice twice.
    this.log = 'component' in options.logger.bindings() ? options.logger : options.logger.child({ component: 'proxy' });
    this.reportIntervalMs = options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
    this.supervisor = new WorkerSupervisor({
      workers: options.workers,
      logger: this.log,
      metrics: options.metrics,
      clock: this.clock,
      hangTimeoutMs: options.hangTimeoutMs ?? DEFAULT_HANG_TIMEOUT_MS,
      execArgv: options.execArgv ?? defaultExecArgv(),
      ...(options.fork !== undefined ? { fork: options.fork } : {}),
    });
    this.workerMetrics = new WorkerMetrics(this.clock, (slot, message) => this.supervisor.post(slot, message));
    for (const pool of options.pools ?? []) this.addPool(pool.spec, pool.health);
  }

  get size(): number {
    return this.supervisor.slots.length;
  }

  readonly metrics: DataPlaneMetrics = {
    refresh: () => {
      // The skew over the summed counts; the workers' own ratios would mean nothing summed.
      for (const load of this.loads.values()) this.options.metrics.poolConnectionSkew.set({ pool: load.pool }, load.skew());
      return Promise.resolve();
    },
    external: () => this.workerMetrics.collect(this.supervisor.slots),
  };

  /**
   * The listener for `spec`, served by every worker. Before start() a worker learns it when it is
   * forked; after (a reload) every live worker is sent it at once, and its start() binds it. A stopped
   * listener's id may be reused.
   */
  listener(spec: ListenerSpec): WorkerProxyListener {
    if (this.supervisor.stopped()) throw new VipdError('VIPD_ERR_CLOSED', `listener ${spec.id}: the worker pool is closed`);
    const existing = this.listenerById.get(spec.id);
    if (existing !== undefined && !existing.stopped()) throw new VipdError('VIPD_ERR_CONFIG', `listener ${spec.id} exists already`);
    const load = this.loads.get(spec.pool.name);
    if (load === undefined) throw new VipdError('VIPD_ERR_CONFIG', `listener ${spec.id}: pool ${spec.pool.name} was not given to the worker pool`);
    const listener = new WorkerListener(spec, this, load, this.options.metrics, this.log, this.clock);
    this.listenerById.set(spec.id, listener);
    if (this.starting !== undefined) {
      for (const slot of this.supervisor.slots) this.supervisor.post(slot, { type: 'vipd:addListener', listener: { spec: perWorkerSpec(spec, this.size, slot.index), start: false } });
    }
    return listener;
  }

  /** A pool, in every live worker at once and in every worker forked later. Add it before its listeners. */
  addPool(spec: PoolSpec, health: SnapshotSource): WorkerPoolLoad {
    if (this.sources.has(spec.name)) throw new VipdError('VIPD_ERR_CONFIG', `pool ${spec.name} exists already`);
    this.sources.set(spec.name, health);
    const load = new WorkerPoolLoad(spec, health, this);
    this.loads.set(spec.name, load);
    if (this.supervisor.running()) {
      this.unsubscribes.set(spec.name, health.onChange((snapshot) => this.pushSnapshot(spec.name, snapshot)));
      for (const slot of this.supervisor.slots) {
        this.supervisor.post(slot, { type: 'vipd:addPool', pool: { spec: perWorkerPoolSpec(spec, this.size, slot.index), snapshot: health.snapshot(), drained: [] } });
      }
    }
    return load;
  }

  pool(name: string): WorkerPoolLoad | undefined {
    return this.loads.get(name);
  }

  /** Pool-wide counters and backend drain for status and the admin API; throws for a pool never added. */
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
    return this.supervisor.slots.map((s) => ({
      index: s.index,
      pid: s.worker?.process.pid,
      state: s.state,
      restarts: s.restarts,
      hangs: s.hangs,
      listeners: Object.fromEntries(s.listenerStats),
    }));
  }

  /** The primary's registry and every worker's, in Prometheus text format (metrics-merge.ts says how they combine). */
  async metricsText(): Promise<string> {
    await this.metrics.refresh();
    return this.merge.text([await this.options.metrics.registry.getMetricsAsJSON(), ...(await this.metrics.external())]);
  }

  /**
   * Closes every listener still open with `graceMs` (one a reload is draining already ends when the
   * workers exit), then stops the workers (killing those that do not exit within 2 s). Idempotent.
   */
  close(graceMs = 0): Promise<void> {
    this.closing ??=
      this.destroying ??
      (async () => {
        const open = [...this.listenerById.values()].filter((l) => !l.stopped());
        await Promise.all(open.map((l) => l.close(graceMs)));
        this.stopWork();
        await this.supervisor.stop(false);
      })();
    return this.closing;
  }

  /**
   * At once: destroys every listener and kills the workers (SIGKILL), without asking them to exit.
   * Idempotent; resolves once every worker has exited. A close() under way ends with it.
   */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.stopWork();
      await this.supervisor.stop(true);
    })();
    return this.destroying;
  }

  // WorkerHost (the supervisor).

  init(slot: WorkerSlot): ToWorker {
    const listeners = [...this.listenerById.values()].filter((l) => !l.stopped());
    return {
      type: 'vipd:init',
      worker: slot.index,
      log: { level: this.log.level, bindings: ownBindings(this.options.logger) },
      reportIntervalMs: this.reportIntervalMs,
      limits: perWorkerLimits(this.options.limits ?? {}, this.size, slot.index),
      pools: [...this.sources].map(([name, source]) => ({
        spec: perWorkerPoolSpec(this.loads.get(name)!.spec, this.size, slot.index),
        snapshot: source.snapshot(),
        drained: [...this.loads.get(name)!.drained],
      })),
      listeners: listeners.map((l) => ({ spec: perWorkerSpec(l.spec, this.size, slot.index), start: l.wanted() })),
    };
  }

  forked(slot: WorkerSlot): void {
    for (const listener of this.listenerById.values()) if (!listener.stopped() && listener.wanted()) listener.slotStarting(slot);
  }

  message(slot: WorkerSlot, message: FromWorker): void {
    switch (message.type) {
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
      case 'vipd:metrics':
        this.workerMetrics.answered(slot, message.request, message.metrics);
        return;
      case 'vipd:ready':
      case 'vipd:pong':
        return;
    }
  }

  unresponsive(slot: WorkerSlot): void {
    this.forgetSlot(slot);
  }

  exited(slot: WorkerSlot): void {
    // Moves the dead process's counters into the retired totals; its active counts died with it.
    for (const [id, stats] of slot.listenerStats) this.listenerById.get(id)?.retire(stats);
    for (const [pool, counters] of slot.backendCounters) {
      const view = this.loads.get(pool);
      if (view !== undefined) for (const [key, c] of counters) view.retire(key, c);
    }
    this.workerMetrics.exited(slot);
    this.forgetSlot(slot);
  }

  // WorkerListenerHost and WorkerLoadHost.

  askToStart(listener: WorkerListener): void {
    for (const slot of this.supervisor.slots) {
      if (this.supervisor.post(slot, { type: 'vipd:start', listener: listener.spec.id })) listener.slotStarting(slot);
    }
  }

  broadcast(message: ToWorker): WorkerSlot[] {
    return this.supervisor.broadcast(message);
  }

  cancelBindRetries(listenerId: string): void {
    for (const slot of this.supervisor.slots) {
      slot.bindRetries.get(listenerId)?.cancel();
      slot.bindRetries.delete(listenerId);
    }
  }

  liveListenerStats(listenerId: string): ListenerStats[] {
    const stats: ListenerStats[] = [];
    for (const slot of this.supervisor.slots) {
      const s = slot.worker === undefined ? undefined : slot.listenerStats.get(listenerId);
      if (s !== undefined) stats.push(s);
    }
    return stats;
  }

  liveBackendCounters(pool: string, backendKey: string): BackendCounters[] {
    const counters: BackendCounters[] = [];
    for (const slot of this.supervisor.slots) {
      const c = slot.worker === undefined ? undefined : slot.backendCounters.get(pool)?.get(backendKey);
      if (c !== undefined) counters.push(c);
    }
    return counters;
  }

  reconfigureListener(listener: WorkerListener, spec: ListenerSpec): void {
    listener.setSpec(spec);
    for (const slot of this.supervisor.slots) this.supervisor.post(slot, { type: 'vipd:updateListener', spec: perWorkerSpec(spec, this.size, slot.index) });
  }

  /**
   * Reload: the pool's backends, weights, caps and settings become `spec` in every worker (each its
   * share); workers update their listeners of the pool with it, and this side keeps the spec a
   * restarted worker gets.
   */
  poolChanged(spec: PoolSpec): void {
    for (const slot of this.supervisor.slots) this.supervisor.post(slot, { type: 'vipd:updatePool', spec: perWorkerPoolSpec(spec, this.size, slot.index) });
    for (const listener of this.listenerById.values()) if (listener.spec.pool.name === spec.name) listener.setSpec({ ...listener.spec, pool: spec });
  }

  /** Reload: the pool leaves every worker. Close its listeners first. */
  removePool(name: string): void {
    if (!this.sources.has(name)) return;
    this.unsubscribes.get(name)?.();
    this.unsubscribes.delete(name);
    this.sources.delete(name);
    this.loads.delete(name);
    this.lastSent.delete(name);
    this.broadcast({ type: 'vipd:removePool', pool: name });
  }

  private async doStart(): Promise<void> {
    if (this.supervisor.stopped()) throw new VipdError('VIPD_ERR_CLOSED', 'the worker pool is closed');
    // Subscribed before the first fork, so no snapshot falls between a worker's init and the subscription.
    this.subscribeSnapshots();
    if (!(await this.supervisor.start(this))) throw new VipdError('VIPD_ERR_CLOSED', 'the worker pool is closed');
  }

  private subscribeSnapshots(): void {
    if (this.tick !== undefined) return;
    for (const [name, source] of this.sources) {
      if (!this.unsubscribes.has(name)) this.unsubscribes.set(name, source.onChange((snapshot) => this.pushSnapshot(name, snapshot)));
    }
    this.scheduleTick();
  }

  /** The slot's process serves nothing any more (hung or exited): its listeners stop counting it. */
  private forgetSlot(slot: WorkerSlot): void {
    for (const timer of slot.bindRetries.values()) timer.cancel();
    slot.bindRetries.clear();
    for (const listener of this.listenerById.values()) listener.slotGone(slot);
    for (const load of this.loads.values()) load.checkEjections();
  }

  private scheduleBindRetry(slot: WorkerSlot, listener: WorkerListener): void {
    const id = listener.spec.id;
    slot.bindRetries.get(id)?.cancel();
    slot.bindRetries.set(
      id,
      this.clock.setTimeout(() => {
        slot.bindRetries.delete(id);
        if (listener.wanted() && this.supervisor.post(slot, { type: 'vipd:start', listener: id })) listener.slotStarting(slot);
      }, BIND_RETRY_MS),
    );
  }

  private pushSnapshot(pool: string, snapshot: PoolSnapshot): void {
    if (this.lastSent.get(pool) === snapshot) return;
    this.lastSent.set(pool, snapshot);
    this.broadcast({ type: 'vipd:snapshot', snapshot });
  }

  /** Once a second: snapshots that changed without a transition (a new lastResult only). */
  private scheduleTick(): void {
    this.tick = this.clock.setTimeout(() => {
      for (const [name, source] of this.sources) this.pushSnapshot(name, source.snapshot());
      this.scheduleTick();
    }, SNAPSHOT_REFRESH_MS);
  }

  /** Refuses new work: no snapshot pushes; every listener still open is destroyed. */
  private stopWork(): void {
    this.tick?.cancel();
    for (const unsubscribe of this.unsubscribes.values()) unsubscribe();
    this.unsubscribes.clear();
    for (const listener of this.listenerById.values()) if (!listener.stopped()) void listener.destroy();
  }
}

/** The logger's bindings without pino's base fields: the worker's logger adds its own pid. */
function ownBindings(logger: Logger): Record<string, unknown> {
  const { pid: _pid, hostname: _hostname, ...rest } = logger.bindings() as Record<string, unknown>;
  return rest;
}
