/**
 * Contract of a BGP speaker (MetalLB's Session.Set): the caller hands over the whole desired set each
 * time, never increments. The speaker makes the daemon match it, keeps it matching after reconnects
 * and restarts, and removes paths it does not own. It knows nothing of health.
 */
export interface Advertisement {
  /** Host route: "198.19.0.10/32" or "2001:db8::10/128". */
  readonly prefix: string;
  /** Next hop; unset means the session's local address. */
  readonly nextHop?: string;
  /** "65000:100" form. */
  readonly communities: readonly string[];
  /** RFC 8092 "ASN:X:Y" form, each part 0..4294967295. */
  readonly largeCommunities?: readonly string[];
  readonly med?: number;
  readonly localPref?: number;
  /** AS numbers put before the path gobgpd sends (the own AS repeated, to prepend); empty or unset for none. */
  readonly asPath?: readonly number[];
}

export type PeerState = 'unknown' | 'idle' | 'connect' | 'active' | 'opensent' | 'openconfirm' | 'established';

export interface PeerStatus {
  readonly address: string;
  readonly asn: number;
  readonly state: PeerState;
  /** Wall-clock ms of the last state change seen by vipd. */
  readonly since: number;
}

export type SpeakerEvent =
  | { readonly type: 'peer'; readonly peer: string; readonly from: PeerState; readonly to: PeerState }
  | { readonly type: 'daemon'; readonly up: boolean; readonly reason: string }
  | { readonly type: 'reconciled'; readonly trigger: string; readonly added: number; readonly deleted: number };

export interface Speaker {
  start(): Promise<void>;
  /**
   * Records `ads` as the desired set and applies it. Resolves once the daemon matches; rejects if the
   * daemon cannot be reached (the set is kept and applied on reconnect).
   */
  setAdvertisements(ads: readonly Advertisement[]): Promise<void>;
  peers(): readonly PeerStatus[];
  onEvent(listener: (event: SpeakerEvent) => void): () => void;
  /** Withdraws everything it advertised, then stops (and stops a managed daemon). Idempotent. */
  close(): Promise<void>;
  /** Stops at once without withdrawing. Idempotent. */
  destroy(): void;
}

/** A speaker that advertises nothing: `speaker.driver: none` (proxy-only use and benchmarks). */
export class NullSpeaker implements Speaker {
  async start(): Promise<void> {}
  async setAdvertisements(): Promise<void> {}
  peers(): readonly PeerStatus[] {
    return [];
  }
  onEvent(): () => void {
    return () => {};
  }
  async close(): Promise<void> {}
  destroy(): void {}
}
