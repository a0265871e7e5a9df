import { loadPackageDefinition, Server, ServerCredentials, status, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** proto/grpc/health/v1/health.proto, found above this file (dist/test/fakes or test/fakes). */
export function healthProtoFile(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, 'proto', 'grpc', 'health', 'v1', 'health.proto');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`proto/grpc/health/v1/health.proto not found above ${__dirname}`);
  }
}

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

/**
 * A grpc.health.v1 server built from the upstream .proto with proto-loader (not from vipd's hand-written
 * codec, so the two are checked against each other). Statuses per service name; "" is the server.
 * An unknown service answers NOT_FOUND, as upstream's HealthServer does.
 */
export class GrpcHealthServer {
  readonly statuses = new Map<string, ServingStatus>([['', 'SERVING']]);
  readonly seenServices: string[] = [];
  private readonly server = new Server();

  /** `statusOf` replaces the map lookup (a lab backend reads its status from a file per call). */
  constructor(private readonly statusOf?: (service: string) => ServingStatus | undefined) {
    const definition = loadPackageDefinition(loadSync(healthProtoFile(), { enums: String, defaults: true })) as unknown as {
      grpc: { health: { v1: { Health: { service: Parameters<Server['addService']>[0] } } } };
    };
    this.server.addService(definition.grpc.health.v1.Health.service, {
      Check: (call: ServerUnaryCall<{ service: string }, unknown>, callback: sendUnaryData<{ status: ServingStatus }>) => {
        this.seenServices.push(call.request.service);
        const known = this.statusOf ? this.statusOf(call.request.service) : this.statuses.get(call.request.service);
        if (known === undefined) callback({ code: status.NOT_FOUND, details: 'unknown service' });
        else callback(null, { status: known });
      },
      Watch: (call: { end(): void }) => call.end(),
    });
  }

  /** Binds host:port (port 0 picks one); resolves with the port. */
  listen(host: string, port = 0, credentials = ServerCredentials.createInsecure()): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
    });
  }

  close(): void {
    this.server.forceShutdown();
  }
}
