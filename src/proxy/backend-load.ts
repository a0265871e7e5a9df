import type { PoolSnapshot } from '../health/health';
import { systemClock, type Clock, type TimerHandle } from '../lib/clock';
import { ListenerSet } from '../lib/listener-set';
import type { Logger } from '../lib/logger';
import { onCollect, type Metrics } from '../lib/metrics';
import type { Endpoint } from '../net/endpoint';
import type { ConnectFailureKind } from './connector';
import { BackendOutlier } from './outlier';
import type { BackendCounters, OutOfService, PoolLoad, PoolSpec } from './proxy';

/** Where a pool's health snapshots come from; PoolHealth is one, a worker's IPC feed another. */
export interface SnapshotSource {
  snapshot(): PoolSnapshot;
  /** Called after every change of a backend's state. Returns an unsubscribe. */
  onChange(listener: (snapshot: PoolSnapshot) => void): () => void;
}

/**
 * A client connection waiting in its pool's queue because every backend it may use is full.
 * Session implements it; the links belong to the tracker and nobody else touches them.
 */
export interface QueuedClient {
  queueNext: QueuedClient | undefined;
  queuePrev: QueuedClient | undefined;
  /** Monotonic ms at which the wait ends in a refusal. */
  queueDeadline: number;
  /** The full backend the balancer chose for it: per-backend queue figures attribute the wait to it. */
  queuedFor: BackendEntry | undefined;
  /** True when this client has already failed to connect to the backend. */
  hasTried(backendKey: string): boolean;
  /** Taken off the queue with a slot reserved on `entry`: dial it now (dialStarted was already counted). */
  onSlotReserved(entry: BackendEntry): void;
  /** Taken off the queue because its wait ran out. */
  onQueueTimeout(): void;
}

/** A listener's hook for closeOnBackendDown: close its sessions relaying to `entry`. */
export interface BackendDownHandler {
  closeSessionsOn(entry: BackendEntry): void;
}

/**
 * Live state of one backend of a pool. Sessions hold a reference to it, so the per-chunk byte
 * accounting is a plain field update rather than a map lookup or a metric call.
 */
export class BackendEntry implements BackendCounters {
  /** Dials in progress plus established connections: maxConnections and least-conn must see a burst of pending dials. */
  active = 0;
  /** Connections that reached the backend. */
  total = 0;
  connectErrors = 0;
  /** Waiters attributed to this backend (see QueuedClient.queuedFor). */
  queued = 0;
  /** Operator drain: no new connections, existing ones carry on. */
  drained = false;
  /** Healthy in the tracker's current snapshot. */
  healthy = false;
  /** Bytes relayed since the last metrics flush; see BackendLoadTracker.flushMetrics. */
  unflushedBytesIn = 0;
  unflushedBytesOut = 0;
  /** `active` and `total` as last folded into their metrics (see BackendLoadTracker.foldConnectionCounts). */
  foldedActive = 0;
  foldedTotal = 0;
  /** The active-connections series exists (materialised at its first connection, as an inc would). */
  activeSeries = false;

  /** Replaced only by a reload that changes the pool's outlier settings. */
  outlier: BackendOutlier;
  /** Wall-clock ms at which the current ejection ends (for status, comparable with BackendStatus.since). */
  ejectedUntilWall: number | undefined;
  ejectionTimer: TimerHandle | undefined;

  readonly labels: { readonly pool: string; readonly backend: string };
  readonly bytesInLabels: { readonly pool: string; readonly backend: string; readonly direction: 'in' };
  readonly bytesOutLabels: { readonly pool: string; readonly backend: string; readonly direction: 'out' };

  constructor(
    readonly pool: string,
    readonly endpoint: Endpoint,
    /** Mutable only by a reload (BackendLoadTracker.reconfigure). */
    public weight: number,
    /** Infinity when the backend has no cap. Mutable only by a reload. */
    public maxConnections: number,
    outlier: PoolSpec['outlier'],
  ) {
    this.outlier = new BackendOutlier(outlier);
    this.labels = { pool, backend: endpoint.key };
    this.bytesInLabels = { pool, backend: endpoint.key, direction: 'in' };
    this.bytesOutLabels = { pool, backend: endpoint.key, direction: 'out' };
  }

