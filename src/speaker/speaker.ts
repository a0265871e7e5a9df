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

/** Address families a session carries (MP-BGP, RFC 4760), in gobgpd's names. */
export type AddressFamily = 'ipv4-unicast' | 'ipv6-unicast';

export type PeerState = 'unknown' | 'idle' | 'connect' | 'active' | 'opensent' | 'openconfirm' | 'established';

export interface PeerStatus {
  readonly address: string;
  readonly asn: number;
  readonly state: PeerState;
  /** Wall-clock ms of the last state change seen by vipd. */
  readonly since: number;
  /** What the session is configured to carry; a path of another family never reaches this peer. */
  readonly families: readonly AddressFamily[];
  /** Of those, what the peer's OPEN accepted (MP-BGP capabilities); unset until vipd has read it. */
  readonly negotiated?: readonly AddressFamily[];
}

export type SpeakerEvent =
  | { readonly type: 'peer'; readonly peer: string; readonly from: PeerState; readonly to: PeerState }
  | { readonly type: 'daemon'; readonly up: boolean; readonly reason: string }
  | { readonly type: 'reconciled'; readonly trigger: string; readonly added: number; readonly deleted: number };

/**
 * Whether the daemon holds what vipd wants (issue 11 point 6): a failed or unfinished application is
 * never hidden, and per peer the desired set stands next to what the peer was really sent.
 */
export interface SpeakerSync {
  /** in-sync: the last reconciliation applied everything; failing: it stopped on an error (and is retried). */
  readonly state: 'in-sync' | 'applying' | 'failing';
  /** Wall-clock ms of the last change of state. */
  readonly since: number;
  /** Prefixes vipd wants in the daemon (or with other attributes) that it has not confirmed applied. */
  readonly pendingAdd: readonly string[];
  /** Prefixes vipd put in the daemon and wants gone that are not confirmed deleted. */
  readonly pendingDelete: readonly string[];
  /** The call the daemon last refused or did not answer, with its reply; cleared by a success. */
  readonly lastError?: { readonly at: number; readonly call: string; readonly reply: string };
  /** By peer: the prefixes it should have been sent (the desired set, within its negotiated families). */
  readonly desired: ReadonlyMap<string, readonly string[]>;
  /** By peer: confirmed differences between that and its adj-RIB-out, still seen. */
  readonly drift: ReadonlyMap<string, { readonly missing: readonly string[]; readonly extra: readonly string[] }>;
}

export interface Speaker {
  start(): Promise<void>;
  /**
   * Records `ads` as the desired set and applies it. Resolves once the daemon matches; rejects if the
   * daemon cannot be reached (the set is kept and applied on reconnect).
   */
  setAdvertisements(ads: readonly Advertisement[]): Promise<void>;
  peers(): readonly PeerStatus[];
  /**
   * By peer address (as in peers()), the prefixes really in that peer's adj-RIB-out, as the daemon last
   * reported them (refreshed on every reconciliation and when a session changes state). A peer whose
   * session is down, or whose table could not be read, has none: status never says announced for a
   * path the peer was not sent.
   */
  advertised(): ReadonlyMap<string, readonly string[]>;
  /** What is applied, pending or drifting (SpeakerSync). */
  sync(): SpeakerSync;
  onEvent(listener: (event: SpeakerEvent) => void): () => void;
  /** Withdraws everything it advertised, then stops (and stops a managed daemon). Idempotent and awaitable. */
  close(): Promise<void>;
  /** Stops at once without withdrawing. Idempotent; resolves once a managed daemon is gone. */
  destroy(): Promise<void>;
}

/** A speaker that advertises nothing: `speaker.driver: none` (proxy-only use and benchmarks). */
export class NullSpeaker implements Speaker {
  async start(): Promise<void> {}
  async setAdvertisements(): Promise<void> {}
  peers(): readonly PeerStatus[] {
    return [];
  }
  advertised(): ReadonlyMap<string, readonly string[]> {
    return new Map();
  }
  sync(): SpeakerSync {
    return { state: 'in-sync', since: 0, pendingAdd: [], pendingDelete: [], desired: new Map(), drift: new Map() };
  }
  onEvent(): () => void {
    return () => {};
  }
  async close(): Promise<void> {}
  async destroy(): Promise<void> {}
}
