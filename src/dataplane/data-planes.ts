import { proxyLimits } from '../daemon/specs';
import type { DataPlane, DataPlaneContext, DataPlaneFactories } from './data-plane';
import { DataPlaneSet } from './data-plane-set';
import { InProcessDataPlane } from './in-process';
import { createKernelDataPlane } from './kernel/kernel-data-plane';
import { WorkerPool } from './workers/worker-pool';

/**
 * The registry of data planes: one factory per DataPath, and the only place that knows the concrete
 * classes. The type makes a DataPath without a factory a compile error.
 *
 * To add a data path (helper "kernel"): add it to DataPath in data-plane.ts, implement DataPlane under
 * src/dataplane/<path>/, and put its factory here. Nothing else in the daemon changes: DataPlaneSet
 * builds the plane the first time a listener asks for that path, routes the path's listeners to it,
 * adds every pool to it, and merges its pool view, metrics and lifecycle with the others'.
 */
export const dataPlaneFactories: DataPlaneFactories = {
  /** The user-space proxy: in this process, or in proxy.workers worker processes. */
  proxy: (context) => proxyDataPlane(context),
  /** nftables DNAT/SNAT: packets never reach vipd (src/dataplane/kernel/, docs/kernel-data-path.md). */
  kernel: (context) => createKernelDataPlane(context),
};

function proxyDataPlane({ config, logger, metrics, clock }: DataPlaneContext): DataPlane {
  const limits = proxyLimits(config);
  const proxyLogger = logger.child({ component: 'proxy' });
  if (config.proxy.workers <= 1) return new InProcessDataPlane({ limits, logger: proxyLogger, metrics, clock });
  // With workers, health and BGP stay in this process and the workers carry the traffic.
  return new WorkerPool({ workers: config.proxy.workers, limits, logger: proxyLogger, metrics, clock, hangTimeoutMs: config.proxy.hangTimeout });
}

/** The daemon's data planes, built from the registered factories. */
export function createDataPlanes(context: DataPlaneContext): DataPlaneSet {
  return new DataPlaneSet(dataPlaneFactories, context);
}
