import { AggregatorRegistry } from 'prom-client';
import type { MetricsJson } from './data-plane';

/**
 * How the same series from several processes combine (default: summed). Gauges that say "1 while ..."
 * take the max, so that 1 means "in some process" rather than counting processes. Series that only
 * the daemon's process may publish (listener_bound says whether anyone accepts; the skew is computed
 * over the summed counts) are dropped from the other processes by the plane that collects them
 * (see fromOtherProcess).
 */
const SERIES_RULES: ReadonlyMap<string, 'max' | 'daemonOnly'> = new Map([
  ['vipd_proxy_listener_bound', 'daemonOnly'],
  ['vipd_proxy_pool_connection_skew_ratio', 'daemonOnly'],
  ['vipd_proxy_backend_drained', 'max'],
  ['vipd_proxy_backend_ejected', 'max'],
]);

/** Another process's registry without the series only the daemon's process publishes. */
export function fromOtherProcess(json: MetricsJson): MetricsJson {
  return json.filter((m) => SERIES_RULES.get(m.name) !== 'daemonOnly');
}

export function isCounter(metric: MetricsJson[number]): boolean {
  // The JSON carries prom-client's type name as a string, whatever its typings say.
  return (metric.type as unknown) === 'counter';
}

/** One series' identity across registries: its name (a histogram's bucket name) and sorted labels. */
export function seriesKey(name: string, value: MetricsJson[number]['values'][number]): string {
  const labels = Object.entries(value.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const metricName = (value as { metricName?: string }).metricName ?? name;
  return `${metricName}\u0000${JSON.stringify(labels)}`;
}

/**
 * Merges registries into one Prometheus text. Counters never go backwards between scrapes: a process
 * that died takes its latest counts with it until its collector retires them, so every counter series
 * is held at the highest value published so far.
 */
export class MetricsMerge {
  /** Every counter series' last published value. */
  private readonly counterFloor = new Map<string, number>();

  async text(inputs: readonly MetricsJson[]): Promise<string> {
    for (const input of inputs) {
      // prom-client lets the first input's aggregator decide; its own choices for default metrics
      // ('omit', 'first', 'average') would drop or alter the daemon's series, which no other process has.
      for (const metric of input) metric.aggregator = SERIES_RULES.get(metric.name) === 'max' ? 'max' : 'sum';
    }
    const merged = await AggregatorRegistry.aggregate([...inputs]).getMetricsAsJSON();
    this.clampCounters(merged);
    return AggregatorRegistry.aggregate([merged]).metrics();
  }

  private clampCounters(metrics: MetricsJson): void {
    for (const metric of metrics) {
      if (!isCounter(metric)) continue;
      for (const value of metric.values) {
        const key = seriesKey(metric.name, value);
        const floor = this.counterFloor.get(key) ?? 0;
        if (value.value < floor) value.value = floor;
        else this.counterFloor.set(key, value.value);
      }
    }
  }
}