  /** Neither drained nor ejected (health is the snapshot's business). */
  get inService(): boolean {
    return !this.drained && this.outlier.ejectedUntil === undefined;
  }

  get ejectedUntil(): number | undefined {
    return this.ejectedUntilWall;
  }

  /** Could take a new connection now: healthy, in service and below its cap. */
  get canTakeConnection(): boolean {
    return this.healthy && this.active < this.maxConnections && this.inService;
  }
}

export interface BackendLoadOptions {
  readonly spec: PoolSpec;
  readonly health: SnapshotSource;
  readonly metrics: Metrics;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/**
 * Everything about a pool's backends that the proxy decides on, shared by every listener of the pool:
 * connection counts (least-conn reads them, maxConnections caps them), the wait queue for a full pool,
 * passive health (ejection after consecutive connect failures), operator drain, and the latest health
 * snapshot. Connection events update the metrics at once; relayed bytes are batched and pushed by
 * flushMetrics(), because a labelled prom-client increment per chunk would cost more than the relay.
 *
 * The queue is one FIFO per pool with a single timer, since every waiter of a pool has the same
 * timeout. Whenever a backend can take a connection again (a slot freed, health up, drain lifted,
 * ejection over) the oldest waiter that has not already failed on it gets the slot.
 */
export class BackendLoadTracker implements PoolLoad {
  readonly pool: string;
  /** Replaced only by reconfigure() (a reload). */
  spec: PoolSpec;
  private readonly entries = new Map<string, BackendEntry>();
  private readonly metrics: Metrics;
  private readonly clock: Clock;
  private readonly log: Logger | undefined;
  /** closeOnBackendDown: each attached listener closes its sessions on the backend. */
  private readonly backendDown: ListenerSet<BackendEntry>;
  /** Drains, ejections and their ends: the announce gate re-reads outOfService(). */
  private readonly serviceListeners: ListenerSet<void>;
  private current: PoolSnapshot;
  private readonly unsubscribe: () => void;
  private queueHead: QueuedClient | undefined;
  private queueTail: QueuedClient | undefined;
  private queueLength = 0;
  private queueTimer: TimerHandle | undefined;
  private closed = false;
  private readonly stopCollecting: Array<() => void>;
  /** One closure per tracker: folds the connection counts into the metrics at scrape time. */
  private readonly fold = (): void => this.foldConnectionCounts();

