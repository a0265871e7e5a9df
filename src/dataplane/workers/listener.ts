import type { Clock, TimerHandle } from '../../lib/clock';
import { VipdError } from '../../lib/errors';
import { ListenerSet } from '../../lib/listener-set';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import { StateMachine } from '../../lib/transition';
import type { DataPlaneListener, ListenerSpec, ListenerStats, PoolLoad } from '../data-plane';
import type { ToWorker } from './protocol';
import type { WorkerSlot } from './supervisor';

/** close(graceMs) stops waiting for a worker that has not confirmed graceMs + this later. */
const CLOSE_SLACK_MS = 2000;

/** What a WorkerListener asks of the worker pool. */
export interface WorkerListenerHost {
  /** Starts the workers (idempotent); a listener's start() waits for it. */
  start(): Promise<void>;
  /** Sends `start` for the listener to every live worker, telling the listener which slots were asked. */
  askToStart(listener: WorkerListener): void;
  /** Sends `message` to every live worker; the slots reached. */
  broadcast(message: ToWorker): WorkerSlot[];
  cancelBindRetries(listenerId: string): void;
  /** The live processes' latest counters of the listener. */
  liveListenerStats(listenerId: string): ListenerStats[];
  /** Sends the listener's new spec to every worker (each its share). */
  reconfigureListener(listener: WorkerListener, spec: ListenerSpec): void;
}

/** A DataPlaneListener whose sockets live in the workers. */
export interface WorkerProxyListener extends DataPlaneListener {
  /** The port the workers accept on, once one has bound (the real port when spec.port is 0). */
  address(): { readonly port: number } | undefined;
  /** Live, answering workers accepting on this listener now. */
  workersBound(): number;
}

type SlotListenerState = 'starting' | 'bound' | 'failed';
type ListenerState = 'idle' | 'starting' | 'listening' | 'stopped';
const LISTENER_NOT_STOPPED: readonly ListenerState[] = ['idle', 'starting', 'listening'];

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Primary-side face of one listener. bound() is true while at least one live, answering worker accepts
 * on it: the announce gate reads it, so it must never claim a socket that nobody serves. A worker the
 * hang watchdog declares hung stops counting at once (slotGone), and its replacement counts again once
 * it has bound. With some workers hung and others accepting, the listener stays bound: the workers
 * share one accept queue, so the kernel hands every new connection to a worker that calls accept().
 */
export class WorkerListener implements WorkerProxyListener {
  private readonly machine: StateMachine<ListenerState>;
  private isBound = false;
  private port: number | undefined;
  private readonly perSlot = new Map<WorkerSlot, SlotListenerState>();
  private readonly boundListeners: ListenerSet<boolean>;
  private pendingStart: { readonly deferred: Deferred<void>; readonly asked: Set<WorkerSlot>; lastError?: Error } | undefined;
  private closing: Promise<void> | undefined;
  private destroyed = false;
  private closeWait: { readonly waiting: Set<WorkerSlot>; readonly done: () => void } | undefined;
  private retiredStats = { accepted: 0, refused: 0, errors: 0 };
  private readonly labels: { readonly listener: string };

