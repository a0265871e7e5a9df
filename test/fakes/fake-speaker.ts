import type { Advertisement, PeerStatus, Speaker, SpeakerEvent, SpeakerSync } from '../../src/speaker/speaker';

export interface FakeSpeakerOptions {
  /** Stamps each applied push (`applied[i].at`); the test's FakeClock, so pushes can be counted per window. */
  readonly now?: () => number;
}

/**
 * A Speaker that records every desired set and every breach of the Speaker contract as a violation,
 * which the test then asserts empty (as FakeGobgpClient does): the reconciler catches every speaker
 * error and logs it, so a throw here would only have become a log line. Recorded breaches: pushes that
 * overlap (the reconciler promises one at a time), duplicate prefixes in one set, an advertisement that
 * is not a host route, a push after close() or destroy().
 */
export class FakeSpeaker implements Speaker {
  /** Every desired set applied, in order. */
  readonly pushes: Array<readonly string[]> = [];
  /** The same pushes with their attributes (a reload test checks what is re-sent). */
  readonly sets: Array<readonly Advertisement[]> = [];
  /** The same pushes, stamped with options.now() (0 without it). */
  readonly applied: Array<{ readonly at: number; readonly prefixes: readonly string[] }> = [];
  readonly violations: string[] = [];
  /** The advertisements (attributes included) of the last applied push. */
  lastAds: readonly Advertisement[] = [];
  /** Fails the next n pushes (an unreachable daemon); those are not violations. */
  failNext = 0;
  pushDelay: () => Promise<void> = async () => {};
  private inFlight = false;
  private closed = false;
  private readonly listeners = new Set<(e: SpeakerEvent) => void>();

  constructor(private readonly options: FakeSpeakerOptions = {}) {}

  async start(): Promise<void> {
    if (this.closed) this.violation('start after close');
  }

  async setAdvertisements(ads: readonly Advertisement[]): Promise<void> {
    const prefixes = ads.map((a) => a.prefix);
    if (this.closed) {
      this.violation(`setAdvertisements after close (${prefixes.join(',') || 'empty set'})`);
      return;
    }
    if (this.inFlight) this.violation(`concurrent setAdvertisements (${prefixes.join(',') || 'empty set'} while another push runs)`);
    if (new Set(prefixes).size !== prefixes.length) this.violation(`duplicate prefixes in one set: ${prefixes.join(',')}`);
    for (const p of prefixes) if (!/\/(32|128)$/.test(p)) this.violation(`${p} is not a host route`);
    const wasInFlight = this.inFlight;
    this.inFlight = true;
    try {
      await this.pushDelay();
      if (this.failNext > 0) {
        this.failNext -= 1;
        throw new Error('FakeSpeaker: injected failure');
      }
      this.pushes.push(prefixes);
      this.lastAds = ads;
      this.sets.push(ads);
      this.applied.push({ at: this.options.now?.() ?? 0, prefixes });
    } finally {
      // An overlapping push (a violation already) must not clear the flag of the one still running.
      if (!wasInFlight) this.inFlight = false;
    }
  }

  get current(): readonly string[] {
    return this.pushes[this.pushes.length - 1] ?? [];
  }

  peers(): readonly PeerStatus[] {
    return [];
  }

  onEvent(listener: (e: SpeakerEvent) => void): () => void {
    const entry = (e: SpeakerEvent) => listener(e);
    this.listeners.add(entry);
    return () => void this.listeners.delete(entry);
  }

  emit(e: SpeakerEvent): void {
    for (const l of [...this.listeners]) l(e);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  async destroy(): Promise<void> {
    this.closed = true;
  }

  /** Every pushed prefix counts as sent to one peer, "fake". */
  advertised(): ReadonlyMap<string, readonly string[]> {
    return new Map([['fake', this.current]]);
  }

  sync(): SpeakerSync {
    return { state: 'in-sync', since: 0, pendingAdd: [], pendingDelete: [], desired: new Map([['fake', this.current]]), drift: new Map() };
  }

  private violation(message: string): void {
    this.violations.push(message);
  }
}
