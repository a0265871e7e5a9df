import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { PoolSnapshot } from '../health/health';
import { systemClock, type Clock, type TimerHandle } from '../lib/clock';
import { VipdError } from '../lib/errors';
import { ListenerSet } from '../lib/listener-set';
import type { Logger } from '../lib/logger';
import { StateMachine, type StateMachineOptions } from '../lib/transition';
import { onCollect, type Metrics } from '../lib/metrics';
import type { Endpoint } from '../net/endpoint';
import type { BackendDownHandler, BackendEntry, BackendLoadTracker } from './backend-load';
import { createConnector, type ConnectError, type Connector } from './connector';
import type { ConnectionLimits, LimitRefusal } from './limits';
import { LiveList } from './live-list';
import { createPicker } from './picker';
import { DEFAULT_MAX_READ_BUFFER_BYTES } from './read-buffer';
import type { BackendLoad, ListenerSpec, ListenerStats, PickRequest, Picker, ProxyListener } from './proxy';
import { Session, type ProxySession, type SessionContext, type SessionOutcome } from './session';

export interface ListenerOptions {
  readonly spec: ListenerSpec;
  /** The pool's shared state (spec.pool): its health snapshot, load, queue, ejections and drains. */
  readonly load: BackendLoadTracker;
  /** Process-wide caps shared by every listener; none when omitted. */
  readonly limits?: ConnectionLimits;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock?: Clock;
  /** Uniform in [0, 1): max-age jitter and the picker's randomness. Tests pass a seeded one. */
  readonly random?: () => number;
  /** Dials backends; defaults to createConnector() with the pool's keepalive and the high-water mark below. */
  readonly connect?: Connector;
  /** Stream high-water mark of both legs (default: Node's, 16 KiB on Node 20). */
  readonly highWaterMark?: number;
  /** The largest buffer one upstream read may get (default DEFAULT_MAX_READ_BUFFER_BYTES). */
  readonly maxReadBufferBytes?: number;
}

/** A ProxyListener with the extras that tests, status and the composition root use. */
export interface TcpProxyListener extends ProxyListener {
  /** The bound address, once started (the real port when spec.port is 0). */
  address(): AddressInfo | undefined;
  /** Sessions open now, in accept order. */
  sessions(): IterableIterator<ProxySession>;
  /** Called once per session, after it has closed (the access log hook). Returns an unsubscribe. */
  onSessionEnd(listener: (session: ProxySession) => void): () => void;
  /** Reload: new sessions use `spec` (same id, same pool; see TcpListener.reconfigure). */
  reconfigure(spec: ListenerSpec): void;
  /** Cuts every session open now (drain.closeAfter) and returns how many; the listener keeps accepting. */
  closeSessions(): number;
}

/**
 * Why a client was closed at accept, before any session existed: the cap it hit. These and the
 * session refusals are the `reason` label of vipd_proxy_listener_refused_total.
 */
export type AcceptRefusal = 'listenerLimit' | LimitRefusal;

/** Relayed bytes and the skew gauge reach the metrics this often; connection counts are always exact. */
const METRICS_FLUSH_INTERVAL_MS = 1_000;
/** Bounds of the housekeeping sweep period: fine enough for short test timeouts, never busier than this. */
const MIN_SWEEP_INTERVAL_MS = 25;
/** How many sweeps fit in the shortest idle or age limit: a limit fires at most ~2/SWEEPS_PER_LIMIT late. */
const SWEEPS_PER_LIMIT = 10;

/** idle: not bound (never started, or its bind failed: it may start again); stopped: for good. */
type ListenerState = 'idle' | 'starting' | 'listening' | 'stopped';
const NOT_STOPPED: readonly ListenerState[] = ['idle', 'starting', 'listening'];

export function createListener(options: ListenerOptions): TcpProxyListener {
  return new TcpListener(options);
}

class TcpListener implements TcpProxyListener, SessionContext, BackendDownHandler {
  /** Replaced only by reconfigure() (a reload). */
  spec: ListenerSpec;
  readonly load: BackendLoadTracker;
  readonly connect: Connector;
  readonly maxReadBufferBytes: number;
  readonly random: () => number;
  readonly sessionMachine: StateMachineOptions;

