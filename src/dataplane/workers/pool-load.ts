import { ListenerSet } from '../../lib/listener-set';
import type { Endpoint } from '../../net/endpoint';
import type { BackendCounters, DataPlanePool, OutOfService, PoolSpec, SnapshotSource } from '../data-plane';
import type { ToWorker } from './protocol';
import type { WorkerSlot } from './supervisor';

/** What a pool's load view asks of the worker pool. */
export interface WorkerLoadHost {
  /** The live processes' latest counters of one backend. */
  liveBackendCounters(pool: string, backendKey: string): BackendCounters[];
  broadcast(message: ToWorker): WorkerSlot[];
  /** Sends the pool's new spec to every worker (each its share) and to the pool's listeners. */
  poolChanged(spec: PoolSpec): void;
  /** The pool leaves every worker. */
  removePool(name: string): void;
}

/**
 * The load view of one pool over every worker: counters summed (as of each worker's last report,
 * plus what dead processes counted), and the operator drain, which every worker applies.
 */
export class WorkerPoolLoad implements DataPlanePool {
  readonly pool: string;
  readonly drained = new Set<string>();
  private readonly retired = new Map<string, { total: number; connectErrors: number }>();
  private readonly serviceListeners = new ListenerSet<void>();
  /** outOfService().ejected as last told to the service listeners, joined. */
  private lastEjected = '';

  constructor(
    private current: PoolSpec,
    private readonly health: SnapshotSource,
    private readonly owner: WorkerLoadHost,
  ) {
    this.pool = current.name;
  }

  /** As configured (each worker enforces its share, see shares.ts). */
  get spec(): PoolSpec {
    return this.current;
  }

  /**
   * Reload: the backends become `spec`'s in every worker, as BackendLoadTracker.reconfigure does in
   * process; a removed backend's drain goes with it. Returns the removed keys.
   */
  reconfigure(spec: PoolSpec): string[] {
    const keep = new Set(spec.backends.map((b) => b.endpoint.key));
    const removed = this.current.backends.map((b) => b.endpoint.key).filter((key) => !keep.has(key));
    this.current = spec;
    for (const key of removed) {
      this.drained.delete(key);
      this.retired.delete(key);
    }
    this.owner.poolChanged(spec);
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
    for (const b of this.current.backends) {
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
    for (const b of this.current.backends) queued += this.counters(b.endpoint.key).queued;
    return queued;
  }

  skew(): number {
    const healthy = new Set(this.health.snapshot().healthy.map((e) => e.key));
    let sumActive = 0;
    let sumWeight = 0;
    let maxPerWeight = 0;
    for (const b of this.current.backends) {
      const c = this.counters(b.endpoint.key);
      if (!healthy.has(b.endpoint.key) || c.drained || c.ejectedUntil !== undefined) continue;
      sumActive += c.active;
      sumWeight += b.weight;
      maxPerWeight = Math.max(maxPerWeight, c.active / b.weight);
    }
    return sumActive === 0 ? 1 : maxPerWeight / (sumActive / sumWeight);
  }

  drainBackend(backendKey: string, drained: boolean): boolean {
    if (!this.current.backends.some((b) => b.endpoint.key === backendKey)) return false;
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
