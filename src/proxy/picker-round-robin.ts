import type { Endpoint } from '../net/endpoint';
import { PickerCandidates } from './picker-candidates';
import type { Picker, PickRequest, PoolSpec } from './proxy';

/**
 * Smooth weighted round-robin (nginx's SWRR): every pick adds each candidate's effective weight to its
 * running credit, takes the candidate with the most credit and charges it the sum of the weights. Weights
 * 5,1,1 give a a b a c a a rather than a burst of five a's, and equal weights give plain rotation in
 * configured order. Candidates that `skip` refuses take no part in a pick, so they neither earn credit
 * nor are charged, as in nginx for peers already tried.
 */
export class RoundRobinPicker implements Picker {
  private readonly candidates: PickerCandidates;
  private credit: Float64Array = new Float64Array(0);
  private creditKeys: readonly string[] = [];
  private membership = -1;

  constructor(pool: PoolSpec) {
    this.candidates = new PickerCandidates(pool);
  }

  pick(request: PickRequest): Endpoint | undefined {
    const candidates = this.candidates;
    candidates.refresh(request.snapshot);
    if (candidates.membership !== this.membership) this.carryCreditOver();
    const weights = candidates.effectiveWeights(request.now);
    const endpoints = candidates.endpoints;
    const credit = this.credit;
    const skip = request.skip;
    let best = -1;
    let bestCredit = -Infinity;
    let total = 0;
    for (let i = 0; i < endpoints.length; i++) {
      if (skip(endpoints[i]!.key)) continue;
      const weight = weights[i]!;
      const earned = credit[i]! + weight;
      credit[i] = earned;
      total += weight;
      if (earned > bestCredit) {
        best = i;
        bestCredit = earned;
      }
    }
    if (best < 0) return undefined;
    credit[best] = bestCredit - total;
    return endpoints[best];
  }

  /**
   * Keeps each surviving backend's place in the rotation when the healthy set changes: restarting
   * from zero on every change would hand the first backend an extra turn at each flap. Credits are
   * re-centred on zero and newcomers start at the centre, so a newcomer neither waits behind banked
   * credit nor arrives with a burst of it.
   */
  private carryCreditOver(): void {
    const { keys } = this.candidates;
    const previous = new Map<string, number>();
    this.creditKeys.forEach((key, index) => previous.set(key, this.credit[index]!));
    const credit = new Float64Array(keys.length);
    let carriedSum = 0;
    let carriedCount = 0;
    keys.forEach((key, index) => {
      const carried = previous.get(key);
      if (carried === undefined) return;
      credit[index] = carried;
      carriedSum += carried;
      carriedCount++;
    });
    if (carriedCount > 0) {
      const centre = carriedSum / carriedCount;
      keys.forEach((key, index) => {
        if (previous.has(key)) credit[index] -= centre;
      });
    }
    this.credit = credit;
    this.creditKeys = keys;
    this.membership = this.candidates.membership;
  }
}
