import type { PoolSnapshot } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import type { Endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import type { Connector } from '../../src/proxy/connector';
import { createListener, type TcpProxyListener } from '../../src/proxy/listener';
import type { BalanceAlgorithm, ListenerSpec } from '../../src/proxy/proxy';
import type { ProxySession } from '../../src/proxy/session';
import { snapshotOf } from './proxy-backends';

export interface ProxyUnderTest {
  readonly listener: TcpProxyListener;
  readonly port: number;
  readonly load: BackendLoadTracker;
  readonly metrics: Metrics;
  /** Sessions that have ended, in the order they ended. */
  readonly ended: ProxySession[];
  /** Replaces the pool snapshot the proxy reads from now on. */
  setHealthy(healthy: readonly Endpoint[], unhealthy?: readonly Endpoint[]): void;
}

export interface ProxyOptions {
  readonly healthy: readonly Endpoint[];
  readonly unhealthy?: readonly Endpoint[];
  readonly balance?: BalanceAlgorithm;
  readonly maxConnectAttempts?: number;
  readonly connectTimeoutMs?: number;
  readonly connect?: Connector;
  readonly highWaterMark?: number;
}

/** A started listener on 127.0.0.1:0 in front of the given backends. */
export async function startProxy(options: ProxyOptions): Promise<ProxyUnderTest> {
  const metrics = createMetrics();
  const load = new BackendLoadTracker('test-pool', metrics);
  let version = 1;
  let snapshot: PoolSnapshot = snapshotOf('test-pool', options.healthy, options.unhealthy ?? [], version);
  const spec: ListenerSpec = {
    id: 'test:0',
    vip: '127.0.0.1',
    address: '127.0.0.1',
    port: 0,
    pool: 'test-pool',
    balance: options.balance ?? 'round-robin',
    connectTimeoutMs: options.connectTimeoutMs ?? 1_000,
    maxConnectAttempts: options.maxConnectAttempts ?? 3,
  };
  const listener = createListener({
    spec,
    snapshot: () => snapshot,
    load,
    logger: silentLogger(),
    metrics,
    ...(options.connect === undefined ? {} : { connect: options.connect }),
    ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
  });
  const ended: ProxySession[] = [];
  listener.onSessionEnd((session) => ended.push(session));
  await listener.start();
  return {
    listener,
    port: listener.address()!.port,
    load,
    metrics,
    ended,
    setHealthy(healthy, unhealthy = []) {
      snapshot = snapshotOf('test-pool', healthy, unhealthy, ++version);
    },
  };
}

/** Sum of a labelled counter or gauge's series that match `labels`. */
export async function metricValue(metric: { get(): Promise<{ values: Array<{ value: number; labels: object }> }> }, labels: Record<string, string>): Promise<number> {
  const { values } = await metric.get();
  let total = 0;
  for (const v of values) {
    const own = v.labels as Record<string, string | number>;
    if (Object.entries(labels).every(([k, want]) => String(own[k]) === want)) total += v.value;
  }
  return total;
}
