/**
 * Contract of the control module: the admin API's view of the daemon. The composition root implements
 * AdminActions; the admin server and the CLI only speak these shapes.
 */
export interface DaemonStatus {
  readonly node: string;
  readonly version: string;
  readonly drained: boolean;
  /** Where the node drain came from (absent when not drained); see DrainOrigin. */
  readonly drain?: DrainOrigin;
  readonly shuttingDown: boolean;
  readonly vips: ReadonlyArray<{
    readonly name: string;
    readonly prefix: string;
    /** announced: the up path; pessimized and draining paths are advertised too, with their attributes. */
    readonly state: 'announced' | 'pessimized' | 'draining' | 'withdrawn';
    readonly reason: string;
    readonly detail: string;
    readonly since: string;
    /** Flap damping penalty (RFC 2439) now; 0 without damping. */
    readonly penalty?: number;
    /** ISO time a damping suppression ends if the VIP does not flap again. */
    readonly suppressedUntil?: string;
    /** Where a drain of this VIP alone came from (absent when not drained). */
    readonly drain?: DrainOrigin;
    readonly listeners: ReadonlyArray<{ readonly id: string; readonly port: number; readonly pool: string; readonly bound: boolean; readonly activeSessions: number }>;
    /** Per BGP peer: `announced` only when the path is in that peer's adj-RIB-out; otherwise why not. */
    readonly peers: ReadonlyArray<VipPeerAnnounce>;
  }>;
  readonly pools: ReadonlyArray<{
    readonly name: string;
    readonly healthy: number;
    readonly backends: ReadonlyArray<{
      readonly address: string;
      readonly health: string;
      readonly since: string;
      readonly lastCheck?: { readonly ok: boolean; readonly detail: string; readonly durationMs: number; readonly at: string };
      readonly activeConnections: number;
      readonly totalConnections: number;
      readonly connectErrors: number;
      /** Passive health keeps the backend out of picking until then (absent when not ejected). */
      readonly ejectedUntil?: string;
      /** Operator drain of this backend (no new connections). */
      readonly drained: boolean;
      /** Where the backend drain came from (absent when not drained). */
      readonly drain?: DrainOrigin;
    }>;
  }>;
  readonly peers: ReadonlyArray<{
    readonly address: string;
    readonly asn: number;
    readonly state: string;
    readonly since: string;
    /** Address families the session is configured to carry (ipv4-unicast, ipv6-unicast). */
    readonly families: readonly string[];
    /** Of those, the ones the peer accepted in its OPEN; absent until read. */
    readonly negotiated?: readonly string[];
    /** Prefixes in this peer's adj-RIB-out. */
    readonly advertised: readonly string[];
    /** The session's source address on this node (speaker.peers[].localAddress), when configured. */
    readonly localAddress?: string;
    /** Prefixes vipd wants this peer sent (the desired set within its families), beside `advertised`. */
    readonly desired?: readonly string[];
    /** Confirmed differences between the two, still seen (logged, counted, being repaired). */
    readonly drift?: { readonly missing: readonly string[]; readonly extra: readonly string[] };
  }>;
  /** Whether gobgpd holds what vipd wants; pending lists and the last refused call when it does not. */
  readonly speakerSync?: {
    readonly state: 'in-sync' | 'applying' | 'failing';
    readonly since: string;
    readonly pendingAdd: readonly string[];
    readonly pendingDelete: readonly string[];
    readonly lastError?: { readonly at: string; readonly call: string; readonly reply: string };
  };
  /** Drains of the node and of single VIPs, each with its phase and deadlines. */
  readonly drains?: ReadonlyArray<DrainPhaseStatus>;
}

/** One running or held drain (announce/drain-sequence.ts). */
export interface DrainPhaseStatus {
  /** "node" or the VIP's name. */
  readonly target: string;
  /** grace: advertised with GRACEFUL_SHUTDOWN; withdrawn: past the grace; closed: remaining connections closed. */
  readonly phase: 'grace' | 'withdrawn' | 'closed';
  readonly drainedBy: string;
  readonly drainedAt: string;
  /** ISO time the grace ends (the withdraw), while in grace. */
  readonly graceUntil?: string;
  /** ISO time remaining connections are closed (drain.closeAfter), while pending. */
  readonly closeAt?: string;
  readonly restoredFrom?: string;
}

/** A drain request: the whole node, or one VIP; the grace defaults to drain.grace. */
export interface DrainRequest {
  readonly vip?: string;
  /** 0..3,600,000 ms. */
  readonly graceMs?: number;
}

export interface VipPeerAnnounce {
  readonly peer: string;
  readonly state: 'announced' | 'withdrawn';
  /** Set when withdrawn: the VIP's own reason, or sessionDown, familyNotCarried, familyNotNegotiated, notInAdjRibOut. */
  readonly reason?: string;
}

/** Who set a drain and when; `restoredFrom` names the state file when it was restored at start. */
export interface DrainOrigin {
  readonly drainedBy: string;
  readonly drainedAt: string;
  readonly restoredFrom?: string;
}

/** An admin request the daemon refuses; the message names what is wrong. Nothing was changed. */
export class AdminInputError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
    this.name = 'AdminInputError';
  }
}

/**
 * Mutations name their `source`: where the request came from, for people reading status and logs
 * (`admin socket /run/vipd/lb1.sock`, `admin tcp 127.0.0.1:9180 (token)`).
 */
export interface AdminActions {
  status(): DaemonStatus;
  /**
   * Drains (or undrains) the node, or one VIP (404 listing the known VIPs for an unknown one): the
   * path is advertised with GRACEFUL_SHUTDOWN for the grace, then withdrawn. `source` names who asked (e.g. `admin socket /run/vipd/lb1.sock`); it is
   * logged and kept with the drain in the state file. Resolves once the change is durable and pushed.
   */
  drain(source: string, request?: DrainRequest): Promise<void>;
  /** Ends the drain of the node, or of `request.vip`; the VIPs go back through their gates. */
  undrain(source: string, request?: { readonly vip?: string }): Promise<void>;
  /**
   * Stops (drained=true) or resumes new connections to one backend; established ones carry on. Persisted
   * like drain(). Throws AdminInputError for an unknown pool or backend.
   */
  drainBackend(pool: string, backend: string, drained: boolean, source: string): Promise<void>;
  metricsText(): Promise<{ contentType: string; body: string }>;
  /**
   * Re-reads the config file the daemon was started with and applies it in place, or refuses it and
   * keeps the old one (docs/reload.md). Throws AdminInputError 409 while starting or stopping.
   */
  reload(source: string): Promise<ReloadReport>;
}

/** What a reload did; `issues` name each refused key with its line in the file. */
export interface ReloadReport {
  /** The file the daemon read: always the one it was started with. */
  readonly file?: string;
  readonly result: 'applied' | 'unchanged' | 'rejected' | 'failed';
  readonly summary?: string;
  readonly reason?: string;
  readonly issues?: ReadonlyArray<{ readonly path: string; readonly line: number; readonly col: number; readonly message: string }>;
}

/**
 * Admin connections open at once, over both transports together. Their descriptors are reserved in
 * the proxy's fd budget (proxy/limits.ts FD_HEADROOM), so a flood of idle admin connections can never
 * take the descriptors health probes need.
 */
export const ADMIN_MAX_CONNECTIONS = 64;
