import type { BackendStatus, PoolSnapshot } from '../../src/health/health';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import type { BackendLoad, BalanceAlgorithm, PickRequest, PoolSpec } from '../../src/proxy/proxy';

/** Wall-clock origin of picker tests: far from 0, like real `since` values. */
export const T0 = 1_700_000_000_000;

/** Backend `a` is 10.0.0.1:6443, `b` 10.0.0.2:6443 and so on; tests name backends by letter. */
export function backend(name: string): Endpoint {
  return endpoint(`10.0.0.${name.charCodeAt(0) - 96}`, 6443);
}

export function nameOf(picked: Endpoint | undefined): string {
  return picked === undefined ? '-' : String.fromCharCode(Number(picked.host.split('.')[3]) + 96);
}

/** A PoolSpec for `balance` over backends named by letter, weight 1 unless `weights` says otherwise. */
export function poolOf(balance: BalanceAlgorithm, names: string, weights: Record<string, number> = {}, slowStartMs = 0): PoolSpec {
  return {
    name: 'control-plane',
    balance,
    backends: [...names].map((name) => ({ endpoint: backend(name), weight: weights[name] ?? 1 })),
    slowStartMs,
    connectTimeoutMs: 1000,
    maxConnectAttempts: 3,
    retryBeforeReply: 'tls',
    queue: { size: 0, timeoutMs: 1000 },
    timeouts: { firstByteMs: 0, idleMs: 0, maxConnectionAgeMs: 0, maxConnectionAgeJitterMs: 0 },
    tcpKeepaliveMs: 10_000,
    outlier: { consecutiveConnectFailures: 0, baseEjectionMs: 1000, maxEjectionMs: 10_000 },
    closeOnBackendDown: false,
  };
}

/**
 * A deep-frozen snapshot, as health publishes them: a picker that writes to it throws. Healthy backends
 * are named in `healthy` (in that order); `down` are listed as unhealthy. `since` gives the wall-clock
 * time of a backend's last change (T0 - 1h unless given).
 */
export function snapshotOf(healthy: string, options: { down?: string; version?: number; since?: Record<string, number> } = {}): PoolSnapshot {
  const status = (name: string, state: 'healthy' | 'unhealthy'): BackendStatus =>
    Object.freeze({ backend: backend(name), state, since: options.since?.[name] ?? T0 - 3_600_000 });
  const backends = Object.freeze([...[...healthy].map((name) => status(name, 'healthy')), ...[...(options.down ?? '')].map((name) => status(name, 'unhealthy'))]);
  return Object.freeze({
    pool: 'control-plane',
    version: options.version ?? 1,
    backends,
    healthy: Object.freeze(backends.filter((s) => s.state === 'healthy').map((s) => s.backend)),
    settled: true,
  });
}

/** Active connections per backend name; a name not listed has none. */
export function loadOf(active: Record<string, number>): BackendLoad {
  return { active: (target) => active[nameOf(target)] ?? 0 };
}

export function requestOf(snapshot: PoolSnapshot, fields: { load?: BackendLoad; skip?: string; clientAddress?: string; now?: number } = {}): PickRequest {
  const skipped = new Set([...(fields.skip ?? '')].map((name) => backend(name).key));
  return {
    snapshot,
    load: fields.load ?? loadOf({}),
    skip: (key) => skipped.has(key),
    clientAddress: fields.clientAddress ?? '192.0.2.1',
    now: fields.now ?? T0,
  };
}

export { seededRandom } from './seeded-random';

/** `count` distinct client addresses spread over 10.128.0.0/9, the same every run. */
export function clientAddresses(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `10.${128 + ((i >>> 16) & 127)}.${(i >>> 8) & 255}.${i & 255}`);
}

/**
 * Live connection counts for load-aware pickers: every pick opens a connection that stays open for the
 * next `lifetime` picks, so a backend's active count follows how often it was picked lately.
 */
export class HeldConnections implements BackendLoad {
  private readonly open = new Map<string, number>();
  private readonly recent: string[] = [];
  constructor(private readonly lifetime: number) {}

  active(target: Endpoint): number {
    return this.open.get(target.key) ?? 0;
  }

  opened(target: Endpoint): void {
    this.open.set(target.key, this.active(target) + 1);
    this.recent.push(target.key);
    if (this.recent.length > this.lifetime) {
      const closed = this.recent.shift()!;
      this.open.set(closed, this.open.get(closed)! - 1);
    }
  }
}
