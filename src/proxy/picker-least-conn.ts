import type { PoolSnapshot } from '../health/health';
import type { Endpoint } from '../net/endpoint';
import type { BackendLoad, Picker } from './proxy';

/**
 * Picks the healthy backend with the fewest active connections. The scan starts at a rotating
 * cursor and only a strictly lower load displaces the current choice, so backends with equal load
 * take turns instead of the first one in configured order absorbing every burst.
 */
export class LeastConnPicker implements Picker {
  private cursor = 0;

  pick(snapshot: PoolSnapshot, load: BackendLoad, exclude: ReadonlySet<string>): Endpoint | undefined {
    const healthy = snapshot.healthy;
    const count = healthy.length;
    let best: Endpoint | undefined;
    let bestIndex = 0;
    let bestLoad = Infinity;
    for (let step = 0; step < count; step++) {
      const index = (this.cursor + step) % count;
      const candidate = healthy[index]!;
      if (exclude.has(candidate.key)) continue;
      const active = load.active(candidate);
      if (active < bestLoad) {
        best = candidate;
        bestIndex = index;
        bestLoad = active;
      }
    }
    if (best !== undefined) this.cursor = (bestIndex + 1) % count;
    return best;
  }
}