  private picker: Picker;
  private readonly randomOption: (() => number) | undefined;
  /** One PickRequest per listener, refilled for every pick: pickers must not keep it, and picks are synchronous. */
  private readonly request: MutablePickRequest;
  private pickFor: Session | undefined;
  private pickIgnoringFull = false;
  private readonly limits: ConnectionLimits | undefined;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly labels: { readonly listener: string };
  private readonly refusedLabels = new Map<string, { readonly listener: string; readonly reason: string }>();
  private readonly server: Server;
  private readonly live = new LiveList<Session>();
  /** Clients refused for this process's own shortage since the last warning, and when that was (clock ms). */
  private shortageRefusals = 0;
  private shortageWarnedAt = -Infinity;
  private readonly boundListeners: ListenerSet<boolean>;
  private readonly endListeners: ListenerSet<ProxySession>;
  private readonly detachFromPool: () => void;
  private idleMs: number;
  private sweepIntervalMs: number;
  private readonly machine: StateMachine<ListenerState>;
  private isBound = false;
  private starting: { promise: Promise<void>; onListening: () => void; reject: (err: Error) => void } | undefined;
  private closing: Promise<void> | undefined;
  private destroying: Promise<void> | undefined;
  private serverClosed: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  private housekeepingTimer: TimerHandle | undefined;
  private lastFlush = 0;
  private accepted = 0;
  private refused = 0;
  private errors = 0;
  /** `accepted` and the live sessions as last folded into their metrics (see foldConnectionCounts). */
  private foldedAccepted = 0;
  private foldedActive = 0;
  private collecting = true;
  private readonly stopCollecting: Array<() => void>;

