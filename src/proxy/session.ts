import type { Socket } from 'node:net';
import { StateMachine, type StateMachineOptions } from '../lib/transition';
import type { Endpoint } from '../net/endpoint';
import type { BackendEntry, BackendLoadTracker, QueuedClient } from './backend-load';
import { ConnectError, type ConnectHandler, type Connector, type PendingConnect, type UpstreamReader } from './connector';
import type { LiveListMember } from './live-list';
import { mayStartTlsHandshake, ReplayBuffer } from './replay';
import { UpstreamReadBuffers } from './read-buffer';
import type { ListenerSpec } from './proxy';

/**
 * waiting: for the client's first byte (no upstream yet); queued: for a slot on a full pool;
 * connecting; relaying; closing: ended by vipd at its maximum age, both legs flushing their FIN.
 */
export type SessionState = 'waiting' | 'queued' | 'connecting' | 'relaying' | 'closing' | 'closed';

/**
 * How a session ended.
 * - Refusals (the client is reset before a byte was relayed): noHealthyBackend, connectFailed,
 *   backendsFull (every usable backend at maxConnections and no queue), queueFull, queueTimeout.
 * - Closed by vipd's policy: firstByteTimeout (reset, no upstream was ever opened), idleTimeout (FIN both
 *   ways), maxAge (FIN both ways after flushing), backendDown (reset both ways: closeOnBackendDown).
 * - Errors: a leg failed; the other leg is reset so the abort travels on.
 */
export type SessionOutcome =
  | 'completed'
  | 'clientReset'
  | 'clientError'
  | 'upstreamReset'
  | 'upstreamError'
  | 'noHealthyBackend'
  | 'connectFailed'
  | 'localResources'
  | 'backendsFull'
  | 'queueFull'
  | 'queueTimeout'
  | 'firstByteTimeout'
  | 'idleTimeout'
  | 'maxAge'
  | 'backendDown'
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
  /** Monotonic ms (the listener's clock). */
  readonly startedAt: number;
  /** Monotonic ms at which vipd ends the session for its age; Infinity without maxConnectionAge. */
  readonly closeAt: number;
  /** Bytes held in vipd's stream buffers for this connection, both legs, both directions. */
  bufferedBytes(): number;
}

/** What a listener shares with every one of its sessions: one object per listener keeps sessions small. */
export interface SessionContext {
  readonly spec: ListenerSpec;
  /** Options of every session's StateMachine (machine 'session'; a logger only when debug is on). */
  readonly sessionMachine: StateMachineOptions;
  readonly load: BackendLoadTracker;
  readonly connect: Connector;
  /** The largest buffer an upstream read may get (read-buffer.ts). */
  readonly maxReadBufferBytes: number;
  now(): number;
  /** Uniform in [0, 1): the maxConnectionAge jitter. */
  random(): number;
  /**
   * A backend for `session`: healthy, in service (neither drained nor ejected), not one it has already
   * tried, and below its maxConnections unless `ignoreFull`.
   */
  pick(session: Session, ignoreFull: boolean): Endpoint | undefined;
  onConnectFailed(session: ProxySession, error: ConnectError, retrying: boolean): void;
  onEnd(session: ProxySession): void;
}

/** After its FIN at maximum age, how long a session waits for both peers to finish before it is reset. */
export const GRACEFUL_CLOSE_LIMIT_MS = 5_000;

const kSession: unique symbol = Symbol('vipd.session');

/** Legal edges of a session, by target state: the states each may be entered from. */
/** A session starts in 'connecting' (no first-byte timeout: it dials at once) and goes to 'waiting' otherwise. */
const TO_WAITING: readonly SessionState[] = ['connecting'];
const TO_QUEUED: readonly SessionState[] = ['waiting', 'connecting'];
const TO_CONNECTING: readonly SessionState[] = ['waiting', 'queued', 'connecting', 'relaying'];
const TO_RELAYING: readonly SessionState[] = ['connecting'];
const TO_CLOSING: readonly SessionState[] = ['relaying'];
const TO_CLOSED: readonly SessionState[] = ['waiting', 'queued', 'connecting', 'relaying', 'closing'];
type SessionSocket = Socket & { [kSession]?: Session };

