import { connect as netConnect, type Socket, type TcpNetConnectOpts } from 'node:net';
import { VipdError } from '../lib/errors';
import type { Endpoint } from '../net/endpoint';

/**
 * Why a dial failed, as a label. The session retries on every kind but 'local', which is this node's
 * shortage (no fd, no socket memory), not the backend's: another backend would fail the same way, and
 * the backend is not blamed for it. 'noReply' is a connection the backend reset or closed before its
 * first byte, after which the session moved the client to another backend (pool.retryBeforeReply).
 */
export type ConnectFailureKind = 'refused' | 'timeout' | 'reset' | 'unreachable' | 'noReply' | 'local' | 'error';

/** A failed dial. `code` is VIPD_ERR_CONNECT_TIMEOUT for timeouts and VIPD_ERR_NET otherwise. */
export class ConnectError extends VipdError {
  readonly kind: ConnectFailureKind;
  readonly backend: string;
  constructor(kind: ConnectFailureKind, backend: string, message: string, cause?: unknown) {
    super(kind === 'timeout' ? 'VIPD_ERR_CONNECT_TIMEOUT' : 'VIPD_ERR_NET', message, { cause });
    this.kind = kind;
    this.backend = backend;
    this.name = 'ConnectError';
  }
}

/**
 * Receives the outcome of one dial. Exactly one method is called, never synchronously from the
 * Connector call, and neither is called after cancel(). A handler object instead of callbacks lets a
 * session receive the outcome without allocating a closure per dial.
 */
export interface ConnectHandler {
  onConnected(socket: Socket): void;
  onConnectFailed(error: ConnectError): void;
  /** When present, the socket hands its bytes to this reader (net's `onread`) and emits no 'data'. */
  readonly reader?: UpstreamReader;
}

/**
 * Takes a dialled socket's bytes in buffers of its own choosing (net's `onread`): no Buffer is
 * allocated per read and nothing passes through the socket's Readable. 'end', 'error', 'close',
 * pause() and resume() behave as usual.
 */
export interface UpstreamReader {
  /**
   * The buffer the next read lands in: called once when the socket is created and again after every
   * read. It must not be one that a pending write still refers to.
   */
  nextReadBuffer(): Buffer;
  /** `length` bytes arrived at the start of `buffer`. Returning false stops reading until resume(). */
  onUpstreamRead(length: number, buffer: Buffer): boolean;
}

export interface PendingConnect {
  /** Abandons the dial and destroys its socket; the handler hears nothing more. */
  cancel(): void;
}

/** Dials a backend; a socket handed to onConnected is connected, half-open allowed, noDelay and keepalive on. */
export type Connector = (target: Endpoint, timeoutMs: number, handler: ConnectHandler) => PendingConnect;

export interface ConnectorOptions {
  /** TCP keepalive idle time before the first probe. */
  readonly keepAliveInitialDelayMs?: number;
  /** Socket-level high-water mark for the upstream leg (default: Node's). */
  readonly highWaterMark?: number;
  /** Creates a socket that starts connecting; tests inject one that never connects. */
  readonly dial?: (options: TcpNetConnectOpts) => Socket;
}

export const DEFAULT_KEEPALIVE_INITIAL_DELAY_MS = 10_000;

export function createConnector(options: ConnectorOptions = {}): Connector {
  const dial = options.dial ?? netConnect;
  const keepAliveInitialDelay = options.keepAliveInitialDelayMs ?? DEFAULT_KEEPALIVE_INITIAL_DELAY_MS;
  const highWaterMark = options.highWaterMark;
  const deadlines = new Map<number, DialDeadlines>();
  return (target, timeoutMs, handler) => {
    const reader = handler.reader;
    const socket = dial({
      host: target.host,
      port: target.port,
      // Half-close is relayed by the session: Node must not end our side when the backend ends its.
      allowHalfOpen: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay,
      ...(highWaterMark === undefined ? {} : { highWaterMark }),
      ...(reader === undefined
        ? {}
        : { onread: { buffer: () => reader.nextReadBuffer(), callback: (length: number, buffer: Uint8Array) => reader.onUpstreamRead(length, buffer as Buffer) } }),
    }) as DialSocket;
    let timeouts = deadlines.get(timeoutMs);
    if (timeouts === undefined) {
      timeouts = new DialDeadlines(timeoutMs);
      deadlines.set(timeoutMs, timeouts);
    }
    const attempt = new DialAttempt(socket, target, timeouts, handler);
    socket[kDial] = attempt;
    socket.on('connect', onDialConnect);
    socket.on('error', onDialError);
    timeouts.add(attempt);
    return attempt;
  };
}