  constructor(options: BackendLoadOptions) {
    const spec = options.spec;
    this.spec = spec;
    this.pool = spec.name;
    this.metrics = options.metrics;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger;
    this.backendDown = new ListenerSet((err) =>
      this.log?.error({ event: 'listenerError', err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'closing sessions on a down backend threw'),
    );
    this.serviceListeners = new ListenerSet<void>((err) =>
      this.log?.error({ event: 'listenerError', err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'a service-change listener threw'),
    );
    for (const backend of spec.backends) {
      const entry = this.createEntry(backend.endpoint, backend.weight, backend.maxConnections);
      // Materialise the per-backend series at zero so dashboards see every backend before its first connection.
      this.metrics.backendQueued.set(entry.labels, 0);
      this.metrics.backendEjected.set(entry.labels, 0);
      this.metrics.backendDrained.set(entry.labels, 0);
      this.metrics.backendEjections.inc(entry.labels, 0);
    }
    this.stopCollecting = [onCollect(this.metrics.backendActive, this.fold), onCollect(this.metrics.backendConnections, this.fold)];
    this.current = options.health.snapshot();
    this.applyHealth(this.current, false);
    this.unsubscribe = options.health.onChange((snapshot) => this.onSnapshotChange(snapshot));
  }

  /** The latest health snapshot: what pickers read. */
  snapshot(): PoolSnapshot {
    return this.current;
  }

  active(backend: Endpoint): number {
    return this.entries.get(backend.key)?.active ?? 0;
  }

  /** The live state of a backend, or undefined for one that is not in the pool. */
  entry(backendKey: string): BackendEntry | undefined {
    return this.entries.get(backendKey);
  }

  counters(backendKey: string): BackendCounters {
    const entry = this.entries.get(backendKey);
    if (entry === undefined) return NO_COUNTERS;
    const counters = { active: entry.active, total: entry.total, connectErrors: entry.connectErrors, queued: entry.queued, drained: entry.drained };
    return entry.ejectedUntilWall === undefined ? counters : { ...counters, ejectedUntil: entry.ejectedUntilWall };
  }

  /** True while the operator drains the backend; false for one that is not in the pool. */
  isDrained(backendKey: string): boolean {
    return this.entries.get(backendKey)?.drained ?? false;
  }

  outOfService(): OutOfService {
    const drained: string[] = [];
    const ejected: string[] = [];
    for (const entry of this.entries.values()) {
      if (entry.drained) drained.push(entry.endpoint.key);
      if (entry.ejectedUntilWall !== undefined) ejected.push(entry.endpoint.key);
    }
    return { drained, ejected };
  }

  onServiceChange(listener: () => void): () => void {
    return this.serviceListeners.add(listener);
  }

  /** Clients waiting for a slot in this pool now. */
  queued(): number {
    return this.queueLength;
  }

  /**
   * Operator drain of one backend: while drained it is never picked, and sessions already on it carry on.
   * Returns false (and changes nothing) for a backend that is not in the pool.
   */
  drainBackend(backendKey: string, drained: boolean): boolean {
    const entry = this.entries.get(backendKey);
    if (entry === undefined) return false;
    if (entry.drained === drained) return true;
    entry.drained = drained;
    this.metrics.backendDrained.set(entry.labels, drained ? 1 : 0);
    this.log?.info({ event: drained ? 'backendDrained' : 'backendUndrained', backend: backendKey, active: entry.active }, drained ? `backend ${backendKey} drained by operator` : `backend ${backendKey} back in service`);
    if (!drained) this.serveWaiters(entry);
    this.serviceListeners.emit();
    return true;
  }

  /**
   * Connection-count skew across the backends in service: the busiest backend's connections per unit
   * of weight over the pool's average per unit of weight. 1 is perfectly even (or idle); 2 means one
   * backend carries twice its share.
   */
  skew(): number {
    let sumActive = 0;
    let sumWeight = 0;
    let maxPerWeight = 0;
    for (const entry of this.entries.values()) {
      if (!entry.healthy || !entry.inService) continue;
      sumActive += entry.active;
      sumWeight += entry.weight;
      const perWeight = entry.active / entry.weight;
      if (perWeight > maxPerWeight) maxPerWeight = perWeight;
    }
    return sumActive === 0 ? 1 : maxPerWeight / (sumActive / sumWeight);
  }

  /**
   * Reload: the pool's backends and settings become `spec`'s. A kept backend keeps its entry (its
   * connections, counters, drain and ejection) with the new weight and cap; a new one gets an entry
   * (healthy only once the health snapshot says so); a removed one leaves the pool: nothing new is
   * sent to it, and its established sessions carry on to their end, or are closed at once when the
   * pool has closeOnBackendDown. Returns the removed backends' keys and how many sessions each had.
   */
  reconfigure(spec: PoolSpec): Array<{ readonly backend: string; readonly active: number }> {
    const keep = new Set(spec.backends.map((b) => b.endpoint.key));
    const outlierChanged = JSON.stringify(spec.outlier) !== JSON.stringify(this.spec.outlier);
    this.spec = spec;
    const removed: Array<{ backend: string; active: number }> = [];
    for (const [key, entry] of [...this.entries]) {
      if (keep.has(key)) continue;
      this.entries.delete(key);
      if (entry.ejectionTimer !== undefined) entry.ejectionTimer.cancel();
      removed.push({ backend: key, active: entry.active });
      // Waiters attributed to it go on waiting for any backend of the pool.
      this.log?.info({ event: 'backendRemoved', backend: key, active: entry.active, closeOnBackendDown: spec.closeOnBackendDown }, `backend ${key} removed by reload: ${spec.closeOnBackendDown ? 'its sessions are closed (closeOnBackendDown)' : 'its established sessions drain'}`);
      // Usually the health snapshot has dropped it already (PoolHealth.reconfigure first), and closed them then.
      if (spec.closeOnBackendDown && entry.healthy && entry.active > 0) this.backendDown.emit(entry);
      this.metrics.backendQueued.remove(entry.labels);
      this.metrics.backendEjected.remove(entry.labels);
      this.metrics.backendDrained.remove(entry.labels);
    }
    for (const backend of spec.backends) {
      const existing = this.entries.get(backend.endpoint.key);
      if (existing === undefined) {
        const entry = this.createEntry(backend.endpoint, backend.weight, backend.maxConnections);
        entry.healthy = this.current.healthy.some((h) => h.key === backend.endpoint.key);
        this.metrics.backendQueued.set(entry.labels, 0);
        this.metrics.backendEjected.set(entry.labels, 0);
        this.metrics.backendDrained.set(entry.labels, 0);
        this.metrics.backendEjections.inc(entry.labels, 0);
        continue;
      }
      existing.weight = backend.weight;
      existing.maxConnections = backend.maxConnections ?? Infinity;
      if (outlierChanged) existing.outlier = new BackendOutlier(spec.outlier);
      if (existing.canTakeConnection) this.serveWaiters(existing);
    }
    this.serviceListeners.emit();
    return removed;
  }

  /** Registers a listener for closeOnBackendDown. Returns an unregister. */
  attach(handler: BackendDownHandler): () => void {
    return this.backendDown.add((entry) => handler.closeSessionsOn(entry));
  }

  /** Takes a slot on the backend for a dial that starts now. */
  dialStarted(backend: Endpoint): BackendEntry {
    let entry = this.entries.get(backend.key);
    if (entry === undefined) {
      entry = this.createEntry(backend, 1, undefined);
      entry.healthy = this.current.healthy.some((healthy) => healthy.key === backend.key);
    }
    this.take(entry);
    return entry;
  }

  /** The dial failed: the failure is counted (and may eject the backend), then the slot given back. */
  dialFailed(entry: BackendEntry, kind: ConnectFailureKind): void {
    // This node's shortage, not the backend's: counted by the listener, never towards an ejection.
    if (kind === 'local') {
      this.release(entry);
      return;
    }
    entry.connectErrors++;
    this.metrics.backendConnectErrors.inc({ pool: this.pool, backend: entry.endpoint.key, kind });
    if (entry.outlier.recordFailure()) this.eject(entry, kind);
    this.release(entry);
  }

  established(entry: BackendEntry): void {
    entry.total++;
    entry.outlier.recordSuccess();
    if (this.closed) this.foldEntry(entry);
  }

  /** The connection (or an abandoned dial) is gone; the slot goes to the oldest waiter that can use it. */
  release(entry: BackendEntry): void {
    entry.active--;
    if (this.closed) this.foldEntry(entry);
    if (this.queueHead !== undefined) this.serveWaiters(entry);
  }

  /**
   * Puts a client in the pool's queue, attributed to `chosen` (the full backend the balancer chose).
   * False when the queue is off or full: the caller refuses the client.
   */
  enqueue(client: QueuedClient, chosen: BackendEntry): boolean {
    const size = this.spec.queue.size;
    if (this.queueLength >= size || this.closed) return false;
    client.queueDeadline = this.clock.now() + this.spec.queue.timeoutMs;
    client.queuedFor = chosen;
    client.queueNext = undefined;
    client.queuePrev = this.queueTail;
    if (this.queueTail === undefined) this.queueHead = client;
    else this.queueTail.queueNext = client;
    this.queueTail = client;
    this.queueLength++;
    chosen.queued++;
    this.metrics.backendQueued.inc(chosen.labels);
    if (this.queueTimer === undefined) this.armQueueTimer(client.queueDeadline);
    return true;
  }

  /** Takes a client out of the queue (it went away, or is being served); nothing happens if it is not queued. */
  dequeue(client: QueuedClient): void {
    const attributed = client.queuedFor;
    if (attributed === undefined) return;
    client.queuedFor = undefined;
    const { queuePrev: prev, queueNext: next } = client;
    if (prev === undefined) this.queueHead = next;
    else prev.queueNext = next;
    if (next === undefined) this.queueTail = prev;
    else next.queuePrev = prev;
    client.queueNext = undefined;
    client.queuePrev = undefined;
    this.queueLength--;
    attributed.queued--;
    this.metrics.backendQueued.dec(attributed.labels);
    if (this.queueHead === undefined) {
      this.queueTimer?.cancel();
      this.queueTimer = undefined;
    }
  }

  /** Pushes the bytes relayed since the last call into the byte counters, and refreshes the skew gauge. */
  flushMetrics(): void {
    for (const entry of this.entries.values()) {
      if (entry.unflushedBytesIn > 0) {
        this.metrics.backendBytes.inc(entry.bytesInLabels, entry.unflushedBytesIn);
        entry.unflushedBytesIn = 0;
      }
      if (entry.unflushedBytesOut > 0) {
        this.metrics.backendBytes.inc(entry.bytesOutLabels, entry.unflushedBytesOut);
        entry.unflushedBytesOut = 0;
      }
    }
    this.metrics.poolConnectionSkew.set({ pool: this.pool }, this.skew());
  }

  /**
   * Stops following health and cancels the ejection and queue timers; waiters are refused and nobody
   * is queued from then on. Sessions holding slots keep them and give them back as they end. Nothing
   * to wait for, so close() and destroy() are the same; both idempotent, resolved at once.
   */
  close(): Promise<void> {
    this.shutdown();
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    return this.close();
  }

  private shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.serviceListeners.clear();
    this.foldConnectionCounts();
    for (const stop of this.stopCollecting) stop();
    for (const entry of this.entries.values()) {
      entry.ejectionTimer?.cancel();
      entry.ejectionTimer = undefined;
    }
    while (this.queueHead !== undefined) {
      const client = this.queueHead;
      this.dequeue(client);
      client.onQueueTimeout();
    }
  }

  private onSnapshotChange(snapshot: PoolSnapshot): void {
    this.current = snapshot;
    this.applyHealth(snapshot, true);
  }

  private applyHealth(snapshot: PoolSnapshot, act: boolean): void {
    const healthyKeys = new Set<string>();
    for (const backend of snapshot.healthy) healthyKeys.add(backend.key);
    for (const entry of this.entries.values()) {
      const healthy = healthyKeys.has(entry.endpoint.key);
      if (healthy === entry.healthy) continue;
      entry.healthy = healthy;
      if (!act) continue;
      if (healthy) this.serveWaiters(entry);
      else if (this.spec.closeOnBackendDown) {
        this.log?.info({ event: 'closeOnBackendDown', backend: entry.endpoint.key, active: entry.active }, `closing sessions of ${entry.endpoint.key}: marked down`);
        this.backendDown.emit(entry);
      }
    }
  }

  private take(entry: BackendEntry): void {
    entry.active++;
    if (!entry.activeSeries) {
      entry.activeSeries = true;
      this.metrics.backendActive.inc(entry.labels, 0);
    }
    if (this.closed) this.foldEntry(entry);
  }

  /**
   * Connection counts reach their metrics when these are read, not per connection: a labelled
   * prom-client update hashes its label set on every call. Deltas, so that a tracker replaced by a
   * reload and its successor can share a series. Once closed, the tracker folds at every event.
   */
  private foldConnectionCounts(): void {
    for (const entry of this.entries.values()) this.foldEntry(entry);
  }

  private foldEntry(entry: BackendEntry): void {
    const active = entry.active;
    if (active !== entry.foldedActive) {
      if (active > entry.foldedActive) this.metrics.backendActive.inc(entry.labels, active - entry.foldedActive);
      else this.metrics.backendActive.dec(entry.labels, entry.foldedActive - active);
      entry.foldedActive = active;
    }
    const total = entry.total;
    if (total !== entry.foldedTotal) {
      this.metrics.backendConnections.inc(entry.labels, total - entry.foldedTotal);
      entry.foldedTotal = total;
    }
  }

  /** Hands free slots of `entry` to the oldest waiters that may use it. */
  private serveWaiters(entry: BackendEntry): void {
    let client = this.queueHead;
    while (client !== undefined && entry.canTakeConnection) {
      let next = client.queueNext;
      if (!client.hasTried(entry.endpoint.key)) {
        this.dequeue(client);
        this.take(entry);
        client.onSlotReserved(entry);
        // A served client runs code of its own; should that have changed the queue, start over.
        if (next !== undefined && next.queuedFor === undefined) next = this.queueHead;
      }
      client = next;
    }
  }

  private armQueueTimer(deadline: number): void {
    this.queueTimer = this.clock.setTimeout(() => this.expireWaiters(), Math.max(0, deadline - this.clock.now()));
  }

  /** Waiters leave in FIFO order, and they all waited the same time: only the head's deadline matters. */
  private expireWaiters(): void {
    this.queueTimer = undefined;
    const now = this.clock.now();
    while (this.queueHead !== undefined && this.queueHead.queueDeadline <= now) {
      const client = this.queueHead;
      this.dequeue(client);
      client.onQueueTimeout();
    }
    if (this.queueHead !== undefined) this.armQueueTimer(this.queueHead.queueDeadline);
  }

  private eject(entry: BackendEntry, kind: ConnectFailureKind): void {
    const key = entry.endpoint.key;
    if (!this.anotherInService(entry)) {
      entry.outlier.spareEjection();
      this.log?.warn({ event: 'ejectionSpared', backend: key, reason: kind }, `backend ${key} not ejected: it is the last one in service`);
      return;
    }
    const now = this.clock.now();
    const durationMs = entry.outlier.eject(now);
    entry.ejectedUntilWall = this.clock.wallNow() + durationMs;
    this.metrics.backendEjections.inc(entry.labels);
    this.metrics.backendEjected.set(entry.labels, 1);
    this.log?.warn(
      { event: 'backendEjected', backend: key, reason: kind, level: entry.outlier.level, durationMs },
      `backend ${key} ejected for ${durationMs} ms after consecutive connect failures`,
    );
    entry.ejectionTimer = this.clock.setTimeout(() => this.restore(entry), durationMs);
    this.serviceListeners.emit();
  }

  private restore(entry: BackendEntry): void {
    entry.ejectionTimer = undefined;
    entry.outlier.restore(this.clock.now());
    entry.ejectedUntilWall = undefined;
    this.metrics.backendEjected.set(entry.labels, 0);
    this.log?.info({ event: 'backendRestored', backend: entry.endpoint.key, reason: 'ejectionExpired' }, `backend ${entry.endpoint.key} back in picking`);
    this.serveWaiters(entry);
    this.serviceListeners.emit();
  }

  /**
   * Passive health only steers traffic among backends the active checks call healthy; it never empties
   * the pool. A blip that fails every backend at once would otherwise turn into a full ejection period.
   */
  private anotherInService(except: BackendEntry): boolean {
    for (const entry of this.entries.values()) {
      if (entry !== except && entry.healthy && entry.inService) return true;
    }
    return false;
  }

  private createEntry(endpoint: Endpoint, weight: number, maxConnections: number | undefined): BackendEntry {
    const entry = new BackendEntry(this.pool, endpoint, weight, maxConnections ?? Infinity, this.spec.outlier);
    this.entries.set(endpoint.key, entry);
    return entry;
  }
}

const NO_COUNTERS: BackendCounters = Object.freeze({ active: 0, total: 0, connectErrors: 0, queued: 0, drained: false });
