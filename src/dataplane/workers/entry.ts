import type { PoolSnapshot } from '../../health/health';
import { errorMessage } from '../../lib/errors';
import { ListenerSet } from '../../lib/listener-set';
import { createLogger, type Logger } from '../../lib/logger';
import { createMetrics, type Metrics } from '../../lib/metrics';
import { BackendLoadTracker, type SnapshotSource } from '../../proxy/backend-load';
import { createProcessConnectionLimits, type ConnectionLimits } from '../../proxy/limits';
import { createListener, type TcpProxyListener } from '../../proxy/listener';
import type { PoolSpec } from '../../proxy/proxy';
import { isProtocolMessage, type FromWorker, type ListenerReport, type PoolReport, type ToWorker, type WorkerListenerInit, type WorkerPoolInit } from './protocol';

/**
 * A proxy worker process, forked by WorkerPool through node:cluster. It runs the very listeners a
 * single-process vipd runs, reads pool snapshots the primary pushes, and reports counters back. It
 * decides nothing: health, the announce decision and BGP live in the primary only, so two workers can
 * never disagree about what is announced.
 *
 * Its lifetime belongs to the primary. It exits when the IPC channel closes (the primary is gone,
 * however it died), and it ignores SIGTERM and SIGINT: those reach the whole process group (Ctrl-C in a
 * terminal, systemd's default KillMode=control-group), and a worker that obeyed them would cut its
 * connections while the primary is still withdrawing the route and waiting out the grace period.
 * SIGHUP (a closed terminal), SIGUSR1 (Node's inspector) and SIGUSR2 are ignored for the same reason:
 * the primary logs and ignores them, and a worker must not die of one sent to the group.
 */

type InitMessage = Extract<ToWorker, { type: 'vipd:init' }>;

/** A pool's health as the primary pushes it: this process's stand-in for PoolHealth. */
class PushedHealth implements SnapshotSource {
  private readonly listeners: ListenerSet<PoolSnapshot>;
  constructor(
    private current: PoolSnapshot,
    log: Logger,
  ) {
    this.listeners = new ListenerSet((err) =>
      log.error({ event: 'listenerError', pool: current.pool, err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'a snapshot listener threw'),
    );
  }

  snapshot(): PoolSnapshot {
    return this.current;
  }

  set(snapshot: PoolSnapshot): void {
    const changed = snapshot.version !== this.current.version;
    this.current = snapshot;
    // The contract promises a call per state change; a newer lastResult alone is not one.
    if (changed) this.listeners.emit(snapshot);
  }

  onChange(listener: (snapshot: PoolSnapshot) => void): () => void {
    return this.listeners.add(listener);
  }
}

interface WorkerPoolState {
  readonly health: PushedHealth;
  readonly load: BackendLoadTracker;
}

/** Exported for the unit tests, which drive it with protocol messages in the test process. */
export class ProxyWorker {
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly pools = new Map<string, WorkerPoolState>();
  private readonly listeners = new Map<string, TcpProxyListener>();
  private readonly limits: ConnectionLimits;
  private readonly reportTimer: NodeJS.Timeout;

  constructor(
    init: InitMessage,
    private readonly send: (message: FromWorker) => void,
  ) {
    this.log = createLogger(init.log.level).child({ ...init.log.bindings, component: 'proxy', worker: init.worker });
    // No default (process) metrics: the primary's registry has them, and summing two processes' heap
    // sizes under one name would be meaningless.
    this.metrics = createMetrics();
    this.limits = createProcessConnectionLimits(init.limits, this.log, this.metrics);
    for (const pool of init.pools) this.addPool(pool);
    for (const entry of init.listeners) this.addListener(entry);
    this.reportTimer = setInterval(() => this.report(), init.reportIntervalMs);
    this.reportTimer.unref();
    this.send({ type: 'vipd:ready' });
    for (const entry of init.listeners) if (entry.start) this.start(entry.spec.id);
  }

