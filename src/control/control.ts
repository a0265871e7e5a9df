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
    }>;
  }>;
  readonly peers: ReadonlyArray<{ readonly address: string; readonly asn: number; readonly state: string; readonly since: string }>;
}

export interface AdminActions {
  status(): DaemonStatus;
  drain(): Promise<void>;
  undrain(): Promise<void>;
  metricsText(): Promise<{ contentType: string; body: string }>;
}