const kDial: unique symbol = Symbol('vipd.dial');
type DialSocket = Socket & { [kDial]?: DialAttempt | undefined };

class DialAttempt implements PendingConnect {
  settled = false;
  /** Monotonic ms; and the neighbours in the DialDeadlines list while pending. */
  deadline = 0;
  newer: DialAttempt | undefined;
  older: DialAttempt | undefined;

  constructor(
    readonly socket: DialSocket,
    readonly target: Endpoint,
    readonly timeouts: DialDeadlines,
    readonly handler: ConnectHandler,
  ) {}

  cancel(): void {
    if (!this.settle()) return;
    this.socket.destroy();
  }

  /**
   * True the first time only. The dial's 'connect' and 'error' listeners stay on the socket: 'connect'
   * never fires again, and with kDial cleared onDialError returns at once, next to the listener the
   * new owner adds: fewer EventEmitter operations per dial.
   */
  settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.socket[kDial] = undefined;
    this.timeouts.remove(this);
    return true;
  }

  timedOut(): void {
    if (!this.settle()) return;
    this.socket.destroy();
    const key = this.target.key;
    this.handler.onConnectFailed(new ConnectError('timeout', key, `connect to ${key} timed out after ${this.timeouts.timeoutMs} ms`));
  }
}

/**
 * The pending dials that share one timeout, oldest first, which is also deadline order: one timer for
 * all of them. A timer per dial (the socket's setTimeout) costs a Timeout object, a bound function, a
 * timer-list insert and removal, and a timer refresh on every read and write while it is armed.
 */
class DialDeadlines {
  private oldest: DialAttempt | undefined;
  private newest: DialAttempt | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly timeoutMs: number) {}

  add(attempt: DialAttempt): void {
    attempt.deadline = performance.now() + this.timeoutMs;
    attempt.older = this.newest;
    if (this.newest === undefined) this.oldest = attempt;
    else this.newest.newer = attempt;
    this.newest = attempt;
    if (this.timer === undefined) this.schedule(this.timeoutMs);
  }

  remove(attempt: DialAttempt): void {
    const { older, newer } = attempt;
    if (older === undefined) this.oldest = newer;
    else older.newer = newer;
    if (newer === undefined) this.newest = older;
    else newer.older = older;
    attempt.older = attempt.newer = undefined;
  }

  private schedule(delayMs: number): void {
    // Not ref'd: a pending dial alone must not keep a process alive that is otherwise done.
    this.timer = setTimeout(() => this.expire(), Math.max(1, Math.ceil(delayMs))).unref();
  }

  private expire(): void {
    this.timer = undefined;
    const now = performance.now();
    let attempt = this.oldest;
    while (attempt !== undefined && attempt.deadline <= now) {
      attempt.timedOut();
      attempt = this.oldest;
    }
    if (attempt !== undefined) this.schedule(attempt.deadline - now);
  }
}

// Shared listeners (`this` is the socket) so that a dial allocates no closures.
function onDialConnect(this: DialSocket): void {
  const attempt = this[kDial];
  if (attempt === undefined || !attempt.settle()) return;
  attempt.handler.onConnected(this);
}

function onDialError(this: DialSocket, err: Error): void {
  const attempt = this[kDial];
  if (attempt === undefined || !attempt.settle()) return;
  this.destroy();
  attempt.handler.onConnectFailed(normaliseConnectError(attempt.target.key, err));
}

/** Maps a platform dial error to a ConnectError, keeping the original as `cause`. */
export function normaliseConnectError(backend: string, err: unknown): ConnectError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const kind = connectFailureKind(code);
  return new ConnectError(kind, backend, `connect to ${backend} failed: ${code ?? String(err)}`, err);
}

export function connectFailureKind(code: string | undefined): ConnectFailureKind {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ECONNRESET':
    case 'ECONNABORTED':
    case 'EPIPE':
      return 'reset';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    case 'EMFILE':
    case 'ENFILE':
    case 'ENOBUFS':
    case 'ENOMEM':
      return 'local';
    default:
      return 'error';
  }
}
