import type { Endpoint } from '../net/endpoint';
import { PickerCandidates } from './picker-candidates';
import type { Picker, PickRequest, PoolSpec } from './proxy';

/**
 * Weighted least-connections: the candidate with the lowest (active + 1) / effective weight. Scoring the
 * connection about to be opened (+1) makes an idle pool fill by weight instead of by configured order,
 * and a backend slowed by slow start has to be that much emptier than the others to win. The scan starts
 * at a rotating cursor and only a strictly lower score displaces the current choice, so backends with
 * equal scores take turns instead of the first one absorbing every burst.
 */
export class LeastConnPicker implements Picker {
  private readonly candidates: PickerCandidates;
  private cursor = 0;

  constructor(pool: PoolSpec) {
    this.candidates = new PickerCandidates(pool);
  }

  pick(request: PickRequest): Endpoint | undefined {
    const candidates = this.candidates;
    candidates.refresh(request.snapshot);
    const count = candidates.count;
    if (count === 0) return undefined;
    const weights = candidates.effectiveWeights(request.now);
    const endpoints = candidates.endpoints;
    const { skip, load } = request;
    // The cursor is an index into whichever healthy list is current, so a shrinking set keeps rotating.
    let index = this.cursor < count ? this.cursor : this.cursor % count;
    let best = -1;
    let bestScore = Infinity;
    for (let step = 0; step < count; step++, index = index + 1 === count ? 0 : index + 1) {
      const candidate = endpoints[index]!;
      if (skip(candidate.key)) continue;
      const score = (load.active(candidate) + 1) / weights[index]!;
      if (score < bestScore) {
        best = index;
        bestScore = score;
      }
    }
    if (best < 0) return undefined;
    this.cursor = best + 1 === count ? 0 : best + 1;
    return endpoints[best];
  }
}