/**
 * One client connection and its upstream.
 *
 * The client is accepted paused (pauseOnConnect). With a first-byte timeout the session reads until
 * the first chunk arrives, holds it, and only then picks and dials: a client that never speaks costs
 * no upstream and is reset at the timeout. Without one, it dials at once and reads nothing until the
 * upstream is connected. Every dial failure before relaying (refused, timeout, reset) is retried on
 * another backend, up to pool.maxConnectAttempts distinct backends, and the client never learns of it.
 * When every backend the client may use is at maxConnections, it waits in the pool's queue (still
 * paused) until a slot frees or the queue timeout hits.
 *
 * A backend that resets or closes the connection before its first byte (it died between accept and
 * answer) is a dial failure too, where pool.retryBeforeReply allows: until the backend's first byte the
 * session keeps what the client sent (ReplayBuffer), and moves the client to another backend with
 * those bytes, within the same maxConnectAttempts.
 *
 * A client that is not served is reset (RST), not closed with a FIN: it usually has unread bytes queued
 * (a TLS ClientHello), and Linux answers close() with an RST in that case anyway; an RST also tells the
 * client at once that it was not served rather than that the server ended a conversation, and leaves
 * no TIME_WAIT on the balancer.
 *
 * Once connected, bytes are relayed both ways with backpressure: a leg whose peer's write() returns
 * false is paused until 'drain'. The two directions differ in how they read:
 * - client to upstream: the accepted socket's 'data' events (net.Server cannot give its sockets
 *   `onread`). The direction holds less than the upstream's high-water mark plus the chunk that
 *   crossed it, and in the paused client whatever one more read brings in (Node stops reading a
 *   paused socket only after that read): at most 2 x highWaterMark + 2 x 64 KiB.
 * - upstream to client, which carries the responses, watch events and downloads: reads land in the
 *   session's own buffer (UpstreamReader), which stops reading as soon as a write returns false. The
 *   direction holds less than the client's high-water mark plus one read (maxReadBufferBytes).
 *
 * A FIN is relayed as a FIN once everything before it has been written (end()). The session ends
 * when both directions are finished, or at the first error, which resets the other leg so that an
 * abort reaches the other peer as an abort and never as a clean end of stream.
 *
 * Idle and age limits cost nothing per chunk: the listener's housekeeping sweep calls sweep(), which
 * compares the byte counters with what it saw last time.
 */
export class Session implements ProxySession, ConnectHandler, UpstreamReader, QueuedClient, LiveListMember<Session> {
  readonly startedAt: number;
  readonly closeAt: number;

  // QueuedClient: owned by the pool's tracker while the session is queued.
  queueNext: QueuedClient | undefined;
  queuePrev: QueuedClient | undefined;
  queueDeadline = 0;
  queuedFor: BackendEntry | undefined;

  // LiveListMember: owned by the listener's list of open sessions.
  liveNext: Session | undefined;
  livePrev: Session | undefined;

  /** Every state change goes through it; the edges allowed are the TO_* lists above. */
  private readonly machine: StateMachine<SessionState>;
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
  /** The client's first chunk, read before any upstream existed; written first once one does. */
  private firstChunk: Buffer | undefined;
  /** Where the upstream's reads land; created with the first upstream socket. */
  private reads: UpstreamReadBuffers | undefined;
  /** Until the backend's first byte, while pool.retryBeforeReply allows a move to another backend. */
  private replayable: boolean;
  /** What the client sent while replayable; created at its first byte. */
  private replay: ReplayBuffer | undefined;
  /** Dialling again after a failure before the first reply: the replay goes first, the client is hooked already. */
  private replaying = false;
  /** The client's FIN arrived before an upstream existed; it is relayed once one does. */
  private clientEnded = false;
  private clientClosed = false;
  private upstreamClosed = true;
  /** 'drain' listeners are added at the first backpressure on a leg (rare for short connections), then kept. */
  private upstreamDrainHooked = false;
  private clientDrainHooked = false;
  private readonly clientHost: string;
  private readonly clientPort: number | undefined;
  /** Bytes moved as of the last sweep, and the sweep time at which they last changed (idle timeout). */
  private sweptBytes = 0;
  private quietSince = 0;
  /** Monotonic ms at which a session still closing at maximum age is reset. */
  private closingDeadline = Infinity;

