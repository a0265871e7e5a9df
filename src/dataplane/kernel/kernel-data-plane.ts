import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { Clock } from '../../lib/clock';
import { VipdError, errorMessage } from '../../lib/errors';
import { ListenerSet } from '../../lib/listener-set';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import { LatestOnlyQueue } from '../../lib/serial-queue';
import type { Endpoint } from '../../net/endpoint';
import type {
  BackendCounters,
  DataPlane,
  DataPlaneContext,
  DataPlaneFeature,
  DataPlaneListener,
  DataPlaneMetrics,
  DataPlanePool,
  ListenerSpec,
  ListenerStats,
  OutOfService,
  PoolSpec,
  SnapshotSource,
} from '../data-plane';
import { countOpenConnections, createConntrackTool, flowCountKey, type ConntrackCounts, type ConntrackTool } from './conntrack';
import {
  buildTableCommands,
  connectionCounterName,
  removeTableCommands,
  trafficCounterName,
  type KernelBalance,
  type KernelListenerState,
  type KernelTableState,
} from './kernel-ruleset';
import { readSysctls, sysctlNeeds, sysctlProblems } from './kernel-sysctl';
import { verifyTable, type CounterValue } from './kernel-verify';
import { createNftRunner, type NftRunner } from './nft';

/**
 * The kernel data path: nftables rewrites VIP:port to a backend (DNAT) and the source to this node
 * (SNAT), so packets never reach vipd. vipd owns one table, `inet <kernel.table>`, and nothing else:
 * - every change (health, a drain, a listener added or closed, a reload) rebuilds the whole table in one
 *   atomic transaction (kernel-ruleset.ts), then reads it back (kernel-verify.ts); a listener is bound
 *   only while the read-back shows its rules. The table is read back every VERIFY_INTERVAL_MS too, so
 *   a table that someone else flushed unbinds its listeners (and the VIP is withdrawn) until rewritten;
 * - if vipd dies the table stays, so established connections keep flowing; a restarted vipd replaces
 *   it in one transaction; close() removes it after its listeners' grace; destroy() leaves it;
 * - a backend that goes down leaves the map in the next write (no new connection reaches it); its
 *   established connections are cut (conntrack -D) under closeOnBackendDown, or left to finish.
 * No feature of the proxy is offered (features is empty): nothing here sees a connection.
 */

/** How often the table is read back (verify, counters) and conntrack is counted. */
export const VERIFY_INTERVAL_MS = 2000;
/** After a failed write, the next attempt. */
const RETRY_MS = 1000;
/** While a closing listener waits for its connections to end, how often it looks. */
const CLOSE_POLL_MS = 250;

export interface KernelDataPlaneOptions {
  readonly table: string;
  readonly snatIpv4?: string;
  readonly snatIpv6?: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  /** Tests inject fakes; the real ones run nft and conntrack. */
  readonly nft?: NftRunner;
  readonly conntrack?: ConntrackTool;
  readonly readSysctls?: (keys: readonly string[]) => Promise<Map<string, string | undefined>>;
}

/** The factory main.ts registers for DataPath 'kernel'. */
export function createKernelDataPlane(context: DataPlaneContext): DataPlane {
  const k = context.config.kernel;
  return new KernelDataPlane({
    table: k.table,
    ...(k.snatIpv4 !== undefined ? { snatIpv4: k.snatIpv4 } : {}),
    ...(k.snatIpv6 !== undefined ? { snatIpv6: k.snatIpv6 } : {}),
    logger: context.logger.child({ component: 'kernel' }),
    metrics: context.metrics,
    clock: context.clock,
  });
}

function kernelBalance(spec: PoolSpec): KernelBalance {
  // The config refuses least-conn and random-two for kernel listeners (they pick on live counts).
  return spec.balance === 'source-hash' || spec.balance === 'random' ? spec.balance : 'round-robin';
}

class KernelPool implements DataPlanePool {
  readonly pool: string;
  private readonly drained = new Set<string>();
  private readonly serviceListeners = new ListenerSet<void>();
  private healthy: ReadonlySet<string>;
  private readonly unsubscribe: () => void;

