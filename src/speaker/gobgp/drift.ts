/**
 * Read-back (issue 11 point 6): compares what a peer was really sent (gobgpd's adj-RIB-out) with what
 * it should have been sent (the desired set, within the families its session negotiated), and decides
 * when a difference is a drift rather than a change still under way.
 *
 * A difference counts only when two readings in a row show it and no reconciliation between or during
 * them changed anything (the speaker calls `interrupt()` otherwise): gobgpd computes ADJ_OUT as it
 * processes each AddPath, so a reading taken while paths are being applied may lag by one call.
 * A confirmed drift is reported once; after it is repaired, it must be seen twice again to count again.
 */
export type DriftKind = 'missing' | 'extra';

export interface Drift {
  readonly peer: string;
  readonly kind: DriftKind;
  readonly prefix: string;
}

export interface PeerDrift {
  readonly missing: readonly string[];
  readonly extra: readonly string[];
}

const keyOf = (d: Drift): string => `${d.peer} ${d.kind} ${d.prefix}`;

export class DriftTracker {
  /** By key: consecutive quiet readings that showed it. */
  private sightings = new Map<string, { drift: Drift; count: number; confirmed: boolean }>();

  /**
   * One quiet reading of one established peer. `expected`: the prefixes it should have been sent;
   * `sent`: its adj-RIB-out; `ours`: prefixes that are vipd's to add or delete (an extra path that is not
   * vipd's is someone else's business). Returns the drifts confirmed by this reading and those that
   * were confirmed before and are gone now.
   */
  observe(peer: string, expected: readonly string[], sent: readonly string[], ours: ReadonlySet<string>): { confirmed: Drift[]; cleared: Drift[] } {
    const sentSet = new Set(sent);
    const expectedSet = new Set(expected);
    const now: Drift[] = [
      ...expected.filter((p) => !sentSet.has(p)).map((prefix) => ({ peer, kind: 'missing' as const, prefix })),
      ...sent.filter((p) => !expectedSet.has(p) && ours.has(p)).map((prefix) => ({ peer, kind: 'extra' as const, prefix })),
    ];
    const nowKeys = new Set(now.map(keyOf));
    const cleared: Drift[] = [];
    for (const [key, s] of this.sightings) {
      if (s.drift.peer !== peer || nowKeys.has(key)) continue;
      this.sightings.delete(key);
      if (s.confirmed) cleared.push(s.drift);
    }
    const confirmed: Drift[] = [];
    for (const drift of now) {
      const key = keyOf(drift);
      const s = this.sightings.get(key) ?? { drift, count: 0, confirmed: false };
      s.count++;
      if (s.count === 2) {
        s.confirmed = true;
        confirmed.push(drift);
      }
      this.sightings.set(key, s);
    }
    return { confirmed, cleared };
  }

  /** A repair was sent: the drift must be seen twice again to count again. */
  repaired(drift: Drift): void {
    const s = this.sightings.get(keyOf(drift));
    if (s) s.count = 0;
  }

  /** A reading that was not quiet (something was applied): earlier sightings no longer chain. */
  interrupt(): void {
    for (const s of this.sightings.values()) s.count = 0;
  }

  forgetPeer(peer: string): void {
    for (const [key, s] of this.sightings) if (s.drift.peer === peer) this.sightings.delete(key);
  }

  /** Confirmed drifts still seen, by peer (for status). */
  byPeer(): Map<string, PeerDrift> {
    const out = new Map<string, { missing: string[]; extra: string[] }>();
    for (const { drift, confirmed } of this.sightings.values()) {
      if (!confirmed) continue;
      const entry = out.get(drift.peer) ?? { missing: [], extra: [] };
      entry[drift.kind].push(drift.prefix);
      out.set(drift.peer, entry);
    }
    for (const e of out.values()) {
      e.missing.sort();
      e.extra.sort();
    }
    return out;
  }
}
