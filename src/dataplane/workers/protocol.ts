import type { PoolSnapshot } from '../../health/health';
import type { ProxyLimitsSpec } from '../../proxy/proxy';
import type { BackendCounters, ListenerSpec, ListenerStats, MetricsJson, PoolSpec } from '../data-plane';

/**
 * IPC between the primary and its proxy workers (node:cluster channel, JSON serialisation). Everything
 * here is plain data: the primary owns health, decisions and BGP, and workers only ever receive the
 * results. Every type carries the `vipd:` prefix so that node:cluster's and prom-client's own messages on
 * the same channel are never taken for ours.
 */

export type { MetricsJson } from '../data-plane';

export interface WorkerListenerInit {
  /** Already scaled to this worker's share of every total cap (see perWorkerSpec); its pool is that of WorkerPoolInit. */
  readonly spec: ListenerSpec;
  /** Bind at once: the primary wants this listener accepting (a restarted worker rejoins it). */
  readonly start: boolean;
}

export interface WorkerPoolInit {
  /** This worker's share of the pool's caps (see perWorkerPoolSpec). */
  readonly spec: PoolSpec;
  readonly snapshot: PoolSnapshot;
  /** Backend keys the operator drained. */
  readonly drained: readonly string[];
}

/** Primary → worker. `init` is always the first message a worker receives. */
export type ToWorker =
  | {
      readonly type: 'vipd:init';
      readonly worker: number;
      readonly log: { readonly level: string; readonly bindings: Record<string, unknown> };
      readonly reportIntervalMs: number;
      /** This worker's share of the process-wide caps (see perWorkerLimits). */
      readonly limits: ProxyLimitsSpec;
      readonly pools: readonly WorkerPoolInit[];
      readonly listeners: readonly WorkerListenerInit[];
    }
  | { readonly type: 'vipd:start'; readonly listener: string }
  | { readonly type: 'vipd:snapshot'; readonly snapshot: PoolSnapshot }
  | { readonly type: 'vipd:drainBackend'; readonly pool: string; readonly backend: string; readonly drained: boolean }
  | { readonly type: 'vipd:close'; readonly listener: string; readonly graceMs: number }
  | { readonly type: 'vipd:destroy'; readonly listener: string }
  | { readonly type: 'vipd:metrics'; readonly request: number }
  /** Reload: a new pool (before any listener of it is added). */
  | { readonly type: 'vipd:addPool'; readonly pool: WorkerPoolInit }
  /**
   * Reload: the pool's backends and settings become `spec` (this worker's share), as
   * BackendLoadTracker.reconfigure does in process; its listeners take the new pool spec.
   */
  | { readonly type: 'vipd:updatePool'; readonly spec: PoolSpec }
  /** Reload: the pool is gone (its listeners were closed first). */
  | { readonly type: 'vipd:removePool'; readonly pool: string }
  /** Reload: a new listener; a `vipd:start` follows when the primary wants it accepting. */
  | { readonly type: 'vipd:addListener'; readonly listener: WorkerListenerInit }
  /** Reload: new sessions of the listener use `spec` (same id and pool; this worker's share). */
  | { readonly type: 'vipd:updateListener'; readonly spec: ListenerSpec }
  /** Destroy everything and exit: the pool is shutting down. */
  | { readonly type: 'vipd:exit' }
  /** Heartbeat: answered at once with pong; a worker that stays silent for proxy.hangTimeout is killed. */
  | { readonly type: 'vipd:ping'; readonly seq: number };

export interface ListenerReport {
  readonly id: string;
  readonly stats: ListenerStats;
}

export interface PoolReport {
  readonly pool: string;
  readonly backends: ReadonlyArray<{ readonly key: string; readonly counters: BackendCounters }>;
}

/** Worker → primary. */
export type FromWorker =
  /** init is done and every listener exists; binding may still be under way. */
  | { readonly type: 'vipd:ready' }
  /** The listener's socket accepts in this worker (true) or no longer does (false). */
  | { readonly type: 'vipd:bound'; readonly listener: string; readonly bound: boolean; readonly port?: number }
  | { readonly type: 'vipd:bindFailed'; readonly listener: string; readonly code?: string; readonly message: string }
  /** Cumulative counters since the worker started. */
  | { readonly type: 'vipd:report'; readonly listeners: readonly ListenerReport[]; readonly pools: readonly PoolReport[] }
  | { readonly type: 'vipd:closed'; readonly listener: string }
  | { readonly type: 'vipd:metrics'; readonly request: number; readonly metrics: MetricsJson }
  /** The answer to ping: this worker's event loop runs. */
  | { readonly type: 'vipd:pong'; readonly seq: number };

export function isProtocolMessage<T extends { readonly type: string }>(message: unknown): message is T {
  return (
    typeof message === 'object' &&
    message !== null &&
    typeof (message as { type?: unknown }).type === 'string' &&
    (message as { type: string }).type.startsWith('vipd:')
  );
}
