import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { VipdError } from '../../lib/errors';
import type { ApiDestination, ApiFamily, ApiGlobal, ApiPath, ApiPeer, ApiPeerEvent } from './api-types';
import { GOBGP_PROTO_FILES, gobgpProtoDir } from './proto';

/**
 * Typed access to the few GobgpApi RPCs vipd uses. Every failure surfaces as a GobgpApiError
 * (code VIPD_ERR_GOBGP_API) with the gRPC error kept as `cause`. Unary calls and the collection of
 * server streams (ListPath, ListPeer) are bounded by a deadline; the WatchEvent stream is not.
 */
export interface GobgpApiClient {
  getBgp(): Promise<ApiGlobal>;
  /** Resolves with the path's UUID. */
  addPath(path: ApiPath): Promise<Uint8Array>;
  /** Withdraws one locally originated path. Deleting a path gobgpd does not have succeeds. */
  deletePath(path: ApiPath): Promise<void>;
  /** The global RIB for one family: every destination with all its paths. */
  listPath(family: ApiFamily): Promise<ApiDestination[]>;
  /**
   * What gobgpd would send one neighbor in one family (ADJ_OUT; gobgpd computes it from the RIB, its
   * export policy and the neighbor's configured families, whatever the session's state).
   */
  listAdjOut(neighbor: string, family: ApiFamily): Promise<ApiDestination[]>;
  listPeer(address?: string): Promise<ApiPeer[]>;
  /**
   * Streams peer events: one INIT per configured peer, END_OF_INIT, then STATE on every change.
   * `onError` is called at most once, when the stream fails or ends; nothing is called after cancel().
   */
  watchPeerEvents(handlers: PeerEventHandlers): PeerEventWatch;
  close(): void;
}

export interface PeerEventHandlers {
  onEvent(event: ApiPeerEvent): void;
  onError(error: GobgpApiError): void;
}

export interface PeerEventWatch {
  cancel(): void;
}

export class GobgpApiError extends VipdError {
  readonly method: string;
  /** gRPC status code; grpc.status.UNAVAILABLE when gobgpd is not there. */
  readonly grpcCode: grpc.status;
  constructor(method: string, grpcCode: grpc.status, message: string, options?: { cause?: unknown }) {
    super('VIPD_ERR_GOBGP_API', `gobgp ${method}: ${message}`, options);
    this.name = 'GobgpApiError';
    this.method = method;
    this.grpcCode = grpcCode;
  }

  /** The gRPC status by name ("UNKNOWN", "UNAVAILABLE"), for logs and metric labels. */
  get codeName(): string {
    return grpc.status[this.grpcCode] ?? String(this.grpcCode);
  }

  /** The daemon did not answer (down, restarting, hung), as opposed to refusing the request. */
  get unreachable(): boolean {
    return this.grpcCode === grpc.status.UNAVAILABLE || this.grpcCode === grpc.status.DEADLINE_EXCEEDED;
  }
}

export interface GobgpClientOptions {
  /** "127.0.0.1:50051", "[::1]:50051" or "unix:/absolute/path". */
  readonly address: string;
  /** Bound on each unary call and on collecting a whole ListPath/ListPeer stream. Default 5000. */
  readonly deadlineMs?: number;
}

const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // grpc-js backs off up to 120 s between connection attempts by default; a restarted gobgpd must be
  // found again within a couple of seconds, because it forgets every path until vipd re-adds them.
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 2000,
  // The API is on loopback or a unix socket; an http_proxy in the environment must not capture it.
  'grpc.enable_http_proxy': 0,
};

let cachedService: grpc.ServiceDefinition | undefined;

function gobgpService(): grpc.ServiceDefinition {
  if (cachedService) return cachedService;
  const definition = protoLoader.loadSync([...GOBGP_PROTO_FILES], { ...PROTO_LOADER_OPTIONS, includeDirs: [gobgpProtoDir()] });
  return (cachedService = definition['apipb.GobgpApi'] as grpc.ServiceDefinition);
}

function toApiError(method: string, err: unknown): GobgpApiError {
  const e = err as Partial<grpc.ServiceError>;
  const code = typeof e.code === 'number' ? e.code : grpc.status.UNKNOWN;
  const details = e.details || (err instanceof Error ? err.message : String(err));
  return new GobgpApiError(method, code, `${grpc.status[code] ?? code}: ${details}`, { cause: err });
}

