/**
 * Contract of the control module: the admin API's view of the daemon. The composition root implements
 * AdminActions; the admin server and the CLI only speak these shapes.
 */
export interface DaemonStatus {
  readonly node: string;
  readonly version: string;
  readonly drained: boolean;
  readonly shuttingDown: boolean;
  readonly vips: ReadonlyArray<{
    readonly name: string;
    readonly prefix: string;
    readonly state: 'announced' | 'withdrawn';
    readonly reason: string;
    readonly detail: string;
    readonly since: string;
    readonly listeners: ReadonlyArray<{ readonly id: string; readonly port: number; readonly pool: string; readonly bound: boolean; readonly activeSessions: number }>;
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
      /** Operator drain of this backend (no new connections). */
      readonly drained: boolean;
    }>;
  }>;
  readonly peers: ReadonlyArray<{ readonly address: string; readonly asn: number; readonly state: string; readonly since: string }>;
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
  drain(source: string): Promise<void>;
  undrain(source: string): Promise<void>;
  /** Stops (drained=true) or resumes new connections to one backend; established ones carry on. Throws AdminInputError for an unknown pool or backend. */
  drainBackend(pool: string, backend: string, drained: boolean, source: string): Promise<void>;
  metricsText(): Promise<{ contentType: string; body: string }>;
}

/**
 * Admin connections open at once, over both transports together. Their descriptors are reserved in
 * the proxy's fd budget (proxy/limits.ts FD_HEADROOM), so a flood of idle admin connections can never
 * take the descriptors health probes need.
 */
export const ADMIN_MAX_CONNECTIONS = 64;
