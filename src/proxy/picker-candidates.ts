import type { PoolSnapshot } from '../health/health';
import type { Endpoint } from '../net/endpoint';
import type { PoolSpec } from './proxy';

/**
 * Share of its weight a backend gets the moment it turns healthy under slow start. Not 0: at weight 0
 * a backend gets no connection at all (least-conn would score it infinite), so the first real
 * connections, the ones that tell passive health whether the recovery is genuine, would wait until
 * the ramp had already grown. 10% is also Envoy's default MinWeightPercent for its slow start.
 */
export const SLOW_START_FLOOR = 0.1;

/**
 * Fraction of its weight a backend gets `elapsedMs` after it became healthy, for a ramp of
 * `slowStartMs` (> 0): linear, clamped to [SLOW_START_FLOOR, 1].
 *
 * `since` moves only on a state change, so a backend ramps once per recovery and is never slowed
 * again while it stays healthy. At startup every backend turns healthy within a probe interval or so
 * of the others: they ramp together, which leaves their shares those of the weights. (The snapshot
 * does not say whether a backend came from 'unknown' or from 'unhealthy', so startup cannot be told
 * from a recovery, and need not be.)
 *
 * A small negative elapsed (the pick's `now` read a little before the snapshot's `since`) counts as
 * just healthy. One longer than the ramp means the wall clock stepped back; the backend's age is
 * unknowable then, and full weight keeps a clock step from holding a backend at the floor for as long
 * as the step.
 */
export function slowStartFactor(elapsedMs: number, slowStartMs: number): number {
  if (elapsedMs >= slowStartMs || elapsedMs < -slowStartMs) return 1;
  const fraction = elapsedMs / slowStartMs;
  return fraction > SLOW_START_FLOOR ? fraction : SLOW_START_FLOOR;
}

/**
 * The pickable backends of one pool snapshot and their weights, derived once per snapshot version
 * and shared by nothing: every picker owns one. A new snapshot object with the same version and the
 * same healthy backends reuses everything (health rebuilds the object for each probe result, without
 * changing any state). Arrays handed out are replaced on change, never mutated while in use, except
 * the slow-start scratch that effectiveWeights() refills on each call.
 */
export class PickerCandidates {
  /** snapshot.healthy of the snapshot last seen, in configured order. */
  endpoints: readonly Endpoint[] = [];
  keys: readonly string[] = [];
  /** Configured weight per candidate, in `endpoints` order. */
  weights: Float64Array = new Float64Array(0);
  /** Changes exactly when the list of candidates changes, so tables that depend only on it can skip rebuilding. */
  membership = 0;

  private readonly configuredWeights: ReadonlyMap<string, number>;
  private readonly slowStartMs: number;
  private since: Float64Array = new Float64Array(0);
  private rampedWeights: Float64Array = new Float64Array(0);
  /** Once `now` reaches this, no candidate is ramping and the configured weights apply as they are. */
  private rampEndsAt = -Infinity;
  private lastSnapshot: PoolSnapshot | undefined;
  private lastVersion = Number.NaN;

  constructor(pool: PoolSpec) {
    this.configuredWeights = new Map(pool.backends.map((backend) => [backend.endpoint.key, backend.weight]));
    this.slowStartMs = pool.slowStartMs > 0 ? pool.slowStartMs : 0;
  }

  get count(): number {
    return this.endpoints.length;
  }

  /** Brings the derived arrays up to date with `snapshot`; cheap when nothing changed. */
  refresh(snapshot: PoolSnapshot): void {
    if (snapshot === this.lastSnapshot) return;
    // Comparing keys as well as the version keeps a picker correct when it is handed the snapshots of a
    // restarted health module, whose versions start again from 0.
    if (snapshot.version !== this.lastVersion || !this.holds(snapshot.healthy)) this.rebuild(snapshot);
    this.lastSnapshot = snapshot;
    this.lastVersion = snapshot.version;
  }

  /**
   * Weight per candidate at `now`. Outside any slow-start ramp this is `weights` itself; during one it
   * is a scratch array refilled on every call, valid until the next call.
   */
  effectiveWeights(now: number): Float64Array {
    if (now >= this.rampEndsAt) return this.weights;
    const { weights, since, rampedWeights, slowStartMs } = this;
    for (let i = 0; i < weights.length; i++) rampedWeights[i] = weights[i]! * slowStartFactor(now - since[i]!, slowStartMs);
    return rampedWeights;
  }

  private holds(healthy: readonly Endpoint[]): boolean {
    if (healthy === this.endpoints) return true;
    if (healthy.length !== this.keys.length) return false;
    for (let i = 0; i < healthy.length; i++) if (healthy[i]!.key !== this.keys[i]) return false;
    return true;
  }

  private rebuild(snapshot: PoolSnapshot): void {
    const healthy = snapshot.healthy;
    const count = healthy.length;
    if (!this.holds(healthy)) {
      this.keys = healthy.map((backend) => backend.key);
      this.weights = Float64Array.from(this.keys, (key) => this.configuredWeights.get(key) ?? 1);
      this.rampedWeights = new Float64Array(count);
      this.membership++;
    }
    this.endpoints = healthy;

    this.since = new Float64Array(count);
    this.rampEndsAt = -Infinity;
    if (this.slowStartMs === 0) return;
    const sinceByKey = new Map(snapshot.backends.map((status) => [status.backend.key, status.since]));
    for (let i = 0; i < count; i++) {
      // A healthy backend without a status entry has no known start: treat it as long established.
      const since = sinceByKey.get(this.keys[i]!) ?? -Infinity;
      this.since[i] = since;
      this.rampEndsAt = Math.max(this.rampEndsAt, since + this.slowStartMs);
    }
  }
}
