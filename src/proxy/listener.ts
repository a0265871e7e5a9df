import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { PoolSnapshot } from '../health/health';
import { systemClock, type Clock, type TimerHandle } from '../lib/clock';
import { VipdError } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { BackendLoadTracker } from './backend-load';
import { createConnector, DEFAULT_KEEPALIVE_INITIAL_DELAY_MS, type ConnectError, type Connector } from './connector';
import { createPicker } from './picker';
import type { ListenerSpec, ListenerStats, Picker, ProxyListener } from './proxy';
import { Session, type ProxySession, type SessionContext, type SessionOutcome } from './session';

export interface ListenerOptions {
  readonly spec: ListenerSpec;
  /** The pool's current health snapshot; read at every pick, never mutated. */
  readonly snapshot: () => PoolSnapshot;
  /** Shared by every listener of spec.pool. */
  readonly load: BackendLoadTracker;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock?: Clock;
  /** Dials backends; defaults to createConnector() with the keepalive and high-water mark below. */
  readonly connect?: Connector;
  /** TCP keepalive idle time on client and (default connector) upstream sockets. */
  readonly keepAliveInitialDelayMs?: number;
  /** Stream high-water mark of both legs (default: Node's, 16 KiB on Node 20). */
  readonly highWaterMark?: number;
}

/** A ProxyListener with the extras that tests, status and the composition root use. */
export interface TcpProxyListener extends ProxyListener {
  /** The bound address, once started (the real port when spec.port is 0). */
  address(): AddressInfo | undefined;
  /** Sessions open now, in accept order. */
  sessions(): IterableIterator<ProxySession>;
  /** Called once per session, after it has closed (the access log hook). Returns an unsubscribe. */
  onSessionEnd(listener: (session: ProxySession) => void): () => void;
}

/** Relayed bytes reach the metrics this often; connection counts are always exact. */
const BYTES_FLUSH_INTERVAL_MS = 1_000;

type ListenerState = 'idle' | 'starting' | 'listening' | 'stopped';

export function createListener(options: ListenerOptions): TcpProxyListener {
  return new TcpListener(options);
}

class TcpListener implements TcpProxyListener, SessionContext {
  readonly spec: ListenerSpec;
  readonly snapshot: () => PoolSnapshot;
  readonly picker: Picker;
  readonly load: BackendLoadTracker;
  readonly connect: Connector;
  readonly now: () => number;

  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly labels: { readonly listener: string };
  private readonly server: Server;
  private readonly live = new Set<Session>();
  private readonly boundListeners = new Set<(bound: boolean) => void>();
  private readonly endListeners = new Set<(session: ProxySession) => void>();
  private state: ListenerState = 'idle';
  private isBound = false;
  private starting: { promise: Promise<void>; onListening: () => void; reject: (err: Error) => void } | undefined;
  private closing: Promise<void> | undefined;
  private serverClosed: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  private flushTimer: TimerHandle | undefined;
  private accepted = 0;
  private refused = 0;
  private errors = 0;

  constructor(options: ListenerOptions) {
    const spec = options.spec;
    const keepAliveInitialDelay = options.keepAliveInitialDelayMs ?? DEFAULT_KEEPALIVE_INITIAL_DELAY_MS;
    const highWaterMark = options.highWaterMark;
    this.spec = spec;
    this.snapshot = options.snapshot;
    this.picker = createPicker(spec.balance);
    this.load = options.load;
    this.connect =
      options.connect ??
      createConnector({ keepAliveInitialDelayMs: keepAliveInitialDelay, ...(highWaterMark === undefined ? {} : { highWaterMark }) });
    this.clock = options.clock ?? systemClock;
    const clock = this.clock;
    this.now = () => clock.now();
    this.metrics = options.metrics;
    this.labels = { listener: spec.id };
    this.log = childLogger(options.logger, { component: 'proxy', vip: spec.vip, listener: spec.id });
    this.server = createServer(
      {
        allowHalfOpen: true,
        // Nothing is read from a client until its upstream is connected: a failed dial can then be
        // retried elsewhere, and an unserved client never has its bytes taken in.
        pauseOnConnect: true,
        noDelay: true,
        keepAlive: true,
        keepAliveInitialDelay,
        ...(highWaterMark === undefined ? {} : { highWaterMark }),
      },
      (socket) => this.accept(socket),
    );
    this.server.on('error', (err) => this.onServerError(err));
    // Materialise the series without resetting them: during a reload a listener with the same id
    // may still be draining.
    this.metrics.listenerBound.inc(this.labels, 0);
    this.metrics.sessionsActive.inc(this.labels, 0);
  }

