import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { PoolSnapshot } from '../../src/health/health';
import { endpoint, type Endpoint } from '../../src/net/endpoint';

/** A pool snapshot in which exactly `healthy` are healthy (and `unhealthy` are listed but down). */
export function snapshotOf(pool: string, healthy: readonly Endpoint[], unhealthy: readonly Endpoint[] = [], version = 1): PoolSnapshot {
  return {
    pool,
    version,
    backends: [
      ...healthy.map((backend) => ({ backend, state: 'healthy' as const, since: 0 })),
      ...unhealthy.map((backend) => ({ backend, state: 'unhealthy' as const, since: 0 })),
    ],
    healthy,
    settled: true,
  };
}

/** A loopback TCP server standing in for a backend; it tracks its sockets so close() leaves none. */
export interface TestBackend {
  readonly endpoint: Endpoint;
  readonly server: Server;
  /** Connections accepted so far. */
  accepted: number;
  /** Bytes read from all connections. */
  bytesReceived: number;
  readonly sockets: Set<Socket>;
  close(): Promise<void>;
}

export async function startBackend(onConnection: (socket: Socket, backend: TestBackend) => void): Promise<TestBackend> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true });
  const backend: TestBackend = {
    endpoint: endpoint('127.0.0.1', 0),
    server,
    accepted: 0,
    bytesReceived: 0,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (socket) => {
    backend.accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // A backend must survive whatever the proxy does to the connection.
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      backend.bytesReceived += chunk.length;
    });
    onConnection(socket, backend);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (backend as { endpoint: Endpoint }).endpoint = endpoint('127.0.0.1', (server.address() as AddressInfo).port);
  return backend;
}

/** Writes back everything it reads and ends once the client has ended. */
export function startEchoBackend(): Promise<TestBackend> {
  return startBackend((socket) => socket.pipe(socket));
}

/** A loopback port with nothing listening on it: connecting is refused. */
export async function closedPort(): Promise<Endpoint> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return endpoint('127.0.0.1', port);
}

export function connectClient(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * Opens a connection (optionally sending `payload`) and reports how it ended. A reset can arrive
 * together with the handshake, in which case the connect itself fails with ECONNRESET.
 */
export function dialAndAwaitEnd(port: number, payload?: Buffer | string): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  if (payload !== undefined) socket.write(payload);
  return closeReason(socket).finally(() => socket.destroy());
}

/** Everything the socket delivers up to EOF; rejects if the stream breaks first. */
export function readToEnd(socket: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

/** How a client connection ended: 'end' (clean EOF), an errno such as ECONNRESET, or 'close'. */
export function closeReason(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.once('end', () => resolve('end'));
    socket.once('close', () => resolve('close'));
    socket.resume();
  });
}

/** One echo round trip through `port`: connect, send, half-close, read the echo to EOF. */
export async function echoOnce(port: number, payload: Buffer): Promise<Buffer> {
  const socket = await connectClient(port);
  const reply = readToEnd(socket);
  socket.end(payload);
  try {
    return await reply;
  } finally {
    socket.destroy();
  }
}

/** How echoHeld ended: served (its socket still open, for the caller to hold or close), or how it was not. */
export type EchoOutcome = { readonly served: true; readonly socket: Socket } | { readonly served: false; readonly how: string; readonly ms: number };

/**
 * Sends `payload` without a FIN (as a TLS client sends its ClientHello) and waits for it to come back.
 * Not served if the connection ends, fails or stays silent for `hangMs`: `how` is 'end', an errno,
 * 'close' or 'hung', and `ms` the time from connecting to that.
 */
export function echoHeld(port: number, payload: Buffer, opts: { host?: string; hangMs?: number } = {}): Promise<EchoOutcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect({ host: opts.host ?? '127.0.0.1', port });
    let settled = false;
    const settle = (outcome: EchoOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(hang);
      resolve(outcome);
    };
    const notServed = (how: string): void => {
      settle({ served: false, how, ms: Math.round(performance.now() - started) });
      socket.destroy();
    };
    const hang = setTimeout(() => notServed('hung'), opts.hangMs ?? 3_000);
    const chunks: Buffer[] = [];
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < payload.length) return;
      if (Buffer.concat(chunks).equals(payload)) settle({ served: true, socket });
      else notServed('wrong echo');
    });
    socket.on('end', () => notServed('end'));
    socket.on('error', (err: NodeJS.ErrnoException) => notServed(err.code ?? err.message));
    socket.on('close', () => notServed('close'));
    socket.write(payload);
  });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function randomPayload(size: number): Buffer {
  return randomBytes(size);
}

export { seededRandom } from './seeded-random';

/** Polls `condition` until it holds or `timeoutMs` passes; returns the time it took. */
export async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return performance.now() - started;
}