  constructor(
    public spec: PoolSpec,
    health: SnapshotSource,
    private readonly plane: KernelDataPlane,
  ) {
    this.pool = spec.name;
    this.healthy = new Set(health.snapshot().healthy.map((e) => e.key));
    this.unsubscribe = health.onChange((snapshot) => {
      const now = new Set(snapshot.healthy.map((e) => e.key));
      const wentDown = [...this.healthy].filter((key) => !now.has(key));
      this.healthy = now;
      plane.changed(this, wentDown);
    });
  }

  /** Keys that may take new connections now: healthy and not drained. */
  usable(): ReadonlySet<string> {
    return new Set([...this.healthy].filter((key) => !this.drained.has(key) && this.spec.backends.some((b) => b.endpoint.key === key)));
  }

  active(backend: Endpoint): number {
    return this.plane.openConnections(this.pool, backend.key);
  }

  counters(backendKey: string): BackendCounters {
    return {
      active: this.plane.openConnections(this.pool, backendKey),
      total: this.plane.rewrittenConnections(this.pool, backendKey),
      connectErrors: 0,
      queued: 0,
      drained: this.drained.has(backendKey),
    };
  }

  outOfService(): OutOfService {
    return { drained: [...this.drained], ejected: [] };
  }

  onServiceChange(listener: () => void): () => void {
    return this.serviceListeners.add(listener);
  }

  drainBackend(backendKey: string, drained: boolean): boolean {
    if (!this.spec.backends.some((b) => b.endpoint.key === backendKey)) return false;
    if (drained === this.drained.has(backendKey)) return true;
    if (drained) this.drained.add(backendKey);
    else this.drained.delete(backendKey);
    // Drained: out of the map in the next write; its established connections carry on.
    this.plane.changed(this, []);
    this.serviceListeners.emit();
    return true;
  }

  reconfigure(spec: PoolSpec): readonly string[] {
    const keep = new Set(spec.backends.map((b) => b.endpoint.key));
    const removed = this.spec.backends.map((b) => b.endpoint.key).filter((key) => !keep.has(key));
    this.spec = spec;
    for (const key of removed) this.drained.delete(key);
    this.plane.changed(this, spec.closeOnBackendDown ? removed : []);
    return removed;
  }

  close(): void {
    this.unsubscribe();
    this.serviceListeners.clear();
    this.plane.removePool(this.pool);
  }
}

type ListenerPhase = 'idle' | 'active' | 'closing' | 'closed';

class KernelListener implements DataPlaneListener {
  phase: ListenerPhase = 'idle';
  private readonly boundListeners = new ListenerSet<boolean>();
  private lastBound = false;
  private closing: Promise<void> | undefined;

  constructor(
    public spec: ListenerSpec,
    readonly pool: KernelPool,
    private readonly plane: KernelDataPlane,
  ) {}