  constructor(options: ListenerOptions) {
    const spec = options.spec;
    const pool = spec.pool;
    const highWaterMark = options.highWaterMark;
    this.spec = spec;
    this.load = options.load;
    this.limits = options.limits;
    this.random = options.random ?? Math.random;
    this.randomOption = options.random;
    this.maxReadBufferBytes = options.maxReadBufferBytes ?? DEFAULT_MAX_READ_BUFFER_BYTES;
    this.picker = createPicker(pool, options.random === undefined ? undefined : { random: options.random });
    this.connect =
      options.connect ??
      createConnector({ keepAliveInitialDelayMs: pool.tcpKeepaliveMs, ...(highWaterMark === undefined ? {} : { highWaterMark }) });
    this.clock = options.clock ?? systemClock;
    this.metrics = options.metrics;
    this.labels = { listener: spec.id };
    this.log = childLogger(options.logger, { component: 'proxy', vip: spec.vip, listener: spec.id });
    this.machine = new StateMachine<ListenerState>('idle', { machine: 'listener', logger: this.log });
    // A session's edges are logged only at debug, and then only built: a line per connection otherwise costs on the hot path.
    this.sessionMachine = { machine: 'session', level: 'debug', ...(this.log.isLevelEnabled('debug') ? { logger: this.log } : {}) };
    const reportListenerError = (err: unknown): void =>
      this.log.error({ event: 'listenerError', err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'a listener of the proxy listener threw');
    this.boundListeners = new ListenerSet(reportListenerError);
    this.endListeners = new ListenerSet(reportListenerError);
    this.idleMs = pool.timeouts.idleMs;
    this.sweepIntervalMs = sweepInterval(pool.timeouts.idleMs, pool.timeouts.maxConnectionAgeMs);
    this.request = {
      snapshot: this.load.snapshot(),
      load: this.load,
      clientAddress: '',
      now: 0,
      // One closure per listener; it reads the session being picked for from the listener.
      skip: (backendKey) => this.skip(backendKey),
    };
    this.server = createServer(
      {
        allowHalfOpen: true,
        // Nothing is read from a client before vipd is ready for it: a failed dial can then be retried
        // elsewhere, and an unserved client never has its bytes taken in.
        pauseOnConnect: true,
        noDelay: true,
        keepAlive: true,
        keepAliveInitialDelay: pool.tcpKeepaliveMs,
        ...(highWaterMark === undefined ? {} : { highWaterMark }),
      },
      (socket) => this.accept(socket),
    );
    this.server.on('error', (err) => this.onServerError(err));
    this.detachFromPool = this.load.attach(this);
    // Materialise the series without resetting them: during a reload a listener with the same id
    // may still be draining.
    this.metrics.listenerBound.inc(this.labels, 0);
    this.metrics.sessionsActive.inc(this.labels, 0);
    const fold = (): void => this.foldConnectionCounts();
    this.stopCollecting = [onCollect(this.metrics.listenerAccepted, fold), onCollect(this.metrics.sessionsActive, fold)];
  }

  start(): Promise<void> {
    if (this.machine.is('stopped')) {
      return Promise.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} is closed`));
    }
    if (this.machine.is('listening')) return Promise.resolve();
    if (this.starting !== undefined) return this.starting.promise;
    this.machine.transition(['idle'], 'starting', 'start()');
    let resolveStart!: () => void;
    let rejectStart!: (err: Error) => void;
    const promise = new Promise<void>((resolve, reject) => {
      resolveStart = resolve;
      rejectStart = reject;
    });
    const onListening = (): void => {
      this.starting = undefined;
      this.machine.transition(['starting'], 'listening', 'bound');
      this.setBound(true);
      this.lastFlush = this.clock.now();
      this.scheduleHousekeeping();
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
    return this.boundListeners.add(listener);
  }

  /**
   * Reload: new sessions use `spec` (its pool's balance, timeouts, attempts; the listener's cap); live
   * sessions read the new timeouts from their next check on. The pool must be the same tracker's pool:
   * a listener never moves to another pool in place. The housekeeping period is kept until its next start.
   */
  reconfigure(spec: ListenerSpec): void {
    if (spec.id !== this.spec.id || spec.pool.name !== this.spec.pool.name) {
      throw new VipdError('VIPD_ERR_CONFIG', `listener ${this.spec.id} cannot become ${spec.id} on pool ${spec.pool.name} in place`);
    }
    const pool = spec.pool;
    this.spec = spec;
    this.picker = createPicker(pool, this.randomOption === undefined ? undefined : { random: this.randomOption });
    this.idleMs = pool.timeouts.idleMs;
    this.sweepIntervalMs = sweepInterval(pool.timeouts.idleMs, pool.timeouts.maxConnectionAgeMs);
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

  closeSessions(): number {
    const sessions = [...this.live.values()];
    for (const session of sessions) session.destroy();
    return sessions.length;
  }

  onSessionEnd(listener: (session: ProxySession) => void): () => void {
    return this.endListeners.add(listener);
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= this.destroying ?? this.shutdown(graceMs);
    return this.closing;
  }

  destroy(): Promise<void> {
    this.destroying ??= this.destroyNow();
    return this.destroying;
  }

  // SessionContext

  now(): number {
    return this.clock.now();
  }

  pick(session: Session, ignoreFull: boolean): Endpoint | undefined {
    const request = this.request;
    request.snapshot = this.load.snapshot();
    request.clientAddress = session.clientIp;
    request.now = this.clock.wallNow();
    this.pickFor = session;
    this.pickIgnoringFull = ignoreFull;
    try {
      return this.picker.pick(request);
    } finally {
      this.pickFor = undefined;
    }
  }

  onConnectFailed(session: ProxySession, error: ConnectError, retrying: boolean): void {
    if (retrying) this.metrics.connectRetries.inc(this.labels);
    if (error.kind === 'local') this.warnResourceShortage();
    this.log.debug(
      { event: 'connectFailed', backend: error.backend, kind: error.kind, attempt: session.attempts, retrying, client: session.clientAddress },
      error.message,
    );
  }

  onEnd(session: ProxySession): void {
    const own = session as Session;
    this.live.delete(own);
    this.limits?.release(own.clientIp);
    if (!this.collecting) this.foldConnectionCounts();
    const outcome = session.outcome!;
    switch (outcomeClass(outcome)) {
      case 'refused':
        this.refused++;
        this.metrics.listenerRefused.inc(this.refusedLabelsFor(outcome));
        break;
      case 'error':
        this.errors++;
        this.metrics.listenerErrors.inc({ listener: this.spec.id, kind: outcome });
        break;
      case 'policy':
        this.metrics.sessionsClosed.inc({ listener: this.spec.id, reason: outcome });
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
    // Per session: the emit (which copies its set) only when someone listens.
    if (this.endListeners.size > 0) this.endListeners.emit(session);
    if (this.live.size === 0) this.wakeIdleWaiters();
  }

  // BackendDownHandler

  closeSessionsOn(entry: BackendEntry): void {
    for (const session of this.live) session.closeIfRelayingTo(entry);
  }

  private skip(backendKey: string): boolean {
    const entry = this.load.entry(backendKey);
    if (entry !== undefined) {
      if (!entry.inService) return true;
      if (!this.pickIgnoringFull && entry.active >= entry.maxConnections) return true;
    }
    return this.pickFor!.hasTried(backendKey);
  }

  private accept(socket: Socket): void {
    this.accepted++;
    if (!this.collecting) this.foldConnectionCounts();
    const source = socket.remoteAddress;
    if (source === undefined) {
      // The client was gone before its connection reached JavaScript; libuv has nothing left to close.
      socket.on('error', ignoreError);
      socket.destroy();
      this.errors++;
      this.metrics.listenerErrors.inc({ listener: this.spec.id, kind: 'accept' });
      return;
    }
    const max = this.spec.maxConnections;
    if (max !== undefined && this.live.size >= max) {
      this.refuseAtAccept(socket, 'listenerLimit');
      return;
    }
    const overLimit = this.limits?.admit(source);
    if (overLimit !== undefined) {
      this.refuseAtAccept(socket, overLimit);
      return;
    }
    const session = new Session(this, socket, source);
    this.live.add(session);
    if (!this.collecting) this.foldConnectionCounts();
    session.start();
  }

  /** Over a cap: reset at once, before any session, upstream or timer exists. Existing sessions are untouched. */
  private refuseAtAccept(socket: Socket, reason: AcceptRefusal): void {
    socket.on('error', ignoreError);
    socket.resetAndDestroy();
    this.refused++;
    this.metrics.listenerRefused.inc(this.refusedLabelsFor(reason));
    if (reason === 'fdLimit') this.warnResourceShortage();
  }

  /**
   * A client refused for this process's own shortage (fdLimit at accept, a 'local' dial failure): at
   * most one line per SHORTAGE_WARN_INTERVAL_MS, since at the limit every new client is refused.
   */
  private warnResourceShortage(): void {
    this.shortageRefusals++;
    const now = this.clock.now();
    if (now - this.shortageWarnedAt < SHORTAGE_WARN_INTERVAL_MS) return;
    this.log.warn(
      { event: 'resourceShortage', refused: this.shortageRefusals, sessions: this.live.size },
      `refused ${this.shortageRefusals} client(s): this process has no file descriptors or socket memory to spare (see vipd_proxy_fd_session_capacity; raise LimitNOFILE)`,
    );
    this.shortageWarnedAt = now;
    this.shortageRefusals = 0;
  }

  private refusedLabelsFor(reason: string): { readonly listener: string; readonly reason: string } {
    let labels = this.refusedLabels.get(reason);
    if (labels === undefined) {
      labels = { listener: this.spec.id, reason };
      this.refusedLabels.set(reason, labels);
    }
    return labels;
  }

  /**
   * Accepted and active counts reach their metrics when these are read, not per connection: a labelled
   * prom-client update hashes its label set on every call. Deltas, so that a listener draining after a
   * reload and its successor with the same id share the series. Once retired, it folds at every event.
   */
  private foldConnectionCounts(): void {
    const accepted = this.accepted;
    if (accepted !== this.foldedAccepted) {
      this.metrics.listenerAccepted.inc(this.labels, accepted - this.foldedAccepted);
      this.foldedAccepted = accepted;
    }
    const active = this.live.size;
    if (active !== this.foldedActive) {
      if (active > this.foldedActive) this.metrics.sessionsActive.inc(this.labels, active - this.foldedActive);
      else this.metrics.sessionsActive.dec(this.labels, this.foldedActive - active);
      this.foldedActive = active;
    }
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
    this.machine.transition(['starting'], 'idle', `bind failed: ${err.code ?? err.message}`);
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

  /** Resets every session now (a close() under way then ends as soon as they are gone). */
  private async destroyNow(): Promise<void> {
    this.stopAccepting();
    for (const session of this.live) session.destroy();
    await this.whenIdle();
    await this.serverClosed;
  }

  private stopAccepting(): void {
    const wasStarting = this.starting;
    if (!this.machine.transition(NOT_STOPPED, 'stopped', 'closed')) return;
    if (wasStarting !== undefined) this.server.removeListener('listening', wasStarting.onListening);
    this.starting = undefined;
    this.serverClosed = new Promise<void>((resolve) => {
      // The callback also comes (with ERR_SERVER_NOT_RUNNING) when the server never listened.
      this.server.close(() => resolve());
    });
    wasStarting?.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} closed while starting`));
    this.setBound(false);
    if (this.live.size === 0) this.retire();
  }

  private whenIdle(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdleWaiters(): void {
    if (this.machine.is('stopped')) this.retire();
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * One timer per listener for everything periodic: the idle and age sweep over the live sessions
   * (a few comparisons each, nothing per chunk) and the metrics flush.
   */
  private scheduleHousekeeping(): void {
    this.housekeepingTimer = this.clock.setTimeout(() => {
      const now = this.clock.now();
      if (this.sweepIntervalMs < Infinity) {
        const idleMs = this.idleMs;
        for (const session of this.live) session.sweep(now, idleMs);
      }
      if (now - this.lastFlush >= METRICS_FLUSH_INTERVAL_MS) {
        this.lastFlush = now;
        this.load.flushMetrics();
      }
      this.scheduleHousekeeping();
    }, Math.min(this.sweepIntervalMs, METRICS_FLUSH_INTERVAL_MS));
  }

  /** Stopped with no session left: nothing periodic to do, nothing on the pool to hear about. */
  private retire(): void {
    this.detachFromPool();
    if (this.collecting) {
      this.collecting = false;
      this.foldConnectionCounts();
      for (const stop of this.stopCollecting) stop();
    }
    if (this.housekeepingTimer === undefined) return;
    this.housekeepingTimer.cancel();
    this.housekeepingTimer = undefined;
    this.load.flushMetrics();
  }

  private setBound(bound: boolean): void {
    if (this.isBound === bound) return;
    this.isBound = bound;
    this.metrics.listenerBound.set(this.labels, bound ? 1 : 0);
    this.log.info({ event: bound ? 'listenerBound' : 'listenerUnbound', address: this.spec.address, port: this.address()?.port ?? this.spec.port });
    this.boundListeners.emit(bound);
  }
}

interface MutablePickRequest extends PickRequest {
  snapshot: PoolSnapshot;
  load: BackendLoad;
  clientAddress: string;
  now: number;
}

const SHORTAGE_WARN_INTERVAL_MS = 10_000;

/** Infinity when neither idle nor age limits are on: the sweep then never runs. */
function sweepInterval(idleMs: number, maxAgeMs: number): number {
  const shortest = Math.min(idleMs > 0 ? idleMs : Infinity, maxAgeMs > 0 ? maxAgeMs : Infinity);
  if (shortest === Infinity) return Infinity;
  return Math.min(METRICS_FLUSH_INTERVAL_MS, Math.max(MIN_SWEEP_INTERVAL_MS, Math.floor(shortest / SWEEPS_PER_LIMIT)));
}

function outcomeClass(outcome: SessionOutcome): 'ok' | 'refused' | 'error' | 'policy' {
  switch (outcome) {
    case 'completed':
    case 'destroyed':
      return 'ok';
    case 'noHealthyBackend':
    case 'connectFailed':
    case 'localResources':
    case 'backendsFull':
    case 'queueFull':
    case 'queueTimeout':
      return 'refused';
    case 'firstByteTimeout':
    case 'idleTimeout':
    case 'maxAge':
    case 'backendDown':
      return 'policy';
    case 'clientReset':
    case 'clientError':
    case 'upstreamReset':
    case 'upstreamError':
      return 'error';
  }
}

function ignoreError(): void {}

/** A child carrying only the bindings the parent lacks: pino writes a re-bound key twice. */
function childLogger(parent: Logger, bindings: Record<string, string>): Logger {
  const existing = parent.bindings();
  const missing = Object.fromEntries(Object.entries(bindings).filter(([key]) => !(key in existing)));
  return Object.keys(missing).length === 0 ? parent : parent.child(missing);
}
