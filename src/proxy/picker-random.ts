import type { Endpoint } from '../net/endpoint';
import { PickerCandidates } from './picker-candidates';
import type { RandomBits } from './picker-random-two';
import type { Picker, PickRequest, PoolSpec } from './proxy';

const RANDOM_BITS = 2 ** 30;

/**
 * One weighted random draw among the candidates `skip` leaves (slow start applied), with no look at
 * load. The kernel data path does the same with `numgen random` over its map, which is why this
 * algorithm exists: it is the random balancing both data paths can do alike (random-two compares the
 * load of two draws, which only the proxy sees).
 */
export class RandomPicker implements Picker {
  private readonly candidates: PickerCandidates;

  constructor(pool: PoolSpec, private readonly randomBits: RandomBits) {
    this.candidates = new PickerCandidates(pool);
  }

  pick(request: PickRequest): Endpoint | undefined {
    const candidates = this.candidates;
    candidates.refresh(request.snapshot);
    const endpoints = candidates.endpoints;
    if (endpoints.length === 0) return undefined;
    const weights = candidates.effectiveWeights(request.now);
    const skip = request.skip;
    let total = 0;
    for (let i = 0; i < endpoints.length; i++) if (!skip(endpoints[i]!.key)) total += weights[i]!;
    if (total <= 0) return undefined;
    let offset = (this.randomBits() / RANDOM_BITS) * total;
    let last: Endpoint | undefined;
    for (let i = 0; i < endpoints.length; i++) {
      if (skip(endpoints[i]!.key)) continue;
      last = endpoints[i];
      offset -= weights[i]!;
      if (offset < 0) return last;
    }
    // Rounding at the top of the range: the last pickable candidate is as good a draw.
    return last;
  }
}
