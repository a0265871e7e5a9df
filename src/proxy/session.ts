import type { Socket } from 'node:net';
import type { PoolSnapshot } from '../health/health';
import type { Endpoint } from '../net/endpoint';
import type { BackendEntry, BackendLoadTracker } from './backend-load';
import type { ConnectError, ConnectHandler, Connector, PendingConnect } from './connector';
import type { ListenerSpec, Picker } from './proxy';

export type SessionState = 'connecting' | 'relaying' | 'closed';

/**
 * How a session ended. `noHealthyBackend` and `connectFailed` are refusals: the client was reset
 * before a single byte was relayed.
 */
export type SessionOutcome =
  | 'completed'
  | 'clientReset'
  | 'clientError'
  | 'upstreamReset'
  | 'upstreamError'
  | 'noHealthyBackend'
  | 'connectFailed'
  | 'destroyed';

/** Read-only view of one proxied client connection. */
export interface ProxySession {
  readonly state: SessionState;
  /** Set once the session is closed. */
  readonly outcome: SessionOutcome | undefined;
  /** "127.0.0.1:40312" */
  readonly clientAddress: string;
  /** The backend relayed to, or the last one dialled while connecting. */
  readonly backend: Endpoint | undefined;
  /** Distinct backends dialled, the successful one included. */
  readonly attempts: number;
  readonly bytesFromClient: number;
  readonly bytesFromUpstream: number;
  readonly startedAt: number;
  /** Bytes held in vipd's stream buffers for this connection, both legs, both directions. */
  bufferedBytes(): number;
}

/** What a listener shares with every one of its sessions: one object per listener keeps sessions small. */
export interface SessionContext {
  readonly spec: ListenerSpec;
  readonly snapshot: () => PoolSnapshot;
  readonly picker: Picker;
  readonly load: BackendLoadTracker;
  readonly connect: Connector;
  readonly now: () => number;
  onConnectFailed(session: ProxySession, error: ConnectError, retrying: boolean): void;
  onEnd(session: ProxySession): void;
}

const NOTHING_TRIED: ReadonlySet<string> = new Set();

const kSession: unique symbol = Symbol('vipd.session');
type SessionSocket = Socket & { [kSession]?: Session };

/**
 * One client connection and its upstream.
 *
 * The client is accepted paused (pauseOnConnect), so nothing is read from it until an upstream is
 * connected. Every dial failure before that point (refused, timeout, reset) is retried on another
 * healthy backend, up to spec.maxConnectAttempts distinct backends, and the client never learns of
 * it. When no backend can be reached the client is reset (RST), not closed with a FIN: it usually
 * has unread bytes queued (a TLS ClientHello), and Linux answers close() with an RST in that case
 * anyway; an RST also tells the client at once that it was not served rather than that the server
 * ended a conversation, and leaves no TIME_WAIT on the balancer.
 *
 * Once connected, bytes are relayed both ways with backpressure: a leg whose peer's write() returns
 * false is paused until 'drain'. Each direction then holds less than the writer's high-water mark
 * plus the chunk that crossed it, and in the paused reader whatever one more read brings in (Node
 * stops reading a paused socket only after that read): at most 2 x highWaterMark + 2 x 64 KiB with
 * Node's 64 KiB reads, whatever the peers do.
 *
 * A FIN is relayed as a FIN once everything before it has been written (end()). The session ends
 * when both directions are finished, or at the first error, which resets the other leg so that an
 * abort reaches the other peer as an abort and never as a clean end of stream.
 */
export class Session implements ProxySession, ConnectHandler {
  readonly startedAt: number;

  private currentState: SessionState = 'connecting';
  private finalOutcome: SessionOutcome | undefined;
  private target: Endpoint | undefined;
  private dialCount = 0;
  private clientBytes = 0;
  private upstreamBytes = 0;

  private upstream: SessionSocket | undefined;
  /** The backend this session holds a load slot on (dialling or connected). */
  private slot: BackendEntry | undefined;
  private pending: PendingConnect | undefined;
  private tried: Set<string> | undefined;
  private clientClosed = false;
  private upstreamClosed = true;
  private readonly clientHost: string | undefined;
  private readonly clientPort: number | undefined;

  constructor(
    private readonly ctx: SessionContext,
    private readonly client: SessionSocket,
  ) {
    this.startedAt = ctx.now();
    // Read now: Node caches the peer name, so logs can still name the client after it is gone.
    this.clientHost = client.remoteAddress;
    this.clientPort = client.remotePort;
    client[kSession] = this;
    client.on('error', Session.onClientError);
    client.on('close', Session.onClientClose);
  }

  get state(): SessionState {
    return this.currentState;
  }

  get outcome(): SessionOutcome | undefined {
    return this.finalOutcome;
  }

  get backend(): Endpoint | undefined {
    return this.target;
  }

  get attempts(): number {
    return this.dialCount;
  }

  get bytesFromClient(): number {
    return this.clientBytes;
  }

  get bytesFromUpstream(): number {
    return this.upstreamBytes;
  }

  get clientAddress(): string {
    return this.clientHost?.includes(':') ? `[${this.clientHost}]:${this.clientPort}` : `${this.clientHost}:${this.clientPort}`;
  }

  bufferedBytes(): number {
    const client = this.client;
    const upstream = this.upstream;
    let total = client.writableLength + client.readableLength;
    if (upstream !== undefined) total += upstream.writableLength + upstream.readableLength;
    return total;
  }

  start(): void {
    const target = this.ctx.picker.pick(this.ctx.snapshot(), this.ctx.load, NOTHING_TRIED);
    if (target === undefined) this.refuse('noHealthyBackend');
    else this.dial(target);
  }