  start(): Promise<void> {
    if (this.state === 'stopped') {
      return Promise.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} is closed`));
    }
    if (this.state === 'listening') return Promise.resolve();
    if (this.starting !== undefined) return this.starting.promise;
    this.state = 'starting';
    let resolveStart!: () => void;
    let rejectStart!: (err: Error) => void;
    const promise = new Promise<void>((resolve, reject) => {
      resolveStart = resolve;
      rejectStart = reject;
    });
    const onListening = (): void => {
      this.starting = undefined;
      this.state = 'listening';
      this.setBound(true);
      this.scheduleFlush();
      resolveStart();
    };
    this.starting = { promise, onListening, reject: rejectStart };
    this.server.once('listening', onListening);
    this.server.listen({ host: this.spec.address, port: this.spec.port });
    return promise;
  }

  bound(): boolean {
    return this.isBound;
  }

  onBoundChange(listener: (bound: boolean) => void): () => void {
    this.boundListeners.add(listener);
    return () => this.boundListeners.delete(listener);
  }

  stats(): ListenerStats {
    return { accepted: this.accepted, active: this.live.size, refused: this.refused, errors: this.errors };
  }

  address(): AddressInfo | undefined {
    const address = this.server.address();
    return address !== null && typeof address === 'object' ? address : undefined;
  }

  sessions(): IterableIterator<ProxySession> {
    return this.live.values();
  }

  onSessionEnd(listener: (session: ProxySession) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  destroy(): void {
    this.stopAccepting();
    for (const session of this.live) session.destroy();
  }

  // SessionContext

  onConnectFailed(session: ProxySession, error: ConnectError, retrying: boolean): void {
    if (retrying) this.metrics.connectRetries.inc(this.labels);
    this.log.debug(
      { event: 'connectFailed', backend: error.backend, kind: error.kind, attempt: session.attempts, retrying, client: session.clientAddress },
      error.message,
    );
  }

  onEnd(session: ProxySession): void {
    this.live.delete(session as Session);
    this.metrics.sessionsActive.dec(this.labels);
    const outcome = session.outcome!;
    switch (outcomeClass(outcome)) {
      case 'refused':
        this.refused++;
        this.metrics.listenerRefused.inc({ listener: this.spec.id, reason: outcome });
        break;
      case 'error':
        this.errors++;
        this.metrics.listenerErrors.inc({ listener: this.spec.id, kind: outcome });
        break;
      case 'ok':
        break;
    }
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({
        event: 'sessionEnd',
        outcome,
        client: session.clientAddress,
        backend: session.backend?.key,
        attempts: session.attempts,
        bytesFromClient: session.bytesFromClient,
        bytesFromUpstream: session.bytesFromUpstream,
        durationMs: Math.round(this.clock.now() - session.startedAt),
      });
    }
    for (const listener of this.endListeners) listener(session);
    if (this.live.size === 0) this.wakeIdleWaiters();
  }

  private accept(socket: Socket): void {
    this.accepted++;
    this.metrics.listenerAccepted.inc(this.labels);
    const session = new Session(this, socket);
    this.live.add(session);
    this.metrics.sessionsActive.inc(this.labels);
    session.start();
  }

  private onServerError(err: NodeJS.ErrnoException): void {
    if (err.syscall === 'accept') {
      // EMFILE, ENFILE...: the server keeps listening; that one client is dropped by libuv.
      this.errors++;
      this.metrics.listenerErrors.inc({ listener: this.spec.id, kind: 'accept' });
      this.log.warn({ event: 'acceptFailed', code: err.code }, err.message);
      return;
    }
    const starting = this.starting;
    this.log.warn({ event: 'bindFailed', address: this.spec.address, port: this.spec.port, code: err.code }, err.message);
    // Without a pending start() the bind was abandoned by close() and nobody waits for the answer.
    if (starting === undefined) return;
    // A failed bind leaves the listener startable again: the VIP may appear on the node later.
    this.server.removeListener('listening', starting.onListening);
    this.starting = undefined;
    this.state = 'idle';
    starting.reject(err);
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.stopAccepting();
    if (this.live.size > 0) {
      let graceTimer: TimerHandle | undefined;
      const graceOver = new Promise<void>((resolve) => {
        graceTimer = this.clock.setTimeout(resolve, graceMs);
      });
      await Promise.race([this.whenIdle(), graceOver]);
      graceTimer!.cancel();
      if (this.live.size > 0) {
        this.log.info({ event: 'graceExpired', graceMs, sessions: this.live.size }, 'resetting sessions still open');
        for (const session of this.live) session.destroy();
        await this.whenIdle();
      }
    }
    await this.serverClosed;
  }

  private stopAccepting(): void {
    if (this.state === 'stopped') return;
    const wasStarting = this.starting;
    if (wasStarting !== undefined) this.server.removeListener('listening', wasStarting.onListening);
    this.starting = undefined;
    this.state = 'stopped';
    this.serverClosed = new Promise<void>((resolve) => {
      // The callback also comes (with ERR_SERVER_NOT_RUNNING) when the server never listened.
      this.server.close(() => resolve());
    });
    wasStarting?.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} closed while starting`));
    this.setBound(false);
    if (this.live.size === 0) this.stopFlushing();
  }

  private whenIdle(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdleWaiters(): void {
    if (this.state === 'stopped') this.stopFlushing();
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private scheduleFlush(): void {
    this.flushTimer = this.clock.setTimeout(() => {
      this.load.flushMetrics();
      this.scheduleFlush();
    }, BYTES_FLUSH_INTERVAL_MS);
  }

  private stopFlushing(): void {
    this.flushTimer?.cancel();
    this.flushTimer = undefined;
    this.load.flushMetrics();
  }

  private setBound(bound: boolean): void {
    if (this.isBound === bound) return;
    this.isBound = bound;
    this.metrics.listenerBound.set(this.labels, bound ? 1 : 0);
    this.log.info({ event: bound ? 'listenerBound' : 'listenerUnbound', address: this.spec.address, port: this.address()?.port ?? this.spec.port });
    for (const listener of this.boundListeners) listener(bound);
  }
}

function outcomeClass(outcome: SessionOutcome): 'ok' | 'refused' | 'error' {
  switch (outcome) {
    case 'completed':
    case 'destroyed':
      return 'ok';
    case 'noHealthyBackend':
    case 'connectFailed':
      return 'refused';
    case 'clientReset':
    case 'clientError':
    case 'upstreamReset':
    case 'upstreamError':
      return 'error';
  }
}

/** A child carrying only the bindings the parent lacks: pino writes a re-bound key twice. */
function childLogger(parent: Logger, bindings: Record<string, string>): Logger {
  const existing = parent.bindings();
  const missing = Object.fromEntries(Object.entries(bindings).filter(([key]) => !(key in existing)));
  return Object.keys(missing).length === 0 ? parent : parent.child(missing);
}
