/**
 * Plain-object shapes of the GoBGP API messages as the client sends and receives them: field names as
 * in proto/ (snake_case), enums as their names, 64-bit integers as numbers, bytes as Buffer.
 * Responses carry every field (defaults filled in); requests may leave fields out.
 */

export interface ApiAny {
  readonly type_url: string;
  readonly value: Uint8Array;
}

export type ApiAfi = 'AFI_IP' | 'AFI_IP6';
export type ApiSafi = 'SAFI_UNICAST';

export interface ApiFamily {
  readonly afi: ApiAfi;
  readonly safi: ApiSafi;
}

export interface ApiPath {
  readonly nlri: ApiAny;
  readonly pattrs: readonly ApiAny[];
  readonly family: ApiFamily;
  readonly best?: boolean;
  readonly is_withdraw?: boolean;
  readonly source_asn?: number;
  readonly source_id?: string;
  readonly filtered?: boolean;
  readonly stale?: boolean;
  readonly is_from_external?: boolean;
  /** "<nil>" for a locally originated path, else the peer's address. */
  readonly neighbor_ip?: string;
  readonly is_nexthop_invalid?: boolean;
  readonly identifier?: number;
}

export interface ApiDestination {
  readonly prefix: string;
  readonly paths: readonly ApiPath[];
}

export interface ApiGlobal {
  readonly asn: number;
  readonly router_id: string;
  readonly listen_port: number;
  readonly listen_addresses: readonly string[];
}

export type ApiSessionState = 'UNKNOWN' | 'IDLE' | 'CONNECT' | 'ACTIVE' | 'OPENSENT' | 'OPENCONFIRM' | 'ESTABLISHED';
export type ApiAdminState = 'UP' | 'DOWN' | 'PFX_CT';

export interface ApiTimestamp {
  readonly seconds: number;
  readonly nanos: number;
}

export interface ApiPeer {
  readonly conf: {
    readonly description: string;
    readonly local_asn: number;
    readonly neighbor_address: string;
    readonly peer_asn: number;
    readonly neighbor_interface: string;
    readonly admin_down: boolean;
  } | null;
  readonly state: {
    readonly local_asn: number;
    readonly neighbor_address: string;
    readonly peer_asn: number;
    readonly session_state: ApiSessionState;
    readonly admin_state: ApiAdminState;
    readonly flops: number;
    /** Capabilities of the peer's OPEN (capability.proto messages packed in Any). */
    readonly remote_cap?: readonly ApiAny[];
    readonly router_id: string;
  } | null;
  readonly timers: {
    readonly config: { readonly connect_retry: number; readonly hold_time: number; readonly keepalive_interval: number } | null;
    readonly state: {
      readonly negotiated_hold_time: number;
      readonly uptime: ApiTimestamp | null;
      readonly downtime: ApiTimestamp | null;
    } | null;
  } | null;
  readonly transport: {
    readonly local_address: string;
    readonly local_port: number;
    readonly remote_address: string;
    readonly remote_port: number;
  } | null;
}

export type ApiPeerEventType = 'UNKNOWN' | 'INIT' | 'END_OF_INIT' | 'STATE';

export interface ApiPeerEvent {
  readonly type: ApiPeerEventType;
  readonly peer: ApiPeer | null;
}
