import type { Metrics } from '../lib/metrics';
import type { Endpoint } from '../net/endpoint';
import type { ConnectFailureKind } from './connector';
import type { BackendCounters, PoolLoad } from './proxy';

/**
 * Live bookkeeping for one backend of a pool. Sessions hold a reference to it, so the per-chunk
 * byte accounting is a plain field update rather than a map lookup or a metric call.
 */
export class BackendEntry implements BackendCounters {
  /** Dials in progress plus established connections: least-conn must see a burst of pending dials. */
  active = 0;
  /** Connections that reached the backend. */
  total = 0;
  connectErrors = 0;
  /** Bytes relayed since the last metrics flush; see BackendLoadTracker.flushMetrics. */
  unflushedBytesIn = 0;
  unflushedBytesOut = 0;

  readonly activeLabels: { readonly pool: string; readonly backend: string };
  readonly bytesInLabels: { readonly pool: string; readonly backend: string; readonly direction: 'in' };
  readonly bytesOutLabels: { readonly pool: string; readonly backend: string; readonly direction: 'out' };

  constructor(
    readonly pool: string,
    readonly endpoint: Endpoint,
  ) {
    this.activeLabels = { pool, backend: endpoint.key };
    this.bytesInLabels = { pool, backend: endpoint.key, direction: 'in' };
    this.bytesOutLabels = { pool, backend: endpoint.key, direction: 'out' };
  }
}

const NO_COUNTERS: BackendCounters = Object.freeze({ active: 0, total: 0, connectErrors: 0 });

/**
 * Per-pool connection counters shared by every listener of the pool: least-conn reads them, status
 * reports them. Connection events update the metrics at once; relayed bytes are batched and pushed by
 * flushMetrics(), because a labelled prom-client increment per chunk would cost more than the relay.
 */
export class BackendLoadTracker implements PoolLoad {
  private readonly entries = new Map<string, BackendEntry>();

  constructor(
    readonly pool: string,
    private readonly metrics: Metrics,
  ) {}

  active(backend: Endpoint): number {
    return this.entries.get(backend.key)?.active ?? 0;
  }

  counters(backendKey: string): BackendCounters {
    const entry = this.entries.get(backendKey);
    return entry === undefined
      ? NO_COUNTERS
      : { active: entry.active, total: entry.total, connectErrors: entry.connectErrors };
  }

  /** Takes a slot on the backend for a dial that starts now. */
  dialStarted(backend: Endpoint): BackendEntry {
    let entry = this.entries.get(backend.key);
    if (entry === undefined) {
      entry = new BackendEntry(this.pool, backend);
      this.entries.set(backend.key, entry);
    }
    entry.active++;
    this.metrics.backendActive.inc(entry.activeLabels);
    return entry;
  }

  /** The dial failed: the slot is given back and the failure counted. */
  dialFailed(entry: BackendEntry, kind: ConnectFailureKind): void {
    entry.connectErrors++;
    this.metrics.backendConnectErrors.inc({ pool: this.pool, backend: entry.endpoint.key, kind });
    this.release(entry);
  }

  established(entry: BackendEntry): void {
    entry.total++;
    this.metrics.backendConnections.inc(entry.activeLabels);
  }

  /** The connection (or an abandoned dial) is gone. */
  release(entry: BackendEntry): void {
    entry.active--;
    this.metrics.backendActive.dec(entry.activeLabels);
  }

  /** Pushes the bytes relayed since the last call into the byte counters. */
  flushMetrics(): void {
    for (const entry of this.entries.values()) {
      if (entry.unflushedBytesIn > 0) {
        this.metrics.backendBytes.inc(entry.bytesInLabels, entry.unflushedBytesIn);
        entry.unflushedBytesIn = 0;
      }
      if (entry.unflushedBytesOut > 0) {
        this.metrics.backendBytes.inc(entry.bytesOutLabels, entry.unflushedBytesOut);
        entry.unflushedBytesOut = 0;
      }
    }
  }
}
