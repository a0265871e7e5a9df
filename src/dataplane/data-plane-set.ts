import { VipdError } from '../lib/errors';
import { ListenerSet } from '../lib/listener-set';
import type { Endpoint } from '../net/endpoint';
import type { BalanceAlgorithm } from '../proxy/proxy';
import type {
  BackendCounters,
  DataPath,
  DataPlane,
  DataPlaneContext,
  DataPlaneFactories,
  DataPlaneFeature,
  DataPlaneListener,
  DataPlanePool,
  ListenerSpec,
  MetricsJson,
  OutOfService,
  PoolSpec,
  SnapshotSource,
} from './data-plane';
import { MetricsMerge } from './metrics-merge';

/**
 * Every data plane of one daemon, behind one face: a listener goes to the plane of its DataPath, a
 * pool lives in every plane (a VIP's listeners may mix paths over one pool), and the daemon sees one
 * pool view per pool, one start/close/destroy and one scrape. Planes are built from the registered
 * factories the first time a listener needs them (at start, or later by a reload), so a daemon whose
 * config uses only `proxy` never builds a kernel plane.
 */
export class DataPlaneSet {
  private readonly planes = new Map<DataPath, DataPlane>();
  private readonly pools = new Map<string, SetPool>();
  private readonly merge = new MetricsMerge();
  private lifecycle: 'idle' | 'running' | 'stopped' = 'idle';
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private destroying: Promise<void> | undefined;

  constructor(
    private readonly factories: DataPlaneFactories,
    private readonly context: DataPlaneContext,
  ) {}

  /** The planes built so far, by path (status, tests). */
  built(): ReadonlyMap<DataPath, DataPlane> {
    return this.planes;
  }

  /** Builds the plane of `path` now (main.ts does it for every path its config uses, so start() starts them together). */
  plane(path: DataPath): DataPlane {
    let plane = this.planes.get(path);
    if (plane !== undefined) return plane;
    if (this.lifecycle === 'stopped') throw new VipdError('VIPD_ERR_CLOSED', `data plane ${path}: the daemon's data planes are closed`);
    plane = this.factories[path](this.context);
    this.planes.set(path, plane);
    for (const pool of this.pools.values()) pool.join(plane.addPool(pool.spec, pool.health));
    // A plane that a reload brought in starts at once; its listeners' start() waits for it.
    if (this.lifecycle === 'running') void plane.start().catch(() => undefined);
    return plane;
  }

  addPool(spec: PoolSpec, health: SnapshotSource): DataPlanePool {
    if (this.pools.has(spec.name)) throw new VipdError('VIPD_ERR_CONFIG', `pool ${spec.name} exists already`);
    const pool = new SetPool(spec, health, () => this.pools.delete(spec.name));
    for (const plane of this.planes.values()) pool.join(plane.addPool(spec, health));
    this.pools.set(spec.name, pool);
    return pool;
  }

  pool(name: string): DataPlanePool | undefined {
    return this.pools.get(name);
  }

  /** A listener on the plane of `path`; refused, by feature, when that plane cannot serve what `spec` asks. */
  listener(path: DataPath, spec: ListenerSpec, limits: { readonly maxConnectionsPerSource?: number } = {}): DataPlaneListener {
    if (this.lifecycle === 'stopped') throw new VipdError('VIPD_ERR_CLOSED', `listener ${spec.id}: the daemon's data planes are closed`);
    const plane = this.plane(path);
    const missing = refusedFeatures(spec, limits, plane.features);
    if (missing.length > 0) {
      throw new VipdError('VIPD_ERR_CONFIG', `listener ${spec.id}: the ${path} data path (${plane.kind}) cannot serve ${missing.map((m) => m.why).join('; ')}`);
    }
    return plane.listener(spec);
  }

  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  /** Closes every plane with `graceMs` for its listeners still open. Idempotent. */
  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      this.lifecycle = 'stopped';
      await Promise.all([...this.planes.values()].map((p) => p.close(graceMs)));
    })();
    return this.closing;
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.lifecycle = 'stopped';
      await Promise.all([...this.planes.values()].map((p) => p.destroy().catch(() => undefined)));
    })();
    return this.destroying;
  }

  /** The daemon's registry with every plane's refreshed gauges and external series merged in (Prometheus text). */
  async metricsText(registry: { getMetricsAsJSON(): Promise<MetricsJson>; metrics(): Promise<string> }): Promise<string> {
    const planes = [...this.planes.values()];
    await Promise.all(planes.map((p) => p.metrics.refresh()));
    const external = (await Promise.all(planes.map((p) => p.metrics.external()))).flat();
    if (external.length === 0) return registry.metrics();
    return this.merge.text([await registry.getMetricsAsJSON(), ...external]);
  }

  private async doStart(): Promise<void> {
    if (this.lifecycle !== 'idle') throw new VipdError('VIPD_ERR_CLOSED', "the daemon's data planes are closed");
    this.lifecycle = 'running';
    await Promise.all([...this.planes.values()].map((p) => p.start()));
  }
}

