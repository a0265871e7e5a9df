import type { Endpoint } from '../net/endpoint';
import { PickerCandidates } from './picker-candidates';
import type { Picker, PickRequest, PoolSpec } from './proxy';

/**
 * Power of two choices: draw two distinct candidates at random, each with probability proportional
 * to its effective weight, and take the one with fewer active connections per unit of weight (the
 * first drawn on a tie, which keeps an idle pool's shares equal to the weights). It needs neither a
 * scan of every backend's load nor shared state between listeners, and it never sends a connection to
 * the one most loaded backend (per unit of weight) while another one is pickable.
 */
export class RandomTwoPicker implements Picker {
  private readonly candidates: PickerCandidates;
  private readonly randomBits: RandomBits;
  /** Running sums of the configured weights, rebuilt when the candidates change. */
  private configuredCumulative: Float64Array = new Float64Array(0);
  /** Running sums of the slowed weights, refilled on every pick during a ramp. */
  private rampedCumulative: Float64Array = new Float64Array(0);
  /** Which candidates `skip` left pickable, for picks where one of the two drawn was refused. */
  private pickable: Uint8Array = new Uint8Array(0);
  private membership = -1;

  constructor(pool: PoolSpec, randomBits: RandomBits) {
    this.candidates = new PickerCandidates(pool);
    this.randomBits = randomBits;
  }

  pick(request: PickRequest): Endpoint | undefined {
    const candidates = this.candidates;
    candidates.refresh(request.snapshot);
    const count = candidates.count;
    if (count === 0) return undefined;
    const endpoints = candidates.endpoints;
    const skip = request.skip;
    if (count === 1) return skip(endpoints[0]!.key) ? undefined : endpoints[0];
    if (candidates.membership !== this.membership) this.resize();

    const weights = candidates.effectiveWeights(request.now);
    const cumulative = weights === candidates.weights ? this.configuredCumulative : this.rampedCumulative;
    if (cumulative === this.rampedCumulative) fillCumulative(weights, cumulative);

    // Nothing is refused on most picks: draw straight from the running sums.
    const first = this.draw(cumulative, -1);
    if (!skip(endpoints[first]!.key)) {
      const second = this.draw(cumulative, first);
      if (!skip(endpoints[second]!.key)) return this.lessLoaded(request, weights, first, second);
    }
    return this.pickAmongPickable(request, weights);
  }

  /**
   * A weighted draw by binary search over the running sums, leaving out `excluded` (-1 for none) by
   * drawing over the rest of the total and stepping over its range. It takes and returns integers
   * only, so a call V8 did not inline boxes no double.
   */
  private draw(cumulative: Float64Array, excluded: number): number {
    const last = cumulative.length - 1;
    let offset: number;
    if (excluded < 0) {
      offset = (this.randomBits() / RANDOM_BITS) * cumulative[last]!;
    } else {
      const rangeStart = excluded === 0 ? 0 : cumulative[excluded - 1]!;
      const rangeWidth = cumulative[excluded]! - rangeStart;
      offset = (this.randomBits() / RANDOM_BITS) * (cumulative[last]! - rangeWidth);
      if (offset >= rangeStart) offset += rangeWidth;
    }
    let low = 0;
    let high = last;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (cumulative[middle]! > offset) high = middle;
      else low = middle + 1;
    }
    // Rounding at a range's edge can land back on `excluded`: its neighbour is as good a draw.
    if (low === excluded) return low === last ? 0 : low + 1;
    return low;
  }

  /** Draws both candidates among those `skip` leaves, by a linear walk over their weights. */
  private pickAmongPickable(request: PickRequest, weights: Float64Array): Endpoint | undefined {
    const endpoints = this.candidates.endpoints;
    const pickable = this.pickable;
    let total = 0;
    let pickableCount = 0;
    let only = -1;
    for (let i = 0; i < endpoints.length; i++) {
      const allowed = !request.skip(endpoints[i]!.key);
      pickable[i] = allowed ? 1 : 0;
      if (!allowed) continue;
      total += weights[i]!;
      pickableCount++;
      only = i;
    }
    if (pickableCount === 0) return undefined;
    if (pickableCount === 1) return endpoints[only];
    const first = walk(weights, pickable, (this.randomBits() / RANDOM_BITS) * total, -1);
    const second = walk(weights, pickable, (this.randomBits() / RANDOM_BITS) * (total - weights[first]!), first);
    return this.lessLoaded(request, weights, first, second);
  }

  private lessLoaded(request: PickRequest, weights: Float64Array, first: number, second: number): Endpoint {
    const endpoints = this.candidates.endpoints;
    const firstEndpoint = endpoints[first]!;
    const secondEndpoint = endpoints[second]!;
    const firstLoad = request.load.active(firstEndpoint) / weights[first]!;
    const secondLoad = request.load.active(secondEndpoint) / weights[second]!;
    return secondLoad < firstLoad ? secondEndpoint : firstEndpoint;
  }

  private resize(): void {
    const count = this.candidates.count;
    this.configuredCumulative = new Float64Array(count);
    fillCumulative(this.candidates.weights, this.configuredCumulative);
    this.rampedCumulative = new Float64Array(count);
    this.pickable = new Uint8Array(count);
    this.membership = this.candidates.membership;
  }
}

function fillCumulative(weights: Float64Array, cumulative: Float64Array): void {
  let sum = 0;
  for (let i = 0; i < weights.length; i++) {
    sum += weights[i]!;
    cumulative[i] = sum;
  }
}

/** The pickable index, other than `excluded`, on whose share of the weights `offset` falls. */
function walk(weights: Float64Array, pickable: Uint8Array, offset: number, excluded: number): number {
  let last = -1;
  for (let i = 0; i < weights.length; i++) {
    if (pickable[i] === 0 || i === excluded) continue;
    last = i;
    offset -= weights[i]!;
    if (offset < 0) return i;
  }
  return last;
}

/** Uniform integers in [0, 2^30). */
export type RandomBits = () => number;

const RANDOM_BITS = 2 ** 30;

/**
 * 30 random bits from mulberry32, seeded once; two draws per connection need no more than its
 * statistical quality. Integers below 2^30 are V8 small integers: unlike a double (Math.random's
 * result, or a 32-bit state in a closure variable) they travel through a call that V8 did not inline
 * without being boxed, so a pick allocates nothing.
 */
export function seededRandomBits(seed: number): RandomBits {
  const state = new Int32Array([seed | 0]);
  return () => {
    const next = (state[0]! + 0x6d2b79f5) | 0;
    state[0] = next;
    let t = Math.imul(next ^ (next >>> 15), next | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 2;
  };
}

/** Adapts a uniform [0, 1) source (a test's seeded random) to RandomBits. */
export function randomBitsFrom(random: () => number): RandomBits {
  return () => Math.floor(random() * RANDOM_BITS);
}