  async start(): Promise<void> {
    if (this.phase === 'closing' || this.phase === 'closed') throw new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} is closed`);
    await this.plane.ready();
    await this.plane.checkSysctls([this.spec.address]);
    this.phase = 'active';
    await this.plane.writeNow();
    if (!this.bound()) throw new VipdError('VIPD_ERR_KERNEL', `listener ${this.spec.id}: ${this.plane.problemOf(this.spec.id)}`);
  }

  bound(): boolean {
    return this.phase === 'active' && this.plane.isVerified(this.spec.id);
  }

  /** Called by the plane after each read-back. */
  notify(): void {
    const now = this.bound();
    if (now === this.lastBound) return;
    this.lastBound = now;
    this.boundListeners.emit(now);
  }

  onBoundChange(listener: (bound: boolean) => void): () => void {
    return this.boundListeners.add(listener);
  }

  stats(): ListenerStats {
    return { accepted: this.plane.listenerRewritten(this.spec.id), active: this.plane.listenerOpen(this.spec.id), refused: 0, errors: 0 };
  }

  reconfigure(spec: ListenerSpec): void {
    this.spec = spec;
    this.plane.changed(this.pool, []);
  }

  /**
   * No new connection from now on (its rewrite leaves the table; the source rewrites stay so that its
   * established connections keep being translated), then up to graceMs for them to end, then its rules go.
   */
  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      if (this.phase === 'closed') return;
      const wasActive = this.phase === 'active';
      this.phase = 'closing';
      this.notify();
      if (wasActive) {
        await this.plane.writeNow();
        const deadline = this.plane.clock.now() + graceMs;
        while (this.plane.clock.now() < deadline && this.plane.listenerOpen(this.spec.id) > 0 && this.phase === 'closing') {
          await new Promise<void>((resolve) => this.plane.clock.setTimeout(resolve, CLOSE_POLL_MS));
          await this.plane.countConnections();
        }
      }
      this.phase = 'closed';
      this.plane.removeListener(this);
    })();
    return this.closing;
  }

  destroy(): Promise<void> {
    if (this.phase !== 'closed') {
      this.phase = 'closed';
      this.notify();
      this.plane.removeListener(this);
    }
    return this.closing ?? Promise.resolve();
  }
}

export class KernelDataPlane implements DataPlane {
  readonly kind = 'kernel';
  readonly features: ReadonlySet<DataPlaneFeature> = new Set();
  readonly clock: Clock;
  private readonly log: Logger;
  private readonly metricsRegistry: Metrics;
  private readonly nft: NftRunner;
  private readonly conntrack: ConntrackTool;
  private readonly sysctls: (keys: readonly string[]) => Promise<Map<string, string | undefined>>;
  private readonly pools = new Map<string, KernelPool>();
  private readonly listeners = new Map<string, KernelListener>();
  private readonly queue = new LatestOnlyQueue();
  private readonly nonce = randomBytes(3).toString('hex');
  private writes = 0;
  private dirty = true;
  private verified: ReadonlySet<string> = new Set();
  private problems: readonly string[] = [];
  private lastState: KernelTableState | undefined;
  private lifecycle: 'idle' | 'starting' | 'running' | 'closed' = 'idle';
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private timer: { cancel(): void } | undefined;
  private retry: { cancel(): void } | undefined;
  /** Backends whose conntrack entries go once the write that takes them out of the map is in place. */
  private pendingCuts: Array<{ pool: string; backend: Endpoint }> = [];
  /** Last raw value of each named counter, to turn nft's absolute values into increments. */
  private readonly lastCounters = new Map<string, CounterValue>();
  /** Cumulative per counter name since this process started (a rebuilt table restarts nft's at 0). */
  private readonly cumulative = new Map<string, CounterValue>();
  private open: ConntrackCounts = new Map();
  private readonly checkedFamilies = new Set<number>();

  constructor(private readonly options: KernelDataPlaneOptions) {
    this.clock = options.clock;
    this.log = options.logger;
    this.metricsRegistry = options.metrics;
    this.nft = options.nft ?? createNftRunner();
    this.conntrack = options.conntrack ?? createConntrackTool();
    this.sysctls = options.readSysctls ?? readSysctls;
  }

  readonly metrics: DataPlaneMetrics = {
    refresh: async () => {
      if (this.lifecycle === 'running') await this.countConnections();
    },
    external: async () => [],
  };

  addPool(spec: PoolSpec, health: SnapshotSource): DataPlanePool {
    if (this.pools.has(spec.name)) throw new VipdError('VIPD_ERR_CONFIG', `kernel data path: pool ${spec.name} exists already`);
    const pool = new KernelPool(spec, health, this);
    this.pools.set(spec.name, pool);
    return pool;
  }

  pool(name: string): DataPlanePool | undefined {
    return this.pools.get(name);
  }

  listener(spec: ListenerSpec): DataPlaneListener {
    if (this.lifecycle === 'closed') throw new VipdError('VIPD_ERR_CLOSED', `kernel data path is closed; listener ${spec.id} refused`);
    const pool = this.pools.get(spec.pool.name);
    if (!pool) throw new VipdError('VIPD_ERR_CONFIG', `kernel listener ${spec.id}: pool ${spec.pool.name} was not added`);
    const live = this.listeners.get(spec.id);
    if (live && live.phase !== 'closed') throw new VipdError('VIPD_ERR_CONFIG', `kernel listener ${spec.id} exists already`);
    const listener = new KernelListener(spec, pool, this);
    this.listeners.set(spec.id, listener);
    return listener;
  }

  /**
   * Checks that nftables is usable by this process (nft present, CAP_NET_ADMIN) and the sysctls of the
   * listeners known now; throws VIPD_ERR_KERNEL naming what is missing. Nothing is written here: a
   * table left by an earlier vipd keeps serving until the first write replaces it.
   */
  start(): Promise<void> {
    this.starting ??= (async () => {
      if (this.lifecycle === 'closed') throw new VipdError('VIPD_ERR_CLOSED', 'kernel data path is closed');
      this.lifecycle = 'starting';
      await this.nft.probe();
      await this.checkSysctls([...this.listeners.values()].map((l) => l.spec.address));
      this.lifecycle = 'running';
      this.log.info({ event: 'start', table: `inet ${this.options.table}` }, `kernel data path: nftables usable; vipd owns table inet ${this.options.table}`);
      this.schedulePoll();
    })();
    return this.starting;
  }

  /** Listeners wait for start(); a start that failed fails them with its reason. */
  ready(): Promise<void> {
    return this.start();
  }

  async checkSysctls(addresses: readonly string[]): Promise<void> {
    const families = new Set(addresses.map((a) => isIP(a)).filter((f) => !this.checkedFamilies.has(f)));
    if (families.size === 0) return;
    const needs = sysctlNeeds({ ipv4: families.has(4), ipv6: families.has(6) });
    const problems = sysctlProblems(needs, await this.sysctls(needs.map((n) => n.key)));
    if (problems.length > 0) throw new VipdError('VIPD_ERR_KERNEL', `kernel data path: ${problems.join('; ')}`);
    for (const f of families) this.checkedFamilies.add(f);
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.listeners.values()].map((l) => l.close(graceMs)));
      const wasRunning = this.lifecycle === 'running';
      this.lifecycle = 'closed';
      this.timer?.cancel();
      this.retry?.cancel();
      await this.queue.idle();
      if (wasRunning) {
        try {
          await this.nft.apply(removeTableCommands(this.options.table));
          this.log.info({ event: 'tableRemoved', table: `inet ${this.options.table}` }, `table inet ${this.options.table} removed`);
        } catch (err) {
          this.log.error({ event: 'tableRemoved', err: errorMessage(err) }, `could not remove table inet ${this.options.table}: ${errorMessage(err)}`);
        }
      }
      this.nft.close();
    })();
    return this.closing;
  }

  /** At once, and the table stays: its established connections keep flowing, as when vipd dies. */
  async destroy(): Promise<void> {
    this.lifecycle = 'closed';
    this.timer?.cancel();
    this.retry?.cancel();
    for (const l of this.listeners.values()) l.phase = 'closed';
    this.nft.close();
  }

  // Called by pools and listeners.

  changed(pool: KernelPool, wentDown: readonly string[]): void {
    if (pool.spec.closeOnBackendDown) {
      for (const key of wentDown) {
        const backend = pool.spec.backends.find((b) => b.endpoint.key === key)?.endpoint;
        if (backend) this.pendingCuts.push({ pool: pool.pool, backend });
      }
    }
    this.dirty = true;
    this.sync();
  }

  removePool(name: string): void {
    this.pools.delete(name);
  }

  removeListener(listener: KernelListener): void {
    if (this.listeners.get(listener.spec.id) === listener) this.listeners.delete(listener.spec.id);
    listener.notify();
    if (this.lifecycle === 'running') {
      this.dirty = true;
      this.sync();
    }
  }

  isVerified(id: string): boolean {
    return this.verified.has(id);
  }

  problemOf(id: string): string {
    const own = this.problems.filter((p) => p.startsWith(`${id}:`) || !p.includes(':'));
    return own.length > 0 ? own.join('; ') : this.problems.join('; ') || 'its rules are not in place';
  }

  /** Writes (if anything changed) and reads back; resolves when done. */
  async writeNow(): Promise<void> {
    this.dirty = true;
    this.sync();
    await this.queue.idle();
  }

  openConnections(pool: string, backendKey: string): number {
    let n = 0;
    for (const l of this.listeners.values()) if (l.spec.pool.name === pool) n += this.open.get(flowCountKey(l.spec.id, backendKey)) ?? 0;
    return n;
  }

  rewrittenConnections(pool: string, backendKey: string): number {
    let n = 0;
    for (const l of this.listeners.values()) if (l.spec.pool.name === pool) n += this.cumulative.get(connectionCounterName(l.spec.id, backendKey))?.packets ?? 0;
    return n;
  }

  listenerOpen(id: string): number {
    let n = 0;
    for (const [key, count] of this.open) if (key.startsWith(`${id}\u0000`)) n += count;
    return n;
  }

  listenerRewritten(id: string): number {
    const l = this.listeners.get(id);
    if (!l) return 0;
    return l.spec.pool.backends.reduce((n, b) => n + (this.cumulative.get(connectionCounterName(id, b.endpoint.key))?.packets ?? 0), 0);
  }

  async countConnections(): Promise<void> {
    const text = await this.conntrack.list().catch(() => undefined);
    if (text === undefined) return;
    const listeners = [...this.listeners.values()].map((l) => ({ listener: l.spec.id, vipAddress: l.spec.address, port: l.spec.port }));
    this.open = countOpenConnections(text, listeners);
    for (const pool of this.pools.values()) {
      for (const b of pool.spec.backends) this.metricsRegistry.kernelBackendActive.set({ pool: pool.pool, backend: b.endpoint.key }, this.openConnections(pool.pool, b.endpoint.key));
    }
  }

  // The table.

  private sync(): void {
    if (this.lifecycle !== 'running') return;
    this.queue.pushLatest(() => this.syncOnce());
  }

  private state(): KernelTableState {
    const listeners: KernelListenerState[] = [];
    for (const l of this.listeners.values()) {
      if (l.phase !== 'active' && l.phase !== 'closing') continue;
      const pool = l.pool;
      listeners.push({
        id: l.spec.id,
        vipAddress: l.spec.address,
        port: l.spec.port,
        pool: pool.pool,
        balance: kernelBalance(pool.spec),
        backends: pool.spec.backends.map((b) => ({ endpoint: b.endpoint, weight: b.weight })),
        usable: pool.usable(),
        ...(l.phase === 'closing' ? { closing: true } : {}),
      });
    }
    return {
      table: this.options.table,
      generation: `${this.nonce}.${this.writes + (this.dirty ? 1 : 0)}`,
      ...(this.options.snatIpv4 !== undefined ? { snatIpv4: this.options.snatIpv4 } : {}),
      ...(this.options.snatIpv6 !== undefined ? { snatIpv6: this.options.snatIpv6 } : {}),
      listeners,
    };
  }

  private async syncOnce(): Promise<void> {
    if (this.lifecycle !== 'running') return;
    const writing = this.dirty;
    const state = writing ? this.state() : this.lastState;
    if (state === undefined) return;
    try {
      if (writing) {
        this.dirty = false;
        // Counters counted since the last read would be lost with the old table: read them first.
        this.foldCounters(verifyTable(await this.nft.listTable(this.options.table), this.lastState ?? state).counters);
        await this.nft.apply(buildTableCommands(state));
        this.writes++;
        this.lastState = state;
        this.lastCounters.clear();
        this.metricsRegistry.kernelTableWrites.inc({ result: 'ok' });
      }
      const listed = await this.nft.listTable(this.options.table);
      const result = verifyTable(listed, state);
      this.foldCounters(result.counters);
      this.setVerified(result.verified, result.problems, state);
      if (writing) {
        this.log.info(
          { event: 'tableWritten', generation: state.generation, listeners: state.listeners.map((l) => `${l.id}=${[...l.usable].join(',') || 'none'}${l.closing ? ' (closing)' : ''}`), verified: [...result.verified] },
          `table inet ${this.options.table} replaced (generation ${state.generation}) and read back: ${result.problems.length === 0 ? 'every rule in place' : result.problems.join('; ')}`,
        );
        await this.cutPending();
      }
    } catch (err) {
      if (writing) {
        this.dirty = true;
        this.metricsRegistry.kernelTableWrites.inc({ result: 'failed' });
      }
      // The old table (if any) is still there, but vipd can no longer vouch for it: nothing is bound.
      this.setVerified(new Set(), [errorMessage(err)], state ?? this.state());
      this.log.error({ event: writing ? 'tableWrite' : 'tableRead', err: errorMessage(err) }, `kernel data path: ${errorMessage(err)}; retrying in ${RETRY_MS} ms`);
      this.retry?.cancel();
      this.retry = this.clock.setTimeout(() => this.sync(), RETRY_MS);
    }
  }

  private setVerified(verified: ReadonlySet<string>, problems: readonly string[], state: KernelTableState): void {
    const before = this.verified;
    this.verified = verified;
    this.problems = problems;
    for (const l of state.listeners) {
      this.metricsRegistry.kernelListenerVerified.set({ listener: l.id }, verified.has(l.id) ? 1 : 0);
      if (before.has(l.id) && !verified.has(l.id)) {
        this.log.warn({ event: 'listenerUnverified', listener: l.id, problems }, `kernel listener ${l.id}: its rules are not in place (${problems.join('; ')}); not bound until rewritten`);
        this.dirty = true;
      }
    }
    for (const l of this.listeners.values()) l.notify();
    if (this.dirty) {
      this.retry?.cancel();
      this.retry = this.clock.setTimeout(() => this.sync(), RETRY_MS);
    }
  }

  private foldCounters(counters: ReadonlyMap<string, CounterValue>): void {
    for (const [name, value] of counters) {
      const last = this.lastCounters.get(name) ?? { packets: 0, bytes: 0 };
      // A value below the last one is a table rebuilt since: it counted from 0.
      const dp = value.packets >= last.packets ? value.packets - last.packets : value.packets;
      const db = value.bytes >= last.bytes ? value.bytes - last.bytes : value.bytes;
      this.lastCounters.set(name, value);
      if (dp === 0 && db === 0) continue;
      const sum = this.cumulative.get(name) ?? { packets: 0, bytes: 0 };
      this.cumulative.set(name, { packets: sum.packets + dp, bytes: sum.bytes + db });
      const owner = this.counterOwner(name);
      if (!owner) continue;
      const labels = { pool: owner.pool, backend: owner.backend };
      if (owner.kind === 'conn') this.metricsRegistry.kernelBackendConnections.inc(labels, dp);
      else {
        this.metricsRegistry.kernelBackendPackets.inc(labels, dp);
        this.metricsRegistry.kernelBackendBytes.inc(labels, db);
      }
    }
  }

  private counterOwner(name: string): { kind: 'conn' | 'traffic'; pool: string; backend: string } | undefined {
    for (const l of this.listeners.values()) {
      for (const b of l.spec.pool.backends) {
        if (name === connectionCounterName(l.spec.id, b.endpoint.key)) return { kind: 'conn', pool: l.spec.pool.name, backend: b.endpoint.key };
        if (name === trafficCounterName(l.spec.id, b.endpoint.key)) return { kind: 'traffic', pool: l.spec.pool.name, backend: b.endpoint.key };
      }
    }
    return undefined;
  }

  /** closeOnBackendDown: the backends that just left the map lose their established connections. */
  private async cutPending(): Promise<void> {
    const cuts = this.pendingCuts;
    this.pendingCuts = [];
    for (const cut of cuts) {
      for (const l of this.listeners.values()) {
        if (l.spec.pool.name !== cut.pool) continue;
        try {
          const deleted = await this.conntrack.deleteFlows(l.spec.address, l.spec.port, cut.backend);
          this.metricsRegistry.kernelConntrackDeleted.inc({ pool: cut.pool, backend: cut.backend.key }, deleted);
          this.log.info({ event: 'backendDownClose', listener: l.spec.id, backend: cut.backend.key, deleted }, `closeOnBackendDown: ${deleted} conntrack entr${deleted === 1 ? 'y' : 'ies'} of ${l.spec.id} → ${cut.backend.key} deleted (their next packet is answered with a reset)`);
        } catch (err) {
          this.log.warn({ event: 'backendDownClose', listener: l.spec.id, backend: cut.backend.key, err: errorMessage(err) }, `closeOnBackendDown: ${errorMessage(err)}`);
        }
      }
    }
  }

  private schedulePoll(): void {
    if (this.lifecycle !== 'running') return;
    this.timer = this.clock.setTimeout(() => {
      this.sync();
      void this.countConnections().finally(() => this.schedulePoll());
    }, VERIFY_INTERVAL_MS);
  }
}