  /** Resets both legs (or abandons the dial) now; 'close' events then finish the session. */
  destroy(): void {
    if (this.currentState === 'closed') return;
    this.finalOutcome ??= 'destroyed';
    this.abandonDial();
    reset(this.client);
    if (this.upstream !== undefined) reset(this.upstream);
  }

  onConnected(socket: Socket): void {
    this.pending = undefined;
    this.currentState = 'relaying';
    this.ctx.load.established(this.slot!);
    const upstream = socket as SessionSocket;
    const client = this.client;
    upstream[kSession] = this;
    this.upstream = upstream;
    this.upstreamClosed = false;
    upstream.on('data', Session.onUpstreamData);
    upstream.on('end', Session.onUpstreamEnd);
    upstream.on('drain', Session.onUpstreamDrain);
    upstream.on('error', Session.onUpstreamError);
    upstream.on('close', Session.onUpstreamClose);
    client.on('data', Session.onClientData);
    client.on('end', Session.onClientEnd);
    client.on('drain', Session.onClientDrain);
    client.resume();
  }

  onConnectFailed(error: ConnectError): void {
    this.pending = undefined;
    const failed = this.slot!;
    this.slot = undefined;
    this.ctx.load.dialFailed(failed, error.kind);
    const tried = (this.tried ??= new Set());
    tried.add(failed.endpoint.key);
    const next =
      this.dialCount < this.ctx.spec.maxConnectAttempts
        ? this.ctx.picker.pick(this.ctx.snapshot(), this.ctx.load, tried)
        : undefined;
    this.ctx.onConnectFailed(this, error, next !== undefined);
    if (next === undefined) this.refuse('connectFailed');
    else this.dial(next);
  }

  private dial(target: Endpoint): void {
    this.dialCount++;
    this.target = target;
    this.slot = this.ctx.load.dialStarted(target);
    this.pending = this.ctx.connect(target, this.ctx.spec.connectTimeoutMs, this);
  }

  private refuse(outcome: 'noHealthyBackend' | 'connectFailed'): void {
    this.finalOutcome = outcome;
    reset(this.client);
  }

  private abandonDial(): void {
    if (this.pending === undefined) return;
    this.pending.cancel();
    this.pending = undefined;
    this.ctx.load.release(this.slot!);
    this.slot = undefined;
  }

  /** First failure wins the outcome; the other leg is reset so the abort travels on. */
  private legFailed(leg: 'client' | 'upstream', err: NodeJS.ErrnoException): void {
    if (this.finalOutcome === undefined) {
      const wasReset = err.code === 'ECONNRESET' || err.code === 'EPIPE';
      if (leg === 'client') this.finalOutcome = wasReset ? 'clientReset' : 'clientError';
      else this.finalOutcome = wasReset ? 'upstreamReset' : 'upstreamError';
    }
    if (leg === 'client') {
      this.abandonDial();
      if (this.upstream !== undefined) reset(this.upstream);
    } else {
      reset(this.client);
    }
  }

  private legClosed(leg: 'client' | 'upstream'): void {
    if (leg === 'client') {
      this.clientClosed = true;
      // Nobody is left to serve: a dial still running is pointless.
      this.abandonDial();
    } else {
      this.upstreamClosed = true;
    }
    if (this.clientClosed && this.upstreamClosed && this.pending === undefined) this.finish();
  }

  private finish(): void {
    if (this.currentState === 'closed') return;
    this.currentState = 'closed';
    this.finalOutcome ??= 'completed';
    if (this.slot !== undefined) {
      this.ctx.load.release(this.slot);
      this.slot = undefined;
    }
    this.ctx.onEnd(this);
  }

  // Shared listeners: `this` is the socket and the session hangs off it, so a connection costs no
  // closures. Each leg's data handler writes into the other leg and pauses itself on backpressure.

  private static onClientData(this: SessionSocket, chunk: Buffer): void {
    const session = this[kSession]!;
    session.clientBytes += chunk.length;
    session.slot!.unflushedBytesOut += chunk.length;
    if (!session.upstream!.write(chunk)) this.pause();
  }

  private static onUpstreamData(this: SessionSocket, chunk: Buffer): void {
    const session = this[kSession]!;
    session.upstreamBytes += chunk.length;
    session.slot!.unflushedBytesIn += chunk.length;
    if (!session.client.write(chunk)) this.pause();
  }

  private static onUpstreamDrain(this: SessionSocket): void {
    this[kSession]!.client.resume();
  }

  private static onClientDrain(this: SessionSocket): void {
    this[kSession]!.upstream!.resume();
  }

  private static onClientEnd(this: SessionSocket): void {
    const upstream = this[kSession]!.upstream!;
    if (!upstream.destroyed) upstream.end();
  }

  private static onUpstreamEnd(this: SessionSocket): void {
    const client = this[kSession]!.client;
    if (!client.destroyed) client.end();
  }

  private static onClientError(this: SessionSocket, err: NodeJS.ErrnoException): void {
    this[kSession]!.legFailed('client', err);
  }

  private static onUpstreamError(this: SessionSocket, err: NodeJS.ErrnoException): void {
    this[kSession]!.legFailed('upstream', err);
  }

  private static onClientClose(this: SessionSocket): void {
    this[kSession]!.legClosed('client');
  }

  private static onUpstreamClose(this: SessionSocket): void {
    this[kSession]!.legClosed('upstream');
  }
}

function reset(socket: Socket): void {
  if (socket.destroyed) return;
  socket.resetAndDestroy();
}
