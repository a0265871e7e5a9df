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

/**
 * One probe attempt. Never rejects: every failure is a ProbeResult with ok=false. Probes that hold
 * resources across attempts (a gRPC channel per backend) release them in close(); the pool calls it
 * once its checkers have stopped.
 */
export interface Probe {
  readonly kind: string;
  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult>;
  close?(): void;
}

export type CheckKind = 'tcp' | 'http' | 'https' | 'etcd' | 'grpc' | 'exec';

/**
 * The most a probe reads of any reply (http body, tcp expect, gRPC answer): a probe has no use for more,
 * and a huge or endless reply must neither hold the probe open nor cost memory.
 */
export const MAX_REPLY_BYTES = 64 * 1024;

/** How much of an exec check's stdout+stderr goes into the detail. */
export const MAX_EXEC_OUTPUT_BYTES = 4 * 1024;

export interface CheckSpec {
  readonly kind: CheckKind;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** HAProxy's fastinter: the interval while a transition is pending (Envoy's changePending); intervalMs when unset. */
  readonly fastIntervalMs?: number;
  /** HAProxy's downinter: the interval while the backend is unhealthy; intervalMs when unset. */
  readonly downIntervalMs?: number;
  readonly rise: number;
  readonly fall: number;
  /** http/https only (etcd always asks /health) */
  readonly path: string;
  /** Statuses that pass; empty means [200]. */
  readonly expectStatus: readonly number[];
  /** Host header, "name" or "name:port"; the target address when unset. */
  readonly host?: string;
  /** PEM bundle that replaces the default trust store; read once, when the probe is built. */
  readonly caFile?: string;
  /** Client certificate and its key (PEM), presented to backends that ask (etcd's --client-cert-auth). Read once. */
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly insecureSkipVerify: boolean;
  /** SNI and the name the certificate must carry; defaults to the Host header's name when it is not an IP. */
  readonly serverName?: string;
  /** etcd and grpc: speak TLS (with the files above). http/https say it in their kind. */
  readonly tls?: boolean;
  /** http/https: the body must contain this. */
  readonly expectBody?: string;
  /** http/https: the body is JSON and each dotted path holds this value (compared as JSON). */
  readonly expectJson?: Readonly<Record<string, unknown>>;
  /** tcp: bytes written once connected. */
  readonly send?: Buffer;
  /** tcp: bytes that must arrive (substring) within the timeout. */
  readonly expect?: Buffer;
  /** grpc: the service name asked about; "" (the server as a whole) when unset. */
  readonly service?: string;
  /** exec: argv, run without a shell. */
  readonly command?: readonly string[];
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