/** Balance algorithms that pick on live connection counts (need the 'leastConn' feature). */
const COUNT_PICKERS: ReadonlySet<BalanceAlgorithm> = new Set(['least-conn', 'random-two']);

/**
 * What `spec` asks of a data plane that `features` lacks, each with the setting that asks for it. The
 * config refuses these at load with line:col; this is the data plane's own guard behind it.
 */
export function refusedFeatures(
  spec: ListenerSpec,
  limits: { readonly maxConnectionsPerSource?: number },
  features: ReadonlySet<DataPlaneFeature>,
): Array<{ readonly feature: DataPlaneFeature; readonly why: string }> {
  const pool = spec.pool;
  const asks: Array<{ feature: DataPlaneFeature; why: string; when: boolean }> = [
    { feature: 'leastConn', why: `balance ${pool.balance} (it picks on live connection counts)`, when: COUNT_PICKERS.has(pool.balance) },
    { feature: 'retryBeforeReply', why: `retryBeforeReply ${pool.retryBeforeReply}`, when: pool.retryBeforeReply !== 'off' && pool.maxConnectAttempts > 1 },
    { feature: 'queue', why: `a queue of ${pool.queue.size}`, when: pool.queue.size > 0 },
    { feature: 'sessions', why: `timeouts.firstByte ${pool.timeouts.firstByteMs} ms`, when: pool.timeouts.firstByteMs > 0 },
    { feature: 'perSourceLimits', why: `proxy.maxConnectionsPerSource ${limits.maxConnectionsPerSource}`, when: limits.maxConnectionsPerSource !== undefined },
  ];
  return asks.filter((a) => a.when && !features.has(a.feature)).map(({ feature, why }) => ({ feature, why }));
}

/**
 * One pool over every plane: counters summed, a drain applied in every plane, an ejection shown while
 * any plane ejects the backend (per listener, the gate reads the listener's own plane instead).
 */
class SetPool implements DataPlanePool {
  readonly pool: string;
  private readonly members: DataPlanePool[] = [];
  private readonly serviceListeners = new ListenerSet<void>();

  constructor(
    public spec: PoolSpec,
    readonly health: SnapshotSource,
    private readonly onClose: () => void,
  ) {
    this.pool = spec.name;
  }

  join(member: DataPlanePool): void {
    this.members.push(member);
    member.onServiceChange(() => this.serviceListeners.emit());
  }

  active(backend: Endpoint): number {
    return this.members.reduce((n, m) => n + m.active(backend), 0);
  }

  counters(backendKey: string): BackendCounters {
    let active = 0;
    let total = 0;
    let connectErrors = 0;
    let queued = 0;
    let drained = false;
    let ejectedUntil: number | undefined;
    for (const m of this.members) {
      const c = m.counters(backendKey);
      active += c.active;
      total += c.total;
      connectErrors += c.connectErrors;
      queued += c.queued;
      drained ||= c.drained;
      if (c.ejectedUntil !== undefined) ejectedUntil = Math.max(ejectedUntil ?? 0, c.ejectedUntil);
    }
    const counters = { active, total, connectErrors, queued, drained };
    return ejectedUntil === undefined ? counters : { ...counters, ejectedUntil };
  }

  outOfService(): OutOfService {
    const drained = new Set<string>();
    const ejected = new Set<string>();
    for (const m of this.members) {
      const o = m.outOfService();
      for (const d of o.drained) drained.add(d);
      for (const e of o.ejected) ejected.add(e);
    }
    return { drained: [...drained], ejected: [...ejected] };
  }

  onServiceChange(listener: () => void): () => void {
    return this.serviceListeners.add(listener);
  }

  drainBackend(backendKey: string, drained: boolean): boolean {
    if (!this.spec.backends.some((b) => b.endpoint.key === backendKey)) return false;
    for (const m of this.members) m.drainBackend(backendKey, drained);
    return true;
  }

  reconfigure(spec: PoolSpec): readonly string[] {
    const keep = new Set(spec.backends.map((b) => b.endpoint.key));
    const removed = this.spec.backends.map((b) => b.endpoint.key).filter((key) => !keep.has(key));
    this.spec = spec;
    for (const m of this.members) m.reconfigure(spec);
    return removed;
  }

  close(): void {
    this.onClose();
    for (const m of this.members) m.close();
    this.serviceListeners.clear();
  }
}
