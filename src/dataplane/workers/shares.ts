import type { ProxyLimitsSpec } from '../../proxy/proxy';
import type { ListenerSpec, PoolSpec } from '../data-plane';

/**
 * Cap sharing: each worker enforces its share of every total cap, since the workers count their own
 * connections only. The kernel spreads connections evenly enough (see worker-pool.ts) that a worker
 * rarely refuses while another has room.
 */

/**
 * The share of a pool that worker `index` of `workers` enforces. Total caps (per-backend connections,
 * queue length) are divided so that the shares add up to the configured total (see share()).
 */
export function perWorkerPoolSpec(pool: PoolSpec, workers: number, index: number): PoolSpec {
  return {
    ...pool,
    backends: pool.backends.map((b) => (b.maxConnections === undefined ? b : { ...b, maxConnections: share(b.maxConnections, workers, index) })),
    queue: { ...pool.queue, size: share(pool.queue.size, workers, index) },
  };
}

/** The share of a listener that worker `index` of `workers` enforces (its pool: perWorkerPoolSpec). */
export function perWorkerSpec(spec: ListenerSpec, workers: number, index: number): ListenerSpec {
  return {
    ...spec,
    ...(spec.maxConnections === undefined ? {} : { maxConnections: share(spec.maxConnections, workers, index) }),
    pool: perWorkerPoolSpec(spec.pool, workers, index),
  };
}

/**
 * Process-wide limits for worker `index` of `workers`. The global cap is divided like the listener
 * caps; the per-source cap is not: one client's few connections land on workers unpredictably, so a
 * divided cap would refuse a client well below its configured allowance, while an undivided one lets
 * it reach at most `workers` times the cap.
 */
export function perWorkerLimits(limits: ProxyLimitsSpec, workers: number, index: number): ProxyLimitsSpec {
  return {
    ...limits,
    ...(limits.maxConnections === undefined ? {} : { maxConnections: share(limits.maxConnections, workers, index) }),
  };
}

/**
 * Worker `index`'s part of a cap of `total`: the parts add up to `total` exactly (the first
 * total % workers workers take one more), except that a non-zero cap gives every worker at least 1. A
 * worker with 0 would refuse every client the kernel hands it, so a cap below the number of workers
 * is exceeded instead, at most `workers` in all; 0 (a queue that is off) stays 0.
 */
export function share(total: number, workers: number, index: number): number {
  if (total === 0) return 0;
  const part = Math.floor(total / workers) + (index < total % workers ? 1 : 0);
  return Math.max(1, part);
}