  handle(message: ToWorker): void {
    switch (message.type) {
      case 'vipd:init':
        this.log.warn({ event: 'protocolError' }, 'second init ignored');
        return;
      case 'vipd:start':
        this.start(message.listener);
        return;
      case 'vipd:snapshot':
        this.pools.get(message.snapshot.pool)?.health.set(message.snapshot);
        return;
      case 'vipd:drainBackend':
        this.pools.get(message.pool)?.load.drainBackend(message.backend, message.drained);
        return;
      case 'vipd:close':
        void this.close(message.listener, message.graceMs, false);
        return;
      case 'vipd:destroy':
        void this.close(message.listener, 0, true);
        return;
      case 'vipd:metrics':
        this.metrics.registry.getMetricsAsJSON().then(
          (metrics) => this.send({ type: 'vipd:metrics', request: message.request, metrics }),
          (err) => {
            this.log.warn({ event: 'metricsFailed', err: errorMessage(err) }, 'cannot collect metrics');
            this.send({ type: 'vipd:metrics', request: message.request, metrics: [] });
          },
        );
        return;
      case 'vipd:addPool':
        if (this.pools.has(message.pool.spec.name)) this.log.warn({ event: 'protocolError', pool: message.pool.spec.name }, 'pool exists already; addPool ignored');
        else this.addPool(message.pool);
        return;
      case 'vipd:updatePool':
        this.updatePool(message.spec);
        return;
      case 'vipd:removePool':
        this.removePool(message.pool);
        return;
      case 'vipd:addListener':
        this.addListenerByReload(message.listener);
        return;
      case 'vipd:updateListener': {
        const listener = this.listeners.get(message.spec.id);
        const pool = this.pools.get(message.spec.pool.name);
        if (listener === undefined || pool === undefined) {
          this.log.warn({ event: 'protocolError', listener: message.spec.id }, 'updateListener for an unknown listener or pool ignored');
          return;
        }
        listener.reconfigure({ ...message.spec, pool: pool.load.spec });
        return;
      }
      case 'vipd:exit':
        this.exit();
        return;
      case 'vipd:ping':
        this.send({ type: 'vipd:pong', seq: message.seq });
        return;
    }
  }

  exit(): void {
    void this.stop();
    process.exit(0);
  }

  /** Stops reporting and destroys every listener (exit() without the exit). */
  async stop(): Promise<void> {
    clearInterval(this.reportTimer);
    await Promise.all([...this.listeners.values()].map((listener) => listener.destroy()));
  }

  private addPool(pool: WorkerPoolInit): void {
    const health = new PushedHealth(pool.snapshot, this.log);
    const load = new BackendLoadTracker({ spec: pool.spec, health, metrics: this.metrics, logger: this.log.child({ pool: pool.spec.name }) });
    for (const key of pool.drained) load.drainBackend(key, true);
    this.pools.set(pool.spec.name, { health, load });
  }

  /** As the single-process reload does: tracker first (kept backends keep their sessions), then its listeners. */
  private updatePool(spec: PoolSpec): void {
    const pool = this.pools.get(spec.name);
    if (pool === undefined) {
      this.log.warn({ event: 'protocolError', pool: spec.name }, 'updatePool for an unknown pool ignored');
      return;
    }
    pool.load.reconfigure(spec);
    for (const listener of this.listeners.values()) {
      if (listener.spec.pool.name === spec.name) listener.reconfigure({ ...listener.spec, pool: pool.load.spec });
    }
  }

  private removePool(name: string): void {
    const pool = this.pools.get(name);
    if (pool === undefined) return;
    this.pools.delete(name);
    void pool.load.close();
  }

  private addListenerByReload(entry: WorkerListenerInit): void {
    const existing = this.listeners.get(entry.spec.id);
    // A listener removed by an earlier reload may still be draining under the same id: it keeps its own
    // reference and finishes; the new one takes the id.
    if (existing !== undefined && existing.bound()) {
      this.log.warn({ event: 'protocolError', listener: entry.spec.id }, 'listener exists already; addListener ignored');
      return;
    }
    try {
      this.addListener(entry);
    } catch (err) {
      this.send({ type: 'vipd:bindFailed', listener: entry.spec.id, message: errorMessage(err) });
      return;
    }
    if (entry.start) this.start(entry.spec.id);
  }

