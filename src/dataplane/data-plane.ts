import type { Registry } from 'prom-client';
import type { Config } from '../config/config';
import type { Clock } from '../lib/clock';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { SnapshotSource } from '../proxy/backend-load';
import type { ListenerSpec, ListenerStats, PoolLoad, PoolSpec } from '../proxy/proxy';

export type { BackendCounters, ListenerSpec, ListenerStats, OutOfService, PoolLoad, PoolSpec } from '../proxy/proxy';
export type { SnapshotSource } from '../proxy/backend-load';

/**
 * Contract of the data-plane module: what the daemon needs from whatever carries VIP:port traffic to
 * the backends. Health, the announce decision and BGP stay in the daemon; a data plane only serves
 * listeners from pools and says, truthfully, whether each listener is bound (the announce gate reads
 * it, so a data plane must never claim a listener that nothing serves).
 *
 * Implementations (registered in one place, src/dataplane/data-planes.ts, by DataPath):
 * - in-process (src/dataplane/in-process.ts): the user-space proxy in this process;
 * - workers (src/dataplane/workers/): the same proxy in N worker processes (proxy.workers > 1);
 * - kernel (src/dataplane/kernel/): nftables DNAT/SNAT, no user-space sessions.
 * A daemon holds one DataPlaneSet (src/dataplane/data-plane-set.ts), which builds one plane per data
 * path in use and routes each listener to its plane, so main.ts never branches on which it has.
 */

/** Which data plane carries a listener (`vips[].listeners[].dataPath`, default `proxy`). */
export type DataPath = 'proxy' | 'kernel';

/**
 * What a data plane can do beyond bind/unbind and the pool view. The proxy has all of them; a kernel
 * path has none (no sessions, no queue, no retries). A listener spec that asks for a feature its plane
 * lacks is refused by name (refusedFeatures), never silently served without it.
 */
export type DataPlaneFeature =
  /** User-space sessions: per-session timeouts (firstByte, idle, max age), graceful session drain on close. */
  | 'sessions'
  /** Moving a client to another backend before its first reply byte (PoolSpec.retryBeforeReply, maxConnectAttempts). */
  | 'retryBeforeReply'
  /** A bounded wait queue when every backend is full (PoolSpec.queue). */
  | 'queue'
  /** Picking on live connection counts (balance least-conn, random-two). */
  | 'leastConn'
  /** Passive health: ejection after consecutive connect failures (PoolSpec.outlier). */
  | 'passiveHealth'
  /** Per-source client caps (proxy.maxConnectionsPerSource). */
  | 'perSourceLimits';

/**
 * One listener (VIP:port) of a data plane. start()/close()/destroy() are the bind/unbind:
 * - start(): binds; rejects with the bind error (EADDRNOTAVAIL...). The daemon retries. It may be
 *   called before its plane's start() has finished (a plane a reload brought in) and waits for it.
 * - close(graceMs): unbinds gracefully (no new connections at once; sessions get graceMs). Idempotent.
 * - destroy(): unbinds at once. Idempotent; a close() under way ends with it.
 */
export interface DataPlaneListener {
  readonly spec: ListenerSpec;
  /** The pool view this listener picks from, in its own data plane (the gate reads outOfService() here). */
  readonly pool: PoolLoad;
  start(): Promise<void>;
  /**
   * True only while traffic to spec.address:spec.port is really served: a socket accepting (in-process),
   * at least one live, answering worker accepting (workers), rules in place and verified (kernel).
   */
  bound(): boolean;
  onBoundChange(listener: (bound: boolean) => void): () => void;
  /** Counters as this plane knows them (a kernel plane: from conntrack/nft; refused and errors may stay 0). */
  stats(): ListenerStats;
  /** Reload: new connections use `spec` (same id, same pool). Pool changes arrive through DataPlanePool.reconfigure. */
  reconfigure(spec: ListenerSpec): void;
  /**
   * drain.closeAfter: cuts the client connections open now and returns how many. Optional: a plane
   * that cannot reach its connections from here (workers today) leaves it out, and they end by
   * themselves (the daemon logs that).
   */
  closeConnections?(): number;
  close(graceMs: number): Promise<void>;
  destroy(): Promise<void>;
}

/** A pool as a data plane holds it: the load view for status and the gate, plus what the daemon changes. */
export interface DataPlanePool extends PoolLoad {
  /**
   * Operator drain: stops (true) or resumes new connections to the backend; established ones carry on.
   * False (nothing changed) for a backend that is not in the pool.
   */
  drainBackend(backendKey: string, drained: boolean): boolean;
  /**
   * Reload: backends, weights, caps and settings become `spec`, for the pool and every listener of it in
   * this plane. Kept backends keep their connections; removed ones drain (or are closed under
   * closeOnBackendDown). Returns the removed backends' keys.
   */
  reconfigure(spec: PoolSpec): readonly string[];
  /** Reload removed the pool (its listeners are closed first): it leaves the plane. */
  close(): void;
}

/** Series a data plane holds outside the daemon's own registry (e.g. its workers'), for a scrape. */
export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

export interface DataPlaneMetrics {
  /**
   * Called at each scrape before the daemon's registry is read: gauges the plane computes on demand
   * (pool skew, nft counters, conntrack counts) are set in the daemon's registry here.
   */
  refresh(): Promise<void>;
  /**
   * Registries of other processes, already filtered to what they add (empty when everything lives in
   * the daemon's registry). Combined with the daemon's registry by src/dataplane/metrics-merge.ts.
   */
  external(): Promise<readonly MetricsJson[]>;
}

/**
 * A data plane. Lifecycle: built with the pools it starts with; start() before the first listener
 * binds; close(graceMs) closes every listener still open with that grace and then stops (worker
 * processes exit, a kernel table is removed); destroy() stops at once. Both are idempotent and
 * awaitable, and refuse new listeners afterwards.
 */
export interface DataPlane {
  /** For logs and status: 'in-process', 'workers', 'kernel'. */
  readonly kind: string;
  readonly features: ReadonlySet<DataPlaneFeature>;
  /** Adds a pool (at build or by a reload, before its listeners). Throws if the name exists. */
  addPool(spec: PoolSpec, health: SnapshotSource): DataPlanePool;
  /** The pool added under `name`, if any. */
  pool(name: string): DataPlanePool | undefined;
  /** A new listener of a pool added before. Not bound until its start(). Throws for an unknown pool or a live id. */
  listener(spec: ListenerSpec): DataPlaneListener;
  start(): Promise<void>;
  close(graceMs: number): Promise<void>;
  destroy(): Promise<void>;
  readonly metrics: DataPlaneMetrics;
}

/** What every data plane is built from (the per-plane options come from the factory's own config reading). */
export interface DataPlaneContext {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
  readonly config: Config;
}

/** Builds the plane of one DataPath; main.ts registers one per path (see data-planes.ts). */
export type DataPlaneFactory = (context: DataPlaneContext) => DataPlane;

/** Every DataPath has a factory: a data path without one is a compile error, not a runtime surprise. */
export type DataPlaneFactories = { readonly [P in DataPath]: DataPlaneFactory };
