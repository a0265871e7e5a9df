import { credentials, makeGenericClientConstructor, status as grpcStatus, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import type { Endpoint } from '../net/endpoint';
import { loadTlsMaterial } from './check-files';
import { MAX_REPLY_BYTES, type CheckSpec, type Probe, type ProbeResult } from './health';

export type GrpcProbeOptions = Pick<CheckSpec, 'service' | 'caFile' | 'certFile' | 'keyFile' | 'insecureSkipVerify' | 'serverName' | 'intervalMs'> & {
  readonly tls: boolean;
};

/**
 * grpc.health.v1.Health/Check, as in grpc/grpc-proto health/v1/health.proto (copied to
 * proto/grpc/health/v1/health.proto; a unit test checks this codec against it through proto-loader).
 * The messages are one string and one enum, so a hand-written codec of a dozen lines is smaller than
 * loading a .proto at run time, and needs no file next to the built code.
 */
export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/** HealthCheckResponse.ServingStatus, upstream names and numbers. */
export const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'] as const;

/** HealthCheckRequest { string service = 1; } */
export function encodeHealthCheckRequest(request: { service?: string }): Buffer {
  const service = Buffer.from(request.service ?? '', 'utf8');
  // proto3 leaves a default (empty) string off the wire.
  if (service.length === 0) return Buffer.alloc(0);
  return Buffer.concat([Buffer.from([0x0a]), encodeVarint(service.length), service]);
}

/** HealthCheckResponse { ServingStatus status = 1; }; unknown fields are skipped, as proto3 requires. */
export function decodeHealthCheckResponse(bytes: Buffer): { status: number } {
  let offset = 0;
  let status = 0;
  while (offset < bytes.length) {
    const tag = readVarint(bytes, offset);
    offset = tag.next;
    const field = tag.value >>> 3;
    const wireType = tag.value & 7;
    if (wireType === 0) {
      const value = readVarint(bytes, offset);
      offset = value.next;
      if (field === 1) status = value.value;
    } else if (wireType === 2) {
      const length = readVarint(bytes, offset);
      offset = length.next + length.value;
    } else if (wireType === 1) {
      offset += 8;
    } else if (wireType === 5) {
      offset += 4;
    } else {
      throw new Error(`HealthCheckResponse: wire type ${wireType} not allowed`);
    }
    if (offset > bytes.length) throw new Error('HealthCheckResponse: truncated');
  }
  return { status };
}

/** The server side of the codec, for fakes and tests. */
export function decodeHealthCheckRequest(bytes: Buffer): { service: string } {
  if (bytes.length === 0) return { service: '' };
  const tag = readVarint(bytes, 0);
  if (tag.value !== 0x0a) return { service: '' };
  const length = readVarint(bytes, tag.next);
  return { service: bytes.subarray(length.next, length.next + length.value).toString('utf8') };
}

export function encodeHealthCheckResponse(response: { status: number }): Buffer {
  return response.status === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x08]), encodeVarint(response.status)]);
}

function encodeVarint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

function readVarint(bytes: Buffer, start: number): { value: number; next: number } {
  let value = 0;
  let factor = 1;
  for (let offset = start; offset < bytes.length && offset < start + 10; offset++) {
    const byte = bytes[offset]!;
    value += (byte & 0x7f) * factor;
    factor *= 128;
    if ((byte & 0x80) === 0) return { value, next: offset + 1 };
  }
  throw new Error('truncated varint');
}

const HealthClient = makeGenericClientConstructor(
  {
    Check: {
      path: HEALTH_CHECK_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: (request: { service?: string }) => encodeHealthCheckRequest(request),
      requestDeserialize: decodeHealthCheckRequest,
      responseSerialize: encodeHealthCheckResponse,
      responseDeserialize: decodeHealthCheckResponse,
    },
  },
  'grpc.health.v1.Health',
);

type CheckCall = (
  request: { service: string },
  options: { deadline: Date },
  callback: (err: ServiceError | null, response?: { status: number }) => void,
) => unknown;