export class GobgpClient implements GobgpApiClient {
  private readonly client: grpc.Client;
  private readonly service: grpc.ServiceDefinition;
  private readonly deadlineMs: number;

  constructor(options: GobgpClientOptions) {
    this.service = gobgpService();
    this.deadlineMs = options.deadlineMs ?? 5000;
    this.client = new grpc.Client(options.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  getBgp(): Promise<ApiGlobal> {
    return this.unary<{ global: ApiGlobal | null }>('GetBgp', {}).then((r) => {
      if (!r.global) throw new GobgpApiError('GetBgp', grpc.status.INTERNAL, 'response without global');
      return r.global;
    });
  }

  addPath(path: ApiPath): Promise<Uint8Array> {
    return this.unary<{ uuid: Uint8Array }>('AddPath', { table_type: 'GLOBAL', path }).then((r) => r.uuid);
  }

  async deletePath(path: ApiPath): Promise<void> {
    // A DeletePath without a path (or one that fails to serialise into none) deletes every local path.
    if (!path?.nlri || !path.family) throw new GobgpApiError('DeletePath', grpc.status.INVALID_ARGUMENT, 'refusing a request without a path: gobgpd would delete every local path');
    await this.unary<unknown>('DeletePath', { table_type: 'GLOBAL', family: path.family, path });
  }

  listPath(family: ApiFamily): Promise<ApiDestination[]> {
    return this.collect<{ destination: ApiDestination | null }, ApiDestination>('ListPath', { table_type: 'GLOBAL', family }, (r) => r.destination);
  }

  listAdjOut(neighbor: string, family: ApiFamily): Promise<ApiDestination[]> {
    return this.collect<{ destination: ApiDestination | null }, ApiDestination>('ListPath', { table_type: 'ADJ_OUT', name: neighbor, family }, (r) => r.destination);
  }

  listPeer(address?: string): Promise<ApiPeer[]> {
    return this.collect<{ peer: ApiPeer | null }, ApiPeer>('ListPeer', { address: address ?? '' }, (r) => r.peer);
  }

  watchPeerEvents(handlers: PeerEventHandlers): PeerEventWatch {
    const method = this.method('WatchEvent');
    const call = this.client.makeServerStreamRequest<object, unknown>(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      { peer: {} },
    );
    let done = false;
    const finish = (err: GobgpApiError): void => {
      if (done) return;
      done = true;
      handlers.onError(err);
    };
    call.on('data', (r: { peer?: ApiPeerEvent | null; event?: string }) => {
      if (!done && r.event === 'peer' && r.peer) handlers.onEvent(r.peer);
    });
    call.on('error', (err: grpc.ServiceError) => finish(toApiError('WatchEvent', err)));
    call.on('end', () => finish(new GobgpApiError('WatchEvent', grpc.status.UNAVAILABLE, 'stream ended by gobgpd')));
    return {
      cancel: () => {
        if (done) return;
        done = true;
        call.cancel();
      },
    };
  }

  close(): void {
    this.client.close();
  }

  private method(name: string): grpc.MethodDefinition<object, unknown> {
    const m = this.service[name];
    if (!m) throw new Error(`GobgpApi.${name} is not in proto/gobgp.proto`);
    return m as grpc.MethodDefinition<object, unknown>;
  }

  private deadline(): Date {
    return new Date(Date.now() + this.deadlineMs);
  }

  private unary<R>(name: string, request: object): Promise<R> {
    const method = this.method(name);
    return new Promise<R>((resolve, reject) => {
      this.client.makeUnaryRequest<object, unknown>(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        { deadline: this.deadline() },
        (err, response) => (err ? reject(toApiError(name, err)) : resolve(response as R)),
      );
    });
  }

  private collect<R, T>(name: string, request: object, pick: (response: R) => T | null): Promise<T[]> {
    const method = this.method(name);
    return new Promise<T[]>((resolve, reject) => {
      const items: T[] = [];
      const call = this.client.makeServerStreamRequest<object, unknown>(method.path, method.requestSerialize, method.responseDeserialize, request, {
        deadline: this.deadline(),
      });
      call.on('data', (r: R) => {
        const item = pick(r);
        if (item) items.push(item);
      });
      call.on('error', (err: grpc.ServiceError) => reject(toApiError(name, err)));
      call.on('end', () => resolve(items));
    });
  }
}
