import type { Endpoint } from '../net/endpoint';
import type { PoolSnapshot } from '../health/health';

/**
 * Contract of the proxy module: one TCP listener per VIP:port, relaying to a backend picked from the
 * pool snapshot that health rebuilds. The proxy never dials anything but configured backends.
 */
export type BalanceAlgorithm = 'round-robin' | 'least-conn';

export interface ListenerSpec {
  /** "control-plane:2379", used in logs and metric labels. */
  readonly id: string;
  readonly vip: string;
  readonly address: string;
  readonly port: number;
  readonly pool: string;
  readonly balance: BalanceAlgorithm;
  readonly connectTimeoutMs: number;
  /** How many distinct backends one client connection may try before it is closed. */
  readonly maxConnectAttempts: number;
}

/** Live per-backend connection counts shared by every listener of a pool (least-conn reads it). */
export interface BackendLoad {
  active(backend: Endpoint): number;
}

/** Chooses a backend from a snapshot; `exclude` holds keys already tried for this connection. */
export interface Picker {
  pick(snapshot: PoolSnapshot, load: BackendLoad, exclude: ReadonlySet<string>): Endpoint | undefined;
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
  /** Stops accepting; waits up to graceMs for sessions to end, then destroys the rest. Idempotent. */
  close(graceMs: number): Promise<void>;
  /** Destroys the server and every session at once. Idempotent. */
  destroy(): void;
}

/** Per-backend counters for status. */
export interface BackendCounters {
  readonly active: number;
  readonly total: number;
  readonly connectErrors: number;
}

/**
 * Per-backend counters of one pool, shared by all of its listeners (added for status: it reads
 * counters through this contract rather than through the proxy's concrete tracker).
 */
export interface PoolLoad extends BackendLoad {
  readonly pool: string;
  /** Zeros for a backend that has never been dialled. */
  counters(backendKey: string): BackendCounters;
}