  constructor(
    private current: ListenerSpec,
    private readonly host: WorkerListenerHost,
    readonly pool: PoolLoad,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    this.labels = { listener: current.id };
    this.metrics.listenerBound.set(this.labels, 0);
    const spec = current;
    const listenerLog = log.child({ listener: spec.id });
    this.machine = new StateMachine<ListenerState>('idle', { machine: 'listener', logger: listenerLog });
    this.boundListeners = new ListenerSet((err) =>
      listenerLog.error({ event: 'listenerError', err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'a bound listener threw'),
    );
  }

  /** Replaced only by a reload (reconfigure). */
  get spec(): ListenerSpec {
    return this.current;
  }

  reconfigure(spec: ListenerSpec): void {
    if (spec.id !== this.current.id || spec.pool.name !== this.current.pool.name) {
      throw new VipdError('VIPD_ERR_CONFIG', `listener ${this.current.id}: a reload may not change its id or pool (got ${spec.id} on pool ${spec.pool.name})`);
    }
    this.host.reconfigureListener(this, spec);
  }

  start(): Promise<void> {
    if (this.machine.is('stopped')) return Promise.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} is closed`));
    if (this.machine.is('listening')) return Promise.resolve();
    if (this.pendingStart !== undefined) return this.pendingStart.deferred.promise;
    this.machine.transition(['idle'], 'starting', 'start()');
    const pending = { deferred: deferred<void>(), asked: new Set<WorkerSlot>() };
    this.pendingStart = pending;
    this.host.start().then(
      () => {
        if (this.pendingStart !== pending) return;
        this.host.askToStart(this);
        if (pending.asked.size === 0) this.failStart(new VipdError('VIPD_ERR_NET', `no proxy worker is running to accept on ${this.spec.id}`));
      },
      (err: Error) => {
        if (this.pendingStart === pending) this.failStart(err);
      },
    );
    return pending.deferred.promise;
  }

  bound(): boolean {
    return this.isBound;
  }

  onBoundChange(listener: (bound: boolean) => void): () => void {
    return this.boundListeners.add(listener);
  }

  stats(): ListenerStats {
    let { accepted, refused, errors } = this.retiredStats;
    let active = 0;
    for (const s of this.host.liveListenerStats(this.spec.id)) {
      accepted += s.accepted;
      active += s.active;
      refused += s.refused;
      errors += s.errors;
    }
    return { accepted, active, refused, errors };
  }

  address(): { readonly port: number } | undefined {
    return this.port === undefined ? undefined : { port: this.port };
  }

  workersBound(): number {
    let n = 0;
    for (const state of this.perSlot.values()) if (state === 'bound') n++;
    return n;
  }

  close(graceMs: number): Promise<void> {
    this.closing ??= this.shutdown(graceMs, false);
    return this.closing;
  }

  destroy(): Promise<void> {
    if (this.closing === undefined) this.closing = this.shutdown(0, true);
    else if (!this.destroyed) this.host.broadcast({ type: 'vipd:destroy', listener: this.spec.id });
    this.destroyed = true;
    return this.closing;
  }

  // For WorkerPool.

  setSpec(spec: ListenerSpec): void {
    this.current = spec;
  }

  stopped(): boolean {
    return this.machine.is('stopped');
  }

  /** The workers should be accepting: a (re)started worker joins, a failed join is retried. */
  wanted(): boolean {
    return this.machine.is('starting', 'listening');
  }

  slotStarting(slot: WorkerSlot): void {
    if (this.perSlot.get(slot) === 'bound') return;
    this.perSlot.set(slot, 'starting');
    this.pendingStart?.asked.add(slot);
  }

  slotBound(slot: WorkerSlot, port: number | undefined): void {
    // A bound that crosses close() on the channel: the worker is closing it already.
    if (this.machine.is('stopped')) return;
    this.perSlot.set(slot, 'bound');
    if (port !== undefined) this.port = port;
    if (this.machine.transition(['idle', 'starting'], 'listening', `worker ${slot.index} bound`)) {
      const pending = this.pendingStart;
      this.pendingStart = undefined;
      pending?.deferred.resolve();
    }
    this.updateBound();
  }

  slotUnbound(slot: WorkerSlot): void {
    this.perSlot.delete(slot);
    this.updateBound();
  }

  slotFailed(slot: WorkerSlot, err: Error): void {
    if (this.machine.is('stopped')) return;
    this.perSlot.set(slot, 'failed');
    this.log.warn({ event: 'bindFailed', listener: this.spec.id, worker: slot.index, code: (err as NodeJS.ErrnoException).code }, `worker ${slot.index} cannot accept on ${this.spec.id}: ${err.message}`);
    const pending = this.pendingStart;
    if (pending === undefined) return;
    pending.lastError = err;
    if (pending.asked.delete(slot) && pending.asked.size === 0) this.failStart(err);
  }

  slotGone(slot: WorkerSlot): void {
    this.perSlot.delete(slot);
    this.slotClosed(slot);
    const pending = this.pendingStart;
    if (pending !== undefined && pending.asked.delete(slot) && pending.asked.size === 0) {
      this.failStart(pending.lastError ?? new VipdError('VIPD_ERR_NET', `every proxy worker asked to accept on ${this.spec.id} exited`));
    }
    this.updateBound();
  }

  slotClosed(slot: WorkerSlot): void {
    const wait = this.closeWait;
    if (wait !== undefined && wait.waiting.delete(slot) && wait.waiting.size === 0) wait.done();
  }

  retire(stats: ListenerStats): void {
    this.retiredStats = {
      accepted: this.retiredStats.accepted + stats.accepted,
      refused: this.retiredStats.refused + stats.refused,
      errors: this.retiredStats.errors + stats.errors,
    };
  }

  private failStart(err: Error): void {
    const pending = this.pendingStart;
    this.pendingStart = undefined;
    this.machine.transition(['starting'], 'idle', `start failed: ${err.message}`);
    pending?.deferred.reject(err);
  }

  private async shutdown(graceMs: number, destroy: boolean): Promise<void> {
    const pending = this.pendingStart;
    this.pendingStart = undefined;
    this.machine.transition(LISTENER_NOT_STOPPED, 'stopped', destroy ? 'destroyed' : 'closed');
    pending?.deferred.reject(new VipdError('VIPD_ERR_CLOSED', `listener ${this.spec.id} closed while starting`));
    this.host.cancelBindRetries(this.spec.id);
    const asked = this.host.broadcast(destroy ? { type: 'vipd:destroy', listener: this.spec.id } : { type: 'vipd:close', listener: this.spec.id, graceMs });
    // Unbound from now on: workers stop accepting as soon as the message arrives, and the gate must
    // never lag behind that.
    this.perSlot.clear();
    this.updateBound();
    if (asked.length === 0) return;
    let timer: TimerHandle | undefined;
    await new Promise<void>((resolve) => {
      this.closeWait = { waiting: new Set(asked), done: resolve };
      timer = this.clock.setTimeout(() => {
        this.log.warn({ event: 'closeTimeout', listener: this.spec.id, workers: [...(this.closeWait?.waiting ?? [])].map((s) => s.index) }, `workers did not confirm closing ${this.spec.id}`);
        resolve();
      }, graceMs + CLOSE_SLACK_MS);
    });
    timer?.cancel();
    this.closeWait = undefined;
  }

  private updateBound(): void {
    const bound = !this.machine.is('stopped') && this.workersBound() > 0;
    if (bound === this.isBound) return;
    this.isBound = bound;
    this.metrics.listenerBound.set(this.labels, bound ? 1 : 0);
    this.log.info({ event: bound ? 'listenerBound' : 'listenerUnbound', listener: this.spec.id, address: this.spec.address, port: this.port ?? this.spec.port });
    this.boundListeners.emit(bound);
  }
}
