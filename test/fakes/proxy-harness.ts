import type { PoolSnapshot } from '../../src/health/health';
import type { Clock } from '../../src/lib/clock';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import type { Endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker, type SnapshotSource } from '../../src/proxy/backend-load';
import type { Connector } from '../../src/proxy/connector';
import type { ConnectionLimits } from '../../src/proxy/limits';
import { createListener, type TcpProxyListener } from '../../src/proxy/listener';
import type { BackendSpec, ListenerSpec, PoolSpec } from '../../src/proxy/proxy';
import type { ProxySession } from '../../src/proxy/session';
import { snapshotOf } from './proxy-backends';

/**
 * A PoolSpec for tests: every timeout and limit off unless overridden, so that each test turns on
 * exactly what it exercises. `backends` lists every configured backend, healthy or not.
 */
export function testPoolSpec(backends: readonly (Endpoint | BackendSpec)[], overrides: PoolSpecOverrides = {}): PoolSpec {
  return {
    name: 'test-pool',
    balance: overrides.balance ?? 'round-robin',
    backends: backends.map((b) => ('endpoint' in b ? b : { endpoint: b, weight: 1 })),
    slowStartMs: 0,
    connectTimeoutMs: overrides.connectTimeoutMs ?? 1_000,
    maxConnectAttempts: overrides.maxConnectAttempts ?? 3,
    retryBeforeReply: overrides.retryBeforeReply ?? 'tls',
    queue: { size: 0, timeoutMs: 1_000, ...overrides.queue },
    timeouts: { firstByteMs: 0, idleMs: 0, maxConnectionAgeMs: 0, maxConnectionAgeJitterMs: 0, ...overrides.timeouts },
    tcpKeepaliveMs: overrides.tcpKeepaliveMs ?? 10_000,
    outlier: { consecutiveConnectFailures: 0, baseEjectionMs: 5_000, maxEjectionMs: 60_000, ...overrides.outlier },
    closeOnBackendDown: overrides.closeOnBackendDown ?? false,
  };
}

export interface PoolSpecOverrides {
  readonly balance?: PoolSpec['balance'];
  readonly connectTimeoutMs?: number;
  readonly maxConnectAttempts?: number;
  readonly retryBeforeReply?: PoolSpec['retryBeforeReply'];
  readonly queue?: Partial<PoolSpec['queue']>;
  readonly timeouts?: Partial<PoolSpec['timeouts']>;
  readonly tcpKeepaliveMs?: number;
  readonly outlier?: Partial<PoolSpec['outlier']>;
  readonly closeOnBackendDown?: boolean;
}

/** Health as the test sets it: each set() is a state change, heard by subscribers at once. */
export class FakeHealth implements SnapshotSource {
  private current: PoolSnapshot;
  private version = 1;
  private readonly listeners = new Set<(snapshot: PoolSnapshot) => void>();

  constructor(healthy: readonly Endpoint[], unhealthy: readonly Endpoint[] = []) {
    this.current = snapshotOf('test-pool', healthy, unhealthy, this.version);
  }

  snapshot(): PoolSnapshot {
    return this.current;
  }

  onChange(listener: (snapshot: PoolSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  set(healthy: readonly Endpoint[], unhealthy: readonly Endpoint[] = []): void {
    this.current = snapshotOf('test-pool', healthy, unhealthy, ++this.version);
    for (const listener of this.listeners) listener(this.current);
  }
}

export interface ProxyUnderTest {
  readonly listener: TcpProxyListener;
  readonly port: number;
  readonly load: BackendLoadTracker;
  readonly health: FakeHealth;
  readonly metrics: Metrics;
  readonly spec: ListenerSpec;
  /** Sessions that have ended, in the order they ended. */
  readonly ended: ProxySession[];
  /** Replaces the pool snapshot: a health change, heard by the pool at once. */
  setHealthy(healthy: readonly Endpoint[], unhealthy?: readonly Endpoint[]): void;
}

export interface ProxyOptions extends PoolSpecOverrides {
  readonly healthy: readonly Endpoint[];
  readonly unhealthy?: readonly Endpoint[];
  /** Configured backends with weights and caps; by default every healthy and unhealthy one, weight 1, no cap. */
  readonly backends?: readonly BackendSpec[];
  readonly connect?: Connector;
  readonly highWaterMark?: number;
  readonly maxReadBufferBytes?: number;
  readonly maxConnections?: number;
  readonly limits?: ConnectionLimits;
  readonly clock?: Clock;
  readonly random?: () => number;
  /** Shares the pool with another listener under test (its load and health). */
  readonly sharePoolWith?: ProxyUnderTest;
}

/** A started listener on 127.0.0.1:0 in front of the given backends. */
export async function startProxy(options: ProxyOptions): Promise<ProxyUnderTest> {
  const shared = options.sharePoolWith;
  const metrics = shared?.metrics ?? createMetrics();
  const unhealthy = options.unhealthy ?? [];
  const health = shared?.health ?? new FakeHealth(options.healthy, unhealthy);
  const pool = shared?.spec.pool ?? testPoolSpec(options.backends ?? [...options.healthy, ...unhealthy], options);
  const load =
    shared?.load ??
    new BackendLoadTracker({ spec: pool, health, metrics, ...(options.clock === undefined ? {} : { clock: options.clock }) });
  const spec: ListenerSpec = {
    id: shared === undefined ? 'test:0' : 'test:1',
    vip: '127.0.0.1',
    address: '127.0.0.1',
    port: 0,
    pool,
    ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
  };
  const listener = createListener({
    spec,
    load,
    logger: silentLogger(),
    metrics,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
    ...(options.random === undefined ? {} : { random: options.random }),
    ...(options.connect === undefined ? {} : { connect: options.connect }),
    ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
    ...(options.maxReadBufferBytes === undefined ? {} : { maxReadBufferBytes: options.maxReadBufferBytes }),
  });
  const ended: ProxySession[] = [];
  listener.onSessionEnd((session) => ended.push(session));
  await listener.start();
  return {
    listener,
    port: listener.address()!.port,
    load,
    health,
    metrics,
    spec,
    ended,
    setHealthy(healthy, unhealthyNow = []) {
      health.set(healthy, unhealthyNow);
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
