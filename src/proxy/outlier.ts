/** Passive health settings of a pool (PoolSpec.outlier). */
export interface OutlierPolicy {
  /** Consecutive connect failures that eject a backend; 0 turns passive ejection off. */
  readonly consecutiveConnectFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
}

/**
 * Passive health of one backend, driven by the outcome of every dial to it (from any listener of
 * the pool). Pure bookkeeping with explicit times, so the back-off can be tested without sockets.
 *
 * The n-th ejection in a row lasts baseEjectionMs x 2^(n-1), capped at maxEjectionMs. The level n
 * decays by one for every baseEjectionMs the backend spends in service (as Envoy's multiplier does),
 * so a backend that failed once long ago starts again at the base time, while one that fails each
 * time it comes back is kept out longer and longer.
 */
export class BackendOutlier {
  /** Dial failures since the last successful connect. */
  consecutiveFailures = 0;
  /** Ejections so far that have not yet decayed away. */
  level = 0;
  /** Monotonic ms at which the current ejection ends; undefined when in service. */
  ejectedUntil: number | undefined;
  /** Monotonic ms of the last return to service. */
  private inServiceSince = 0;

  constructor(private readonly policy: OutlierPolicy) {}

  get ejected(): boolean {
    return this.ejectedUntil !== undefined;
  }

  /** A dial succeeded: the failure streak is over. */
  recordSuccess(): void {
    this.consecutiveFailures = 0;
  }

  /** A dial failed; true when the streak has reached the ejection threshold (and the backend is not already out). */
  recordFailure(): boolean {
    if (this.ejectedUntil !== undefined) return false;
    this.consecutiveFailures++;
    const threshold = this.policy.consecutiveConnectFailures;
    return threshold > 0 && this.consecutiveFailures >= threshold;
  }

  /** Takes the backend out of picking at `now`; returns how long for. */
  eject(now: number): number {
    const base = this.policy.baseEjectionMs;
    const decayed = Math.max(0, this.level - Math.floor((now - this.inServiceSince) / base));
    this.level = decayed + 1;
    const duration = Math.min(base * 2 ** Math.min(this.level - 1, 52), this.policy.maxEjectionMs);
    this.ejectedUntil = now + duration;
    return duration;
  }

  /** The ejection has run out at `now`: the backend may be picked again if health still says so. */
  restore(now: number): void {
    this.ejectedUntil = undefined;
    this.consecutiveFailures = 0;
    this.inServiceSince = now;
  }

  /**
   * A streak that did not lead to an ejection (the last backend in service is never ejected) starts
   * over, so the next attempt to eject comes after another full streak rather than at every failure.
   */
  spareEjection(): void {
    this.consecutiveFailures = 0;
  }
}
