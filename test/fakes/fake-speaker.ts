import type { Advertisement, PeerStatus, Speaker, SpeakerEvent } from '../../src/speaker/speaker';

/**
 * A Speaker that records every desired set and fails on contract misuse: concurrent pushes (the
 * reconciler promises one at a time), duplicate prefixes, or pushes after close.
 */
export class FakeSpeaker implements Speaker {
  readonly pushes: Array<readonly string[]> = [];
  failNext = 0;
  private inFlight = false;
  private closed = false;
  private listeners: Array<(e: SpeakerEvent) => void> = [];
  pushDelay: () => Promise<void> = async () => {};

  async start(): Promise<void> {}
  async setAdvertisements(ads: readonly Advertisement[]): Promise<void> {
    if (this.closed) throw new Error('FakeSpeaker: setAdvertisements after close');
    if (this.inFlight) throw new Error('FakeSpeaker: concurrent setAdvertisements');
    const prefixes = ads.map((a) => a.prefix);
    if (new Set(prefixes).size !== prefixes.length) throw new Error(`FakeSpeaker: duplicate prefixes ${prefixes.join(',')}`);
    this.inFlight = true;
    try {
      await this.pushDelay();
      if (this.failNext > 0) {
        this.failNext -= 1;
        throw new Error('FakeSpeaker: injected failure');
      }
      this.pushes.push(prefixes);
    } finally {
      this.inFlight = false;
    }
  }
  get current(): readonly string[] {
    return this.pushes[this.pushes.length - 1] ?? [];
  }
  peers(): readonly PeerStatus[] {
    return [];
  }
  onEvent(listener: (e: SpeakerEvent) => void): () => void {
    this.listeners.push(listener);
    return () => (this.listeners = this.listeners.filter((l) => l !== listener));
  }
  emit(e: SpeakerEvent): void {
    for (const l of this.listeners) l(e);
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
}
