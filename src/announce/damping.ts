/**
 * Route flap damping of one VIP, as RFC 2439 describes it: every withdrawal caused by the node's own
 * health adds a penalty; the penalty decays exponentially with a half-life; when it reaches the
 * suppress threshold the VIP stays withdrawn (reason `damped`) until it has decayed below the reuse
 * threshold. The RFC's ceiling applies: a penalty never exceeds what decays to `reuse` within
 * `maxSuppressMs`, so no VIP stays suppressed longer than that after its last flap.
 */
export interface DampingSpec {
  /** Off: never suppresses (the hold-down still applies). */
  readonly enabled: boolean;
  /** Added per withdrawal (RFC 2439's figure of merit increment). */
  readonly penalty: number;
  readonly halfLifeMs: number;
  readonly suppress: number;
  readonly reuse: number;
  readonly maxSuppressMs: number;
}

/**
 * Defaults: 1,000 per withdrawal, half-life 30 s, suppress at 2,000, reuse below 750. Two withdrawals
 * alone never reach 2,000 (the first has decayed a little), three 20 s apart do (1000 + 630 + 397 =
 * 2,027): a VIP that flaps three times in a minute is suppressed. From 2,027 it takes 43 s to decay
 * below 750.
 */
export const DEFAULT_DAMPING: DampingSpec = Object.freeze({ enabled: true, penalty: 1000, halfLifeMs: 30_000, suppress: 2000, reuse: 750, maxSuppressMs: 600_000 });

/** RFC 2439's decay: the penalty `p` after `elapsedMs` with half-life `halfLifeMs`. */
export function decayed(p: number, elapsedMs: number, halfLifeMs: number): number {
  if (elapsedMs <= 0) return p;
  return p * Math.pow(2, -elapsedMs / halfLifeMs);
}

export class FlapDamping {
  private penaltyAt = 0;
  private updatedAt = 0;
  private suppressed = false;
  private readonly ceiling: number;

  constructor(private readonly spec: DampingSpec) {
    this.ceiling = spec.reuse * Math.pow(2, spec.maxSuppressMs / spec.halfLifeMs);
  }

  /** The penalty at monotonic time `now`. */
  penalty(now: number): number {
    return decayed(this.penaltyAt, now - this.updatedAt, this.spec.halfLifeMs);
  }

  /** Records one withdrawal at `now`; returns true when it makes the VIP suppressed. */
  withdrawn(now: number): boolean {
    if (!this.spec.enabled) return false;
    const wasSuppressed = this.isSuppressed(now);
    this.penaltyAt = Math.min(this.ceiling, this.penalty(now) + this.spec.penalty);
    this.updatedAt = now;
    if (this.penaltyAt >= this.spec.suppress) this.suppressed = true;
    return this.suppressed && !wasSuppressed;
  }

  /** True while suppressed; ends (and stays ended) once the penalty has decayed below reuse. */
  isSuppressed(now: number): boolean {
    if (this.suppressed && this.penalty(now) < this.spec.reuse) this.suppressed = false;
    return this.suppressed;
  }

  /** Monotonic time at which a suppression ends, if nothing else happens; undefined when not suppressed. */
  reuseAt(now: number): number | undefined {
    if (!this.isSuppressed(now)) return undefined;
    const p = this.penalty(now);
    return now + this.spec.halfLifeMs * Math.log2(p / this.spec.reuse);
  }
}
