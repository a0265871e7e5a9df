import type { Clock } from '../../lib/clock';
import type { MetricsJson } from '../data-plane';
import { fromOtherProcess, isCounter, seriesKey } from '../metrics-merge';
import type { ToWorker } from './protocol';
import type { WorkerSlot } from './supervisor';

/** A scrape waits this long for each worker; one that does not answer contributes its last answer. */
const METRICS_TIMEOUT_MS = 1000;

/**
 * The workers' registries at scrape time: each live worker is asked for its registry, and the counters
 * of dead processes are kept (retired) so that totals never go backwards when a worker is replaced.
 * The daemon's registry and these are combined by metrics-merge.ts.
 */
export class WorkerMetrics {
  private readonly pending = new Map<number, { readonly slot: WorkerSlot; readonly done: (json: MetricsJson | undefined) => void }>();
  private readonly retiredCounters = new Map<string, { readonly header: MetricsJson[number]; readonly values: Map<string, MetricsJson[number]['values'][number]> }>();
  private nextRequest = 0;

  constructor(
    private readonly clock: Clock,
    private readonly post: (slot: WorkerSlot, message: ToWorker) => boolean,
  ) {}

  /** Every worker's registry (its latest answer, or its last one), and the retired counters. */
  async collect(slots: readonly WorkerSlot[]): Promise<MetricsJson[]> {
    const workers = await Promise.all(slots.map((slot) => this.ask(slot)));
    return [...workers.filter((w): w is MetricsJson => w !== undefined).map(fromOtherProcess), this.retired()];
  }

  /** A worker's answer (vipd:metrics). */
  answered(slot: WorkerSlot, request: number, json: MetricsJson): void {
    const pending = this.pending.get(request);
    if (pending?.slot === slot) pending.done(json);
  }

  /** The slot's process exited: its pending requests end, and its counters move into the retired totals. */
  exited(slot: WorkerSlot): void {
    for (const [request, pending] of this.pending) {
      if (pending.slot === slot) {
        this.pending.delete(request);
        pending.done(undefined);
      }
    }
    for (const metric of slot.metrics ?? []) {
      if (!isCounter(metric)) continue;
      let retired = this.retiredCounters.get(metric.name);
      if (retired === undefined) {
        retired = { header: { ...metric, values: [] }, values: new Map() };
        this.retiredCounters.set(metric.name, retired);
      }
      for (const value of metric.values) {
        const key = seriesKey(metric.name, value);
        const before = retired.values.get(key)?.value ?? 0;
        retired.values.set(key, { ...value, value: before + value.value });
      }
    }
  }

  private retired(): MetricsJson {
    return [...this.retiredCounters.values()].map(({ header, values }) => ({ ...header, values: [...values.values()] }));
  }

  private ask(slot: WorkerSlot): Promise<MetricsJson | undefined> {
    const request = this.nextRequest++;
    if (slot.state !== 'up' || !this.post(slot, { type: 'vipd:metrics', request })) return Promise.resolve(slot.metrics);
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => finish(undefined), METRICS_TIMEOUT_MS);
      const finish = (json: MetricsJson | undefined): void => {
        timer.cancel();
        this.pending.delete(request);
        if (json !== undefined) slot.metrics = json;
        resolve(slot.metrics);
      };
      this.pending.set(request, { slot, done: finish });
    });
  }
}