  constructor(
    private readonly ctx: SessionContext,
    private readonly client: SessionSocket,
    /** The client's IP address, as read at accept (Node forgets it once the socket is gone). */
    clientHost: string,
  ) {
    this.startedAt = ctx.now();
    this.machine = new StateMachine<SessionState>('connecting', ctx.sessionMachine);
    const timeouts = ctx.spec.pool.timeouts;
    this.closeAt =
      timeouts.maxConnectionAgeMs > 0 ? this.startedAt + timeouts.maxConnectionAgeMs + ctx.random() * timeouts.maxConnectionAgeJitterMs : Infinity;
    this.clientHost = clientHost;
    this.clientPort = client.remotePort;
    this.replayable = ctx.spec.pool.retryBeforeReply !== 'off';
    client[kSession] = this;
    client.on('end', Session.onClientEnd);
    client.on('error', Session.onClientError);
    client.on('close', Session.onClientClose);
  }

  get state(): SessionState {
    return this.machine.state;
  }

  private get currentState(): SessionState {
    return this.machine.state;
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

  /** The client's IP address (per-source limits and source-hash key on it). */
  get clientIp(): string {
    return this.clientHost;
  }

  get clientAddress(): string {
    return this.clientHost.includes(':') ? `[${this.clientHost}]:${this.clientPort}` : `${this.clientHost}:${this.clientPort}`;
  }

  bufferedBytes(): number {
    const client = this.client;
    const upstream = this.upstream;
    let total = client.writableLength + client.readableLength + (this.firstChunk?.length ?? 0);
    if (upstream !== undefined) total += upstream.writableLength + upstream.readableLength;
    return total;
  }

  /** ConnectHandler: the upstream leg delivers its bytes to this session through onUpstreamRead. */
  get reader(): UpstreamReader {
    return this;
  }

  hasTried(backendKey: string): boolean {
    return this.tried !== undefined && this.tried.has(backendKey);
  }

  start(): void {
    const firstByteMs = this.ctx.spec.pool.timeouts.firstByteMs;
    if (firstByteMs <= 0) {
      this.pickAndDial();
      return;
    }
    this.machine.transition(TO_WAITING, 'waiting', 'first-byte timeout: read before dialling');
    const client = this.client;
    client.on('data', Session.onClientFirstData);
    client.on('timeout', Session.onClientTimeout);
    // The socket's own inactivity timer: Node keeps one list per duration, so a connection costs a list
    // entry, not a timer, and the timer goes with the socket whatever happens to it.
    client.setTimeout(firstByteMs);
    client.resume();
  }

  /** Resets both legs (or abandons the wait or dial) now; 'close' events then finish the session. */
  destroy(): void {
    if (this.currentState === 'closed') return;
    this.finalOutcome ??= 'destroyed';
    this.abandonUpstream();
    reset(this.client);
    if (this.upstream !== undefined) reset(this.upstream);
  }

  /** closeOnBackendDown: resets a session relaying to `entry`, so its client reconnects to a live backend. */
  closeIfRelayingTo(entry: BackendEntry): void {
    if (this.slot !== entry || (this.currentState !== 'relaying' && this.currentState !== 'closing')) return;
    this.finalOutcome ??= 'backendDown';
    reset(this.client);
    reset(this.upstream!);
  }

  /** Housekeeping, every sweep interval: idle timeout, maximum age, and the deadline of a graceful close. */
  sweep(now: number, idleMs: number): void {
    if (this.currentState === 'relaying') {
      if (now >= this.closeAt) {
        this.closeGracefully(now);
        return;
      }
      if (idleMs <= 0) return;
      const moved = this.clientBytes + this.upstreamBytes;
      if (moved !== this.sweptBytes) {
        this.sweptBytes = moved;
        this.quietSince = now;
      } else if (now - this.quietSince >= idleMs) {
        this.closeIdle();
      }
    } else if (this.currentState === 'closing' && now >= this.closingDeadline) {
      reset(this.client);
      reset(this.upstream!);
    }
  }

  // QueuedClient

  onSlotReserved(entry: BackendEntry): void {
    this.startDial(entry);
  }

  onQueueTimeout(): void {
    this.refuse('queueTimeout');
  }

  // ConnectHandler

  onConnected(socket: Socket): void {
    this.pending = undefined;
    this.machine.transition(TO_RELAYING, 'relaying', 'upstream connected');
    const slot = this.slot!;
    this.ctx.load.established(slot);
    const upstream = socket as SessionSocket;
    const client = this.client;
    upstream[kSession] = this;
    this.upstream = upstream;
    this.upstreamClosed = false;
    upstream.on('end', Session.onUpstreamEnd);
    upstream.on('error', Session.onUpstreamError);
    upstream.on('close', Session.onUpstreamClose);
    this.quietSince = this.ctx.now();
    this.sweptBytes = this.clientBytes;
    let drained = true;
    if (this.replaying) {
      this.replaying = false;
      for (const chunk of this.replay!.chunks) {
        slot.unflushedBytesOut += chunk.length;
        drained = upstream.write(chunk);
      }
    } else {
      client.on('data', Session.onClientData);
      const first = this.firstChunk;
      if (first !== undefined) {
        this.firstChunk = undefined;
        if (this.replayable) this.keepForReplay(first);
        slot.unflushedBytesOut += first.length;
        drained = upstream.write(first);
      }
    }
    if (!drained) this.hookUpstreamDrain();
    if (this.clientEnded) upstream.end();
    // Backpressure from the very first write: the client stays paused until the upstream drains.
    else if (drained) client.resume();
  }

  // UpstreamReader

  /** The session's own buffers, reused from read to read and sized by the reads (read-buffer.ts). */
  nextReadBuffer(): Buffer {
    // Every byte from the upstream is written to the client, so what it has flushed is the difference.
    const flushed = this.upstreamBytes - this.client.writableLength;
    return (this.reads ??= new UpstreamReadBuffers(this.ctx.maxReadBufferBytes)).next(flushed);
  }

  onUpstreamRead(length: number, buffer: Buffer): boolean {
    const reads = this.reads!;
    reads.read(length);
    const client = this.client;
    // Closing at maximum age, or the client already gone: what the backend still sends is dropped.
    if (this.currentState !== 'relaying' || client.destroyed) return true;
    if (this.replayable) this.endReplay();
    this.upstreamBytes += length;
    this.slot!.unflushedBytesIn += length;
    const written = client.write(buffer.subarray(0, length));
    // Still queued: the write refers to `buffer`, which the next read must not reuse until it is flushed.
    if (client.writableLength > 0) reads.lendCurrent(this.upstreamBytes);
    if (written) return true;
    if (!this.clientDrainHooked) this.hookClientDrain();
    return false;
  }

  onConnectFailed(error: ConnectError): void {
    this.pending = undefined;
    const failed = this.slot!;
    this.slot = undefined;
    this.ctx.load.dialFailed(failed, error.kind);
    if (error.kind === 'local') {
      this.ctx.onConnectFailed(this, error, false);
      this.refuse('localResources');
      return;
    }
    const tried = (this.tried ??= new Set());
    tried.add(failed.endpoint.key);
    const mayRetry = this.dialCount < this.ctx.spec.pool.maxConnectAttempts;
    const next = mayRetry ? this.ctx.pick(this, false) : undefined;
    this.ctx.onConnectFailed(this, error, next !== undefined);
    if (next !== undefined) this.dial(next);
    else if (mayRetry) this.waitOrRefuse('connectFailed');
    else this.refuse('connectFailed');
  }

  private keepForReplay(chunk: Buffer): void {
    let replay = this.replay;
    if (replay === undefined) {
      const tlsOnly = this.ctx.spec.pool.retryBeforeReply === 'tls';
      // Plaintext in tls mode: decided at the first byte, without allocating a buffer per connection.
      if (tlsOnly && !mayStartTlsHandshake(chunk)) {
        this.endReplay();
        return;
      }
      replay = this.replay = new ReplayBuffer(tlsOnly);
    }
    if (!replay.add(chunk)) this.endReplay();
  }

  /** The backend answered, or the client sent what may not be replayed: from now on a failure reaches the client. */
  private endReplay(): void {
    this.replayable = false;
    this.replay = undefined;
  }

  /**
   * The backend reset or closed the connection before its first byte. When the session may still be
   * replayed and another backend can take it, the dead upstream is dropped, blamed on its backend
   * ('noReply', which counts towards ejection), and the client is dialled elsewhere with what it sent;
   * true then. False when the failure must reach the client as before.
   *
   * Only once the client has sent something and while it has not sent its FIN: a backend may close a
   * connection on which nothing was said for a while, and answers a client's FIN with its own (a TCP
   * check against the VIP does just that); neither is a failure to move away from.
   */
  private retryBeforeReply(how: string): boolean {
    if (this.replay === undefined || this.finalOutcome !== undefined || this.currentState !== 'relaying') return false;
    const client = this.client;
    if (client.destroyed || client.readableEnded || this.dialCount >= this.ctx.spec.pool.maxConnectAttempts) return false;
    const failed = this.slot!;
    (this.tried ??= new Set()).add(failed.endpoint.key);
    const next = this.ctx.pick(this, false);
    if (next === undefined) return false;
    const upstream = this.upstream!;
    upstream.removeListener('end', Session.onUpstreamEnd);
    upstream.removeListener('error', Session.onUpstreamError);
    upstream.removeListener('close', Session.onUpstreamClose);
    upstream.on('error', ignoreError);
    upstream.destroy();
    this.upstream = undefined;
    this.upstreamClosed = true;
    // Its 'drain' listener went with the dropped socket; the next one gets its own when it needs it.
    this.upstreamDrainHooked = false;
    this.slot = undefined;
    this.ctx.load.dialFailed(failed, 'noReply');
    const key = failed.endpoint.key;
    this.ctx.onConnectFailed(this, new ConnectError('noReply', key, `${key} ${how} before its first byte`), true);
    client.pause();
    this.replaying = true;
    this.dial(next);
    return true;
  }

  private pickAndDial(): void {
    const target = this.ctx.pick(this, false);
    if (target !== undefined) this.dial(target);
    else this.waitOrRefuse('noHealthyBackend');
  }

  /** Nothing to dial now: queue if only fullness stands in the way, else refuse with `nobody`. */
  private waitOrRefuse(nobody: 'noHealthyBackend' | 'connectFailed'): void {
    const chosen = this.ctx.pick(this, true);
    if (chosen === undefined) {
      this.refuse(nobody);
      return;
    }
    const load = this.ctx.load;
    const entry = load.entry(chosen.key);
    if (entry !== undefined && load.enqueue(this, entry)) {
      this.machine.transition(TO_QUEUED, 'queued', 'every usable backend is full');
      return;
    }
    this.refuse(load.spec.queue.size === 0 ? 'backendsFull' : 'queueFull');
  }

  private dial(target: Endpoint): void {
    this.startDial(this.ctx.load.dialStarted(target));
  }

  /** Dials `slot`, on which this session already holds a load slot. */
  private startDial(slot: BackendEntry): void {
    // The first dial (from waiting, queued or the initial connecting), or a retry on another backend
    // (from connecting after a failed dial, from relaying for a retry before the first reply).
    this.machine.transition(TO_CONNECTING, 'connecting', 'dialling');
    this.dialCount++;
    this.target = slot.endpoint;
    this.slot = slot;
    this.pending = this.ctx.connect(slot.endpoint, this.ctx.spec.pool.connectTimeoutMs, this);
  }

  private refuse(outcome: SessionOutcome): void {
    this.finalOutcome ??= outcome;
    reset(this.client);
  }

  /** Leaves the queue or abandons the dial, giving back the slot: nobody is left to serve. */
  private abandonUpstream(): void {
    if (this.queuedFor !== undefined) this.ctx.load.dequeue(this);
    if (this.pending === undefined) return;
    this.pending.cancel();
    this.pending = undefined;
    const slot = this.slot!;
    this.slot = undefined;
    this.ctx.load.release(slot);
  }

  private closeIdle(): void {
    this.finalOutcome ??= 'idleTimeout';
    // Nothing moved for the whole idle time, so nothing is unread: destroy() closes with a FIN.
    this.client.destroy();
    this.upstream!.destroy();
  }

  /**
   * Maximum age: no more relaying; what is already buffered is flushed, then a FIN goes both ways.
   * Bytes the peers still send are read and dropped, so that their FIN is seen and both legs close
   * cleanly; a peer that never finishes is reset at closingDeadline.
   */
  private closeGracefully(now: number): void {
    this.machine.transition(TO_CLOSING, 'closing', 'maximum connection age');
    this.finalOutcome ??= 'maxAge';
    this.closingDeadline = now + GRACEFUL_CLOSE_LIMIT_MS;
    const client = this.client;
    const upstream = this.upstream!;
    client.removeListener('data', Session.onClientData);
    client.on('data', discard);
    client.resume();
    upstream.resume();
    if (!client.writableEnded) client.end();
    if (!upstream.writableEnded) upstream.end();
  }

  /** First failure wins the outcome; the other leg is reset so the abort travels on. */
  private legFailed(leg: 'client' | 'upstream', err: NodeJS.ErrnoException): void {
    if (this.finalOutcome === undefined) {
      const wasReset = err.code === 'ECONNRESET' || err.code === 'EPIPE';
      if (leg === 'client') this.finalOutcome = wasReset ? 'clientReset' : 'clientError';
      else this.finalOutcome = wasReset ? 'upstreamReset' : 'upstreamError';
    }
    if (leg === 'client') {
      this.abandonUpstream();
      if (this.upstream !== undefined) reset(this.upstream);
    } else {
      reset(this.client);
    }
  }

  private legClosed(leg: 'client' | 'upstream'): void {
    if (leg === 'client') {
      this.clientClosed = true;
      this.abandonUpstream();
    } else {
      this.upstreamClosed = true;
    }
    if (this.clientClosed && this.upstreamClosed && this.pending === undefined) this.finish();
  }

  private finish(): void {
    this.finalOutcome ??= 'completed';
    if (!this.machine.transition(TO_CLOSED, 'closed', this.finalOutcome)) return;
    this.firstChunk = undefined;
    const slot = this.slot;
    if (slot !== undefined) {
      this.slot = undefined;
      this.ctx.load.release(slot);
    }
    this.ctx.onEnd(this);
  }

  // Shared listeners: `this` is the socket and the session hangs off it, so a connection costs no
  // closures. Each leg's data handler writes into the other leg and pauses itself on backpressure.

  private static onClientFirstData(this: SessionSocket, chunk: Buffer): void {
    const session = this[kSession]!;
    this.removeListener('data', Session.onClientFirstData);
    this.pause();
    this.setTimeout(0);
    session.clientBytes += chunk.length;
    session.firstChunk = chunk;
    session.pickAndDial();
  }

  private static onClientTimeout(this: SessionSocket): void {
    const session = this[kSession]!;
    if (session.currentState !== 'waiting') return;
    session.finalOutcome ??= 'firstByteTimeout';
    reset(this);
  }

  private static onClientData(this: SessionSocket, chunk: Buffer): void {
    const session = this[kSession]!;
    if (session.replayable) session.keepForReplay(chunk);
    session.clientBytes += chunk.length;
    session.slot!.unflushedBytesOut += chunk.length;
    if (!session.upstream!.write(chunk)) {
      this.pause();
      if (!session.upstreamDrainHooked) session.hookUpstreamDrain();
    }
  }

  private hookUpstreamDrain(): void {
    this.upstreamDrainHooked = true;
    this.upstream!.on('drain', Session.onUpstreamDrain);
  }

  private hookClientDrain(): void {
    this.clientDrainHooked = true;
    this.client.on('drain', Session.onClientDrain);
  }

  private static onUpstreamDrain(this: SessionSocket): void {
    this[kSession]!.client.resume();
  }

  private static onClientDrain(this: SessionSocket): void {
    this[kSession]!.upstream!.resume();
  }

  /**
   * Once reading has begun (first-byte mode), the FIN can come before any upstream: Node emits 'end'
   * even on a paused socket when nothing is left unread.
   */
  private static onClientEnd(this: SessionSocket): void {
    const session = this[kSession]!;
    const upstream = session.upstream;
    if (upstream !== undefined) {
      relayEnd(upstream);
    } else if (session.currentState === 'waiting') {
      // Hung up without a word: nothing to relay, so no upstream is ever opened.
      this.setTimeout(0);
      this.end();
    } else {
      session.clientEnded = true;
    }
  }

  private static onUpstreamEnd(this: SessionSocket): void {
    const session = this[kSession]!;
    if (session.retryBeforeReply('closed the connection')) return;
    relayEnd(session.client);
  }

  private static onClientError(this: SessionSocket, err: NodeJS.ErrnoException): void {
    this[kSession]!.legFailed('client', err);
  }

  private static onUpstreamError(this: SessionSocket, err: NodeJS.ErrnoException): void {
    const session = this[kSession]!;
    if (session.retryBeforeReply(`failed (${err.code ?? err.message})`)) return;
    session.legFailed('upstream', err);
  }

  private static onClientClose(this: SessionSocket): void {
    this[kSession]!.legClosed('client');
  }

  private static onUpstreamClose(this: SessionSocket): void {
    this[kSession]!.legClosed('upstream');
  }
}

function discard(): void {}

function ignoreError(): void {}

/**
 * Relays a FIN to `socket`. When its peer has sent its own FIN already and every byte has reached the
 * kernel, the connection is over both ways: close() sends the FIN itself (after what the kernel still
 * holds), which saves a shutdown(2) and Node's end-then-close round.
 *
 * Who closes first decides where the TIME_WAIT lands (docs/performance.md, "Who closes first"). A
 * backend's FIN reaches the client one or two event-loop turns after the bytes before it: libuv reads
 * the EOF after the data, and defers shutdown(2) to its next turn. A client that closes as soon as its
 * answer is complete (HTTP/1.1 `Connection: close`) therefore usually closes first, and the TIME_WAIT
 * holds one of the client's ports rather than sitting on vipd's listening port, as it does behind
 * HAProxy, which sends data and FIN in one pass. Closing here at once (close(2) instead of shutdown)
 * would not help, since the data has already gone out, and would break half-close; the upstream legs
 * themselves are almost never left in TIME_WAIT, because the backend closes first on them.
 */
function relayEnd(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.readableEnded && socket.writableLength === 0) socket.destroy();
  else socket.end();
}

/**
 * Aborts with an RST where libuv allows it. While a shutdown (our FIN) is pending, uv_tcp_close_reset
 * refuses with EINVAL, and Node 20 has by then dropped the handle: the fd leaks, 'close' never comes,
 * and epoll spins on the orphaned socket. A plain close is all that is left then; the FIN is on its way.
 */
function reset(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded && !socket.writableFinished) socket.destroy();
  else socket.resetAndDestroy();
}
