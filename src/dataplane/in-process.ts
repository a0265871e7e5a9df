import { systemClock, type Clock, type TimerHandle } from '../lib/clock';
import { VipdError } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { Endpoint } from '../net/endpoint';
import { BackendLoadTracker } from '../proxy/backend-load';
import { createProcessConnectionLimits, type ConnectionLimits } from '../proxy/limits';
import { createListener, type TcpProxyListener } from '../proxy/listener';
import type { ProxyLimitsSpec } from '../proxy/proxy';
import type {
  BackendCounters,
  DataPlane,
  DataPlaneFeature,
  DataPlaneListener,
  DataPlaneMetrics,
  DataPlanePool,
  ListenerSpec,
  ListenerStats,
  OutOfService,
  PoolSpec,
  SnapshotSource,
} from './data-plane';

/** The user-space proxy does everything a data plane may do. */
export const PROXY_FEATURES: ReadonlySet<DataPlaneFeature> = new Set<DataPlaneFeature>(['sessions', 'retryBeforeReply', 'queue', 'leastConn', 'passiveHealth', 'perSourceLimits']);

export interface InProcessDataPlaneOptions {
  /** Process-wide client caps, shared by every listener of this plane. */
  readonly limits: ProxyLimitsSpec;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock?: Clock;
}

/**
 * The user-space proxy in this process (proxy.workers 1): one BackendLoadTracker per pool, shared by
 * the pool's listeners, and one TCP listener per VIP:port.
 */
export class InProcessDataPlane implements DataPlane {
  readonly kind = 'in-process';
  readonly features = PROXY_FEATURES;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly limits: ConnectionLimits;
  private readonly pools = new Map<string, InProcessPool>();
  private readonly listeners = new Set<InProcessListener>();
  private stopped = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: InProcessDataPlaneOptions) {
    this.clock = options.clock ?? systemClock;
    // pino would print a key bound twice twice.
    this.log = 'component' in options.logger.bindings() ? options.logger : options.logger.child({ component: 'proxy' });
    this.limits = createProcessConnectionLimits(options.limits, this.log, options.metrics);
  }

  readonly metrics: DataPlaneMetrics = {
    // Relayed bytes and the skew gauge are pushed by each listener's flush timer; connection counts
    // are folded in by the trackers' collect hooks.
    refresh: () => Promise.resolve(),
    external: () => Promise.resolve([]),
  };

  addPool(spec: PoolSpec, health: SnapshotSource): DataPlanePool {
    if (this.pools.has(spec.name)) throw new VipdError('VIPD_ERR_CONFIG', `pool ${spec.name} exists already`);
    const tracker = new BackendLoadTracker({ spec, health, metrics: this.options.metrics, clock: this.clock, logger: this.log.child({ pool: spec.name }) });
    const pool = new InProcessPool(tracker, this.listeners, () => this.pools.delete(spec.name));
    this.pools.set(spec.name, pool);
    return pool;
  }

  pool(name: string): DataPlanePool | undefined {
    return this.pools.get(name);
  }

  listener(spec: ListenerSpec): DataPlaneListener {
    if (this.stopped) throw new VipdError('VIPD_ERR_CLOSED', `listener ${spec.id}: the data plane is closed`);
    const pool = this.pools.get(spec.pool.name);
    if (pool === undefined) throw new VipdError('VIPD_ERR_CONFIG', `listener ${spec.id}: pool ${spec.pool.name} was not added to the data plane`);
    const tcp = createListener({
      spec,
      load: pool.tracker,
      limits: this.limits,
      logger: this.log.child({ vip: spec.vip }),
      metrics: this.options.metrics,
      clock: this.clock,
    });
    const listener = new InProcessListener(tcp, pool, this.clock, (l) => this.listeners.delete(l));
    this.listeners.add(listener);
    return listener;
  }

  start(): Promise<void> {
    if (this.stopped) return Promise.reject(new VipdError('VIPD_ERR_CLOSED', 'the data plane is closed'));
    return Promise.resolve();
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= this.stop((l) => l.closeWithin(graceMs));
    return this.closing;
  }

  destroy(): Promise<void> {
    // A close under way ends with it: its listeners are destroyed and its promise settles.
    const destroying = this.stop((l) => l.destroy());
    this.closing ??= destroying;
    return destroying;
  }

  private async stop(each: (l: InProcessListener) => Promise<void>): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.listeners].map(each));
    for (const pool of this.pools.values()) void pool.tracker.close();
  }
}

/** A pool's tracker plus the listeners of this plane that use it (a reload hands them the new spec). */
class InProcessPool implements DataPlanePool {
  readonly pool: string;

  constructor(
    readonly tracker: BackendLoadTracker,
    private readonly listeners: ReadonlySet<InProcessListener>,
    private readonly onClose: () => void,
  ) {
    this.pool = tracker.pool;
  }

  active(backend: Endpoint): number {
    return this.tracker.active(backend);
  }

  counters(backendKey: string): BackendCounters {
    return this.tracker.counters(backendKey);
  }

  outOfService(): OutOfService {
    return this.tracker.outOfService();
  }

  onServiceChange(listener: () => void): () => void {
    return this.tracker.onServiceChange(listener);
  }

  drainBackend(backendKey: string, drained: boolean): boolean {
    return this.tracker.drainBackend(backendKey, drained);
  }

  /** Tracker first (a removed backend leaves picking before the listeners see the spec), then the listeners. */
  reconfigure(spec: PoolSpec): readonly string[] {
    const removed = this.tracker.reconfigure(spec).map((r) => r.backend);
    for (const l of this.listeners) if (l.spec.pool.name === spec.name) l.reconfigure({ ...l.spec, pool: this.tracker.spec });
    return removed;
  }

  close(): void {
    this.onClose();
    void this.tracker.close();
  }
}

/** A TCP listener with the pool it picks from; forgets itself in the plane once closed. */
class InProcessListener implements DataPlaneListener {
  private closing: Promise<void> | undefined;
  private destroyTimer: TimerHandle | undefined;

  constructor(
    private readonly tcp: TcpProxyListener,
    readonly pool: InProcessPool,
    private readonly clock: Clock,
    private readonly onClosed: (l: InProcessListener) => void,
  ) {}

  get spec(): ListenerSpec {
    return this.tcp.spec;
  }

  start(): Promise<void> {
    return this.tcp.start();
  }

  bound(): boolean {
    return this.tcp.bound();
  }

  onBoundChange(listener: (bound: boolean) => void): () => void {
    return this.tcp.onBoundChange(listener);
  }

  stats(): ListenerStats {
    return this.tcp.stats();
  }

  reconfigure(spec: ListenerSpec): void {
    this.tcp.reconfigure(spec);
  }

  closeConnections(): number {
    return this.tcp.closeSessions();
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= this.tcp.close(graceMs).finally(() => {
      this.destroyTimer?.cancel();
      this.onClosed(this);
    });
    return this.closing;
  }

  destroy(): Promise<void> {
    // A close under way ends with it (TcpProxyListener.destroy), and so does this.closing.
    const destroyed = this.tcp.destroy();
    this.closing ??= destroyed.finally(() => this.onClosed(this));
    return destroyed;
  }

  /**
   * The plane's close: a listener not closing yet gets `graceMs`; one a reload is draining already
   * (with its own, longer grace) is cut when `graceMs` is up, since the whole plane stops.
   */
  closeWithin(graceMs: number): Promise<void> {
    if (this.closing === undefined) return this.close(graceMs);
    this.destroyTimer ??= this.clock.setTimeout(() => void this.tcp.destroy(), graceMs);
    return this.closing;
  }
}