  private addListener(entry: WorkerListenerInit): void {
    const pool = this.pools.get(entry.spec.pool.name);
    if (pool === undefined) throw new Error(`listener ${entry.spec.id}: the primary sent no pool ${entry.spec.pool.name}`);
    // The tracker's spec is the one the pool's caps are enforced with; the listener must agree with it.
    const spec = { ...entry.spec, pool: pool.load.spec };
    const listener = createListener({ spec, load: pool.load, limits: this.limits, logger: this.log, metrics: this.metrics });
    listener.onBoundChange((bound) => {
      this.send({ type: 'vipd:bound', listener: spec.id, bound, ...portOf(listener) });
    });
    this.listeners.set(spec.id, listener);
  }

  private start(id: string): void {
    const listener = this.listeners.get(id);
    if (listener === undefined) {
      this.send({ type: 'vipd:bindFailed', listener: id, message: `worker has no listener ${id}` });
      return;
    }
    listener.start().then(
      // Also sent when the listener was bound already: the primary may have asked again after a
      // failure elsewhere, and it counts on an answer to every start.
      () => this.send({ type: 'vipd:bound', listener: id, bound: listener.bound(), ...portOf(listener) }),
      (err: NodeJS.ErrnoException) => {
        const code = typeof err.code === 'string' ? err.code : undefined;
        this.send({ type: 'vipd:bindFailed', listener: id, message: errorMessage(err), ...(code === undefined ? {} : { code }) });
      },
    );
  }

  private async close(id: string, graceMs: number, destroy: boolean): Promise<void> {
    const listener = this.listeners.get(id);
    if (listener !== undefined) await (destroy ? listener.destroy() : listener.close(graceMs));
    // Final counters first, so the primary's totals include every session of the closed listener.
    this.report();
    // Gone for good (a reload may add a listener of the same id later, which takes the slot).
    if (listener !== undefined && this.listeners.get(id) === listener) this.listeners.delete(id);
    this.send({ type: 'vipd:closed', listener: id });
  }

  private report(): void {
    const listeners: ListenerReport[] = [];
    for (const [id, listener] of this.listeners) listeners.push({ id, stats: listener.stats() });
    const pools: PoolReport[] = [];
    for (const { load } of this.pools.values()) {
      pools.push({ pool: load.pool, backends: load.spec.backends.map((b) => ({ key: b.endpoint.key, counters: load.counters(b.endpoint.key) })) });
    }
    this.send({ type: 'vipd:report', listeners, pools });
  }
}

function portOf(listener: TcpProxyListener): { port?: number } {
  const port = listener.address()?.port;
  return port === undefined ? {} : { port };
}

/** Entry point of a worker process; waits for the primary's init. */
function runWorker(): void {
  const send = process.send?.bind(process);
  if (send === undefined) {
    process.stderr.write('vipd proxy worker: must be started by the vipd primary (no IPC channel)\n');
    process.exit(2);
  }
  const post = (message: FromWorker): void => {
    // A failed send means the channel is closing, and 'disconnect' is about to end this process.
    if (process.connected) send(message, undefined, undefined, () => undefined);
  };
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => undefined);
  process.on('SIGINT', () => undefined);
  for (const signal of ['SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const) process.on(signal, () => undefined);
  let worker: ProxyWorker | undefined;
  process.on('message', (message: unknown) => {
    if (!isProtocolMessage<ToWorker>(message)) return;
    if (worker !== undefined) worker.handle(message);
    else if (message.type === 'vipd:init') {
      // Tells the workers apart in ps and top; the primary keeps node's own title.
      process.title = `vipd proxy worker ${message.worker}`;
      worker = new ProxyWorker(message, post);
    }
  });
}

if (require.main === module) runWorker();
