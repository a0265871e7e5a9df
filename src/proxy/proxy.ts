import type { Endpoint } from '../net/endpoint';
import type { PoolSnapshot } from '../health/health';

/**
 * Contract of the proxy module: one TCP listener per VIP:port, relaying to a backend picked from the
 * pool snapshot that health rebuilds. The proxy never dials anything but configured backends.
 */
export type BalanceAlgorithm = 'round-robin' | 'least-conn' | 'random-two' | 'random' | 'source-hash';

/**
 * When a client may be moved to another backend after its backend failed (reset or closed) before
 * sending a single byte, the client's bytes so far being sent again (src/proxy/replay.ts):
 * - 'tls': only while everything the client sent is TLS handshake records. A TLS server cannot have
 *   acted on a request before it answered the ClientHello, so the replay is invisible to the client
 *   and executes nothing twice. kube-apiserver and etcd speak TLS; this is the default.
 * - 'always': whatever the client sent. For plaintext protocols a backend may have executed a request
 *   and died before answering, and the replay executes it again.
 * - 'off': never; the client sees the failure.
 */
export type RetryBeforeReply = 'tls' | 'always' | 'off';

/** One configured backend with its static settings. */
export interface BackendSpec {
  readonly endpoint: Endpoint;
  /** Relative share, 1..1000. */
  readonly weight: number;
  /** Cap on concurrent upstream connections; undefined = unlimited. */
  readonly maxConnections?: number;
}

/** Everything about a pool that the proxy needs, from config; immutable. */
export interface PoolSpec {
  readonly name: string;
  readonly balance: BalanceAlgorithm;
  readonly backends: readonly BackendSpec[];
  /** Weight ramps from ~0 to full over this time after a backend becomes healthy; 0 = off. */
  readonly slowStartMs: number;
  readonly connectTimeoutMs: number;
  /** How many distinct backends one client connection may try before it is closed. */
  readonly maxConnectAttempts: number;
  /** Whether a backend failing before its first byte moves the client to another (within maxConnectAttempts). */
  readonly retryBeforeReply: RetryBeforeReply;
  /** When every candidate backend is at maxConnections: wait in a bounded queue (size 0 = refuse at once). */
  readonly queue: { readonly size: number; readonly timeoutMs: number };
  /** 0 = off for each. */
  readonly timeouts: {
    readonly firstByteMs: number;
    readonly idleMs: number;
    readonly maxConnectionAgeMs: number;
    readonly maxConnectionAgeJitterMs: number;
  };
  /** TCP keepalive idle time on both legs. */
  readonly tcpKeepaliveMs: number;
  /** Passive health: consecutive connect failures eject a backend from picking (0 = off). */
  readonly outlier: { readonly consecutiveConnectFailures: number; readonly baseEjectionMs: number; readonly maxEjectionMs: number };
  readonly closeOnBackendDown: boolean;
}

export interface ListenerSpec {
  /** "control-plane:2379", used in logs and metric labels. */
  readonly id: string;
  readonly vip: string;
  readonly address: string;
  readonly port: number;
  readonly pool: PoolSpec;
  /** Cap on concurrent client connections of this listener; undefined = unlimited. */
  readonly maxConnections?: number;
}

/** Process-wide client connection limits, shared by every listener. */
export interface ProxyLimitsSpec {
  readonly maxConnections?: number;
  readonly maxConnectionsPerSource?: number;
}

/** Live per-backend connection counts shared by every listener of a pool (least-conn reads it). */
export interface BackendLoad {
  active(backend: Endpoint): number;
}

/** One pick: what the picker may look at. Built per client connection; pickers must not keep it. */
export interface PickRequest {
  readonly snapshot: PoolSnapshot;
  readonly load: BackendLoad;
  /** True for backends that may not be picked now: already tried for this connection, ejected, drained by the operator, or full. */
  readonly skip: (backendKey: string) => boolean;
  /** The client's IP address (source-hash keys on it). */
  readonly clientAddress: string;
  /** Wall-clock ms, comparable with BackendStatus.since (slow start). */
  readonly now: number;
}

/**
 * Chooses a backend among snapshot.healthy, never one that `skip` refuses. A picker may precompute per
 * snapshot version (e.g. a Maglev table) but never mutates the snapshot.
 */
export interface Picker {
  pick(request: PickRequest): Endpoint | undefined;
}

export interface ListenerStats {
  readonly accepted: number;
  readonly active: number;
  readonly refused: number;
  readonly errors: number;
}

export interface ProxyListener {
  readonly spec: ListenerSpec;
  /** Binds the socket; rejects with the bind error (EADDRNOTAVAIL, EADDRINUSE...). */
  start(): Promise<void>;
  bound(): boolean;
  onBoundChange(listener: (bound: boolean) => void): () => void;
  stats(): ListenerStats;
  /**
   * Graceful: stops accepting (start() is refused from then on), waits up to graceMs for sessions to
   * end, then destroys the rest. Idempotent: every call returns the same promise, which resolves once
   * no session is left and the socket is closed.
   */
  close(graceMs: number): Promise<void>;
  /**
   * At once: stops accepting and resets every session. Idempotent; resolves once they are gone. A
   * close() under way ends with it.
   */
  destroy(): Promise<void>;
}

/** Per-backend counters for status. */
export interface BackendCounters {
  readonly active: number;
  readonly total: number;
  readonly connectErrors: number;
  /** Clients waiting in the pool queue, attributed to this backend (the full one the balancer chose). */
  readonly queued: number;
  /** Wall-clock ms at which passive health lets the backend be picked again; absent when not ejected. */
  readonly ejectedUntil?: number;
  /** Drained by the operator: no new connections, existing ones carry on. */
  readonly drained: boolean;
}

/**
 * Per-backend counters of one pool, shared by all of its listeners (added for status: it reads
 * counters through this contract rather than through the proxy's concrete tracker).
 */
export interface PoolLoad extends BackendLoad {
  readonly pool: string;
  /** Zeros for a backend that has never been dialled. */
  counters(backendKey: string): BackendCounters;
  /** Backends taken out of picking now, whatever their health: by the operator (drained) or by passive health (ejected). */
  outOfService(): OutOfService;
  /** Told after every change of outOfService() (a drain, an undrain, an ejection or its end). Returns an unsubscribe. */
  onServiceChange(listener: () => void): () => void;
}

export interface OutOfService {
  readonly drained: readonly string[];
  readonly ejected: readonly string[];
}