/**
 * One channel per backend, kept across probes (a gRPC client would keep one too, and a new HTTP/2
 * connection per probe would cost a TLS handshake each time). Reconnect back-off is capped at the
 * check interval, so a backend that comes back is seen by the next probes, not after grpc-js's
 * default 120 s. The probe passes only on SERVING.
 */
export class GrpcProbe implements Probe {
  readonly kind = 'grpc';
  private readonly clients = new Map<string, Client>();
  private readonly credentials: ChannelCredentials;
  private closed = false;

  constructor(private readonly options: GrpcProbeOptions) {
    if (options.tls) {
      const { ca, cert, key } = loadTlsMaterial(options);
      this.credentials = credentials.createSsl(ca ?? null, key ?? null, cert ?? null, options.insecureSkipVerify ? { rejectUnauthorized: false } : {});
    } else {
      this.credentials = credentials.createInsecure();
    }
  }

  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult> {
    const startedAt = performance.now();
    const done = (ok: boolean, detail: string): ProbeResult => ({ ok, detail, durationMs: Math.round(performance.now() - startedAt) });
    if (this.closed) return Promise.resolve(done(false, 'probe closed'));
    const client = this.client(target);
    const service = this.options.service ?? '';
    return new Promise((resolve) => {
      try {
        (client as unknown as { Check: CheckCall }).Check({ service }, { deadline: new Date(Date.now() + timeoutMs) }, (err, response) => {
          if (err) {
            const code = grpcStatus[err.code] ?? String(err.code);
            resolve(done(false, err.code === grpcStatus.DEADLINE_EXCEEDED ? `timeout after ${timeoutMs}ms (grpc)` : `grpc ${code}: ${describeDetails(err.details)}`));
            return;
          }
          const status = response?.status ?? 0;
          const name = SERVING_STATUS[status] ?? `status ${status}`;
          resolve(done(status === 1, service === '' ? name : `${name} (${service})`));
        });
      } catch (err) {
        resolve(done(false, `grpc ${oneLine((err as Error).message)}`));
      }
    });
  }

  /** Closes every channel; probes after this fail at once. Idempotent. */
  close(): void {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  private client(target: Endpoint): Client {
    let client = this.clients.get(target.key);
    if (client === undefined) {
      const address = target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
      const backoffMs = Math.max(100, Math.round(this.options.intervalMs));
      client = new HealthClient(address, this.credentials, {
        'grpc.initial_reconnect_backoff_ms': Math.min(backoffMs, 1000),
        'grpc.max_reconnect_backoff_ms': backoffMs,
        'grpc.max_receive_message_length': MAX_REPLY_BYTES,
        // Health checks must not keep the daemon's event loop busy with retries of their own.
        'grpc.enable_retries': 0,
        ...(this.options.serverName !== undefined ? { 'grpc.ssl_target_name_override': this.options.serverName, 'grpc.default_authority': this.options.serverName } : {}),
      });
      this.clients.set(target.key, client);
    }
    return client;
  }
}

/**
 * grpc-js wraps the cause in "No connection established. Last error: …" with OpenSSL's error stack in
 * it; the operator wants the cause: "tls tlsv13 alert certificate required", "connect ECONNREFUSED".
 */
function describeDetails(details: string): string {
  const ssl = /SSL routines:[^:]*:([^:\n]+)/.exec(details);
  if (ssl) {
    const reason = oneLine(ssl[1]!);
    const wantsClientCert = /certificate required|bad certificate/.test(reason);
    return `tls ${reason}${wantsClientCert ? ' (the server requires a client certificate, or refused it: check tls.certFile and tls.keyFile)' : ''}`;
  }
  const connect = /connect (E[A-Z]+)/.exec(details);
  if (connect) return `connect ${connect[1]}`;
  return oneLine(details);
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > 80 ? `${line.slice(0, 80)}…` : line;
}
