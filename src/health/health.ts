import type { Endpoint } from '../net/endpoint';

/**
 * Contract of the health module. Health knows nothing of BGP: it turns probe results into
 * per-backend states and publishes immutable pool snapshots that the proxy and announce read.
 */
export type HealthState = 'unknown' | 'healthy' | 'unhealthy';

export interface ProbeResult {
  readonly ok: boolean;
  /** Short human-readable outcome: "200 OK", "connect ECONNREFUSED", "timeout after 150ms". */
  readonly detail: string;
  readonly durationMs: number;
}

/** One probe attempt. Never rejects: every failure is a ProbeResult with ok=false. */
export interface Probe {
  readonly kind: string;
  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult>;
}

export interface CheckSpec {
  readonly kind: 'tcp' | 'http' | 'https';
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
  /** http/https only */
  readonly path: string;
  /** Statuses that pass; empty means [200]. */
  readonly expectStatus: readonly number[];
  /** Host header, "name" or "name:port"; the target address when unset. */
  readonly host?: string;
  /** PEM bundle that replaces the default trust store; read once, when the probe is built. */
  readonly caFile?: string;
  readonly insecureSkipVerify: boolean;
  /** SNI and the name the certificate must carry; defaults to the Host header's name when it is not an IP. */
  readonly serverName?: string;
}

export interface BackendStatus {
  readonly backend: Endpoint;
  readonly state: HealthState;
  /** Wall-clock ms of the last state change. */
  readonly since: number;
  readonly lastResult?: ProbeResult & { readonly at: number };
}

/** Immutable view of one pool; a new object is built on every change, never mutated. */
export interface PoolSnapshot {
  readonly pool: string;
  /** Increments exactly when a backend changes state; a newer snapshot with the same version differs only in lastResult. */
  readonly version: number;
  readonly backends: readonly BackendStatus[];
  /** Backends whose state is 'healthy', in configured order. */
  readonly healthy: readonly Endpoint[];
  /** True once every backend has left 'unknown'. */
  readonly settled: boolean;
}

export interface HealthTransition {
  readonly pool: string;
  readonly backend: Endpoint;
  readonly from: HealthState;
  readonly to: HealthState;
  readonly result: ProbeResult;
}

/** Health of one pool: one checker per backend. start(), close() and destroy() are idempotent. */
export interface PoolHealth {
  readonly pool: string;
  start(): void;
  /**
   * Graceful: no probe starts from now on and no listener hears of anything; resolves once the probes
   * in flight have answered (each within its timeout). A closed pool never starts again.
   */
  close(): Promise<void>;
  /** At once: as close(), but probes in flight are abandoned. Resolves at once. */
  destroy(): Promise<void>;
  snapshot(): PoolSnapshot;
  /**
   * Called after every snapshot change (state transitions only, not every probe; and after reconfigure(),
   * with no transition). Returns an unsubscribe.
   */
  onChange(listener: (snapshot: PoolSnapshot, transition: HealthTransition | undefined) => void): () => void;
  /**
   * Reload: the pool's backends and check become these. A backend kept with the same check keeps its
   * checker and state; one kept under a changed check keeps its state and gets a new checker; a new
   * one starts 'unknown' (so it takes traffic after `rise` passes); a removed one stops being checked.
   * Throws VipdError VIPD_ERR_CONFIG (and changes nothing) on what createPoolHealth would refuse.
   */
  reconfigure(backends: readonly Endpoint[], check: CheckSpec): void;
}
