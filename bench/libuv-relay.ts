/**
 * A reference relay for the benchmark, not part of vipd: the least a Node process can do per proxied
 * TCP connection. It talks to libuv's TCP handles through Node's internal bindings
 * (`process.binding('tcp_wrap')` and `'stream_wrap'`, the layer under net.Socket), so a connection
 * costs two handles and a few small request objects instead of two net.Socket objects with their
 * Readable/Writable state, listeners and timers.
 *
 * Why it is in the bench: it measures how much of vipd's cost per new connection is net.Socket itself
 * (docs/performance.md), which decides whether reaching HAProxy's new-connection rate needs leaving the
 * public net API. The bindings are undocumented and deprecated for users (DEP0111) and may change in
 * any Node release; vipd does not use them.
 *
 * What it does: accept, dial the one backend, relay both ways with backpressure (a reader stops while
 * a write to the other leg is pending), relay a FIN with shutdown(), and close both legs when both
 * directions are done or at the first error. No limits, timeouts, health or metrics.
 *
 * Usage: node libuv-relay.js LISTEN_HOST LISTEN_PORT BACKEND_HOST BACKEND_PORT
 */

interface StreamHandle {
  conn: Relayed;
  peer: StreamHandle;
  /** Writes of this handle's reads that the peer has not completed. */
  pendingWrites: number;
  onread: (this: StreamHandle, data: ArrayBuffer | undefined) => void;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteRequest, data: Uint8Array): number;
  shutdown(req: ShutdownRequest): number;
  setNoDelay(enable: boolean): number;
  connect(req: ConnectRequest, address: string, port: number): number;
  close(): void;
}

interface ServerHandle {
  bind(address: string, port: number): number;
  listen(backlog: number): number;
  onconnection: (status: number, client: StreamHandle | undefined) => void;
}

interface WriteRequest {
  handle: StreamHandle;
  from: StreamHandle;
  buffer: Uint8Array | undefined;
  async: boolean;
  oncomplete: (this: WriteRequest, status: number) => void;
}

interface ShutdownRequest {
  handle: StreamHandle;
  conn: Relayed;
  oncomplete: (this: ShutdownRequest, status: number) => void;
}

interface ConnectRequest {
  conn: Relayed;
  address: string;
  port: number;
  oncomplete: (this: ConnectRequest, status: number) => void;
}

interface TcpBinding {
  TCP: new (type: number) => StreamHandle & ServerHandle;
  TCPConnectWrap: new () => ConnectRequest;
  constants: { SOCKET: number; SERVER: number };
}

interface StreamBinding {
  WriteWrap: new () => WriteRequest;
  ShutdownWrap: new () => ShutdownRequest;
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

interface Relayed {
  readonly client: StreamHandle;
  readonly upstream: StreamHandle;
  closed: boolean;
  /** Directions whose FIN has been relayed. */
  finished: number;
}

const binding = (process as unknown as { binding(name: string): unknown }).binding;
const tcp = binding('tcp_wrap') as TcpBinding;
const stream = binding('stream_wrap') as StreamBinding;
const state = stream.streamBaseState;
const UV_EOF = -4095;

function closeBoth(conn: Relayed): void {
  if (conn.closed) return;
  conn.closed = true;
  conn.client.close();
  conn.upstream.close();
}

function afterWrite(this: WriteRequest, status: number): void {
  const from = this.from;
  if (status < 0) {
    closeBoth(from.conn);
    return;
  }
  from.pendingWrites--;
  if (from.pendingWrites === 0 && !from.conn.closed) from.readStart();
}

function afterShutdown(this: ShutdownRequest): void {
  const conn = this.conn;
  conn.finished++;
  if (conn.finished === 2) closeBoth(conn);
}

function onRead(this: StreamHandle, data: ArrayBuffer | undefined): void {
  const conn = this.conn;
  if (conn.closed) return;
  const nread = state[stream.kReadBytesOrError]!;
  const peer = this.peer;
  if (nread > 0) {
    const chunk = new Uint8Array(data!, state[stream.kArrayBufferOffset]!, nread);
    const req = new stream.WriteWrap();
    req.handle = peer;
    req.from = this;
    req.async = false;
    req.oncomplete = afterWrite;
    if (peer.writeBuffer(req, chunk) !== 0) {
      closeBoth(conn);
      return;
    }
    if (state[stream.kLastWriteWasAsync] !== 0) {
      // The peer's kernel buffer is full: keep the chunk alive and stop reading until it is written.
      req.buffer = chunk;
      this.pendingWrites++;
      this.readStop();
    }
    return;
  }
  if (nread === 0) return;
  if (nread !== UV_EOF) {
    closeBoth(conn);
    return;
  }
  this.readStop();
  const req = new stream.ShutdownWrap();
  req.handle = peer;
  req.conn = conn;
  req.oncomplete = afterShutdown;
  if (peer.shutdown(req) !== 0) closeBoth(conn);
}

function afterConnect(this: ConnectRequest, status: number): void {
  const conn = this.conn;
  if (status < 0) {
    closeBoth(conn);
    return;
  }
  conn.upstream.setNoDelay(true);
  conn.client.readStart();
  conn.upstream.readStart();
}

function main(): void {
  const [listenHost, listenPort, backendHost, backendPort] = process.argv.slice(2);
  if (listenHost === undefined || listenPort === undefined || backendHost === undefined || backendPort === undefined) {
    process.stderr.write('usage: libuv-relay LISTEN_HOST LISTEN_PORT BACKEND_HOST BACKEND_PORT\n');
    process.exit(2);
  }
  const server = new tcp.TCP(tcp.constants.SERVER);
  const bindStatus = server.bind(listenHost, Number(listenPort));
  const listenStatus = bindStatus === 0 ? server.listen(511) : bindStatus;
  if (listenStatus !== 0) {
    process.stderr.write(`libuv-relay: cannot listen on ${listenHost}:${listenPort} (libuv status ${listenStatus})\n`);
    process.exit(1);
  }
  server.onconnection = (status, client) => {
    if (status !== 0 || client === undefined) return;
    client.setNoDelay(true);
    const upstream = new tcp.TCP(tcp.constants.SOCKET);
    const conn: Relayed = { client, upstream, closed: false, finished: 0 };
    for (const [handle, peer] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      handle.conn = conn;
      handle.peer = peer;
      handle.pendingWrites = 0;
      handle.onread = onRead;
    }
    const req = new tcp.TCPConnectWrap();
    req.conn = conn;
    req.address = backendHost;
    req.port = Number(backendPort);
    req.oncomplete = afterConnect;
    if (upstream.connect(req, backendHost, Number(backendPort)) !== 0) closeBoth(conn);
  };
  process.on('SIGTERM', () => process.exit(0));
}

main();
