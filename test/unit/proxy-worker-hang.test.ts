import assert from 'node:assert/strict';
import type { Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { FromWorker, ToWorker } from '../../src/dataplane/workers/protocol';
import { WorkerPool } from '../../src/dataplane/workers/worker-pool';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import type { ListenerSpec } from '../../src/proxy/proxy';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeHealth, testPoolSpec } from '../fakes/proxy-harness';

/**
 * The hang watchdog of the worker pool (issue 11 point 5, T17 with workers), driven by the fake clock
 * with fake worker processes: a worker that stops answering its heartbeat for hangTimeout is killed
 * and restarted, and its listeners stop counting it at once.
 */

let nextPid = 1000;

/** A stand-in for a cluster worker: answers like entry.ts (ready, bound, pong) unless frozen (SIGSTOP). */
class FakeWorker extends EventEmitter {
  readonly received: ToWorker[] = [];
  readonly signals: string[] = [];
  frozen = false;
  private connected = true;
  readonly process: { readonly pid: number; kill: (signal: string) => boolean };

  constructor() {
    super();
    const pid = nextPid++;
    this.process = {
      pid,
      kill: (signal: string) => {
        this.signals.push(signal);
        // SIGKILL ends even a stopped process.
        this.die(null, signal);
        return true;
      },
    };
  }

  isConnected(): boolean {
    return this.connected;
  }

  send(message: ToWorker, callback?: (err: Error | null) => void): boolean {
    if (!this.connected) throw new Error('channel closed');
    this.received.push(message);
    callback?.(null);
    if (!this.frozen) setImmediate(() => this.answer(message));
    return true;
  }

  /** What the worker's event loop would say to `message`. */
  private answer(message: ToWorker): void {
    if (this.frozen || !this.connected) return;
    const reply = (m: FromWorker) => this.emit('message', m);
    switch (message.type) {
      case 'vipd:init':
        reply({ type: 'vipd:ready' });
        for (const l of message.listeners) if (l.start) reply({ type: 'vipd:bound', listener: l.spec.id, bound: true, port: 6443 });
        return;
      case 'vipd:start':
        reply({ type: 'vipd:bound', listener: message.listener, bound: true, port: 6443 });
        return;
      case 'vipd:ping':
        reply({ type: 'vipd:pong', seq: message.seq });
        return;
      case 'vipd:exit':
        this.die(0, null);
        return;
      default:
        return;
    }
  }

  private die(code: number | null, signal: string | null): void {
    if (!this.connected) return;
    this.connected = false;
    setImmediate(() => this.emit('exit', code, signal));
  }
}

interface Harness {
  readonly clock: FakeClock;
  readonly pool: WorkerPool;
  readonly metrics: Metrics;
  /** Every fake process forked, in order. */
  readonly forked: FakeWorker[];
  readonly spec: ListenerSpec;
  /** The slot's current process. */
  current(index: number): FakeWorker;
}

const HANG_TIMEOUT_MS = 2000;
/** The supervisor pings eight times per hangTimeout. */
const HEARTBEAT_MS = HANG_TIMEOUT_MS / 8;

function harness(workers = 2): Harness {
  const clock = new FakeClock();
  const metrics = createMetrics();
  const forked: FakeWorker[] = [];
  const backend = endpoint('198.18.1.10', 2379);
  const poolSpec = testPoolSpec([backend]);
  const pool = new WorkerPool({
    workers,
    pools: [{ spec: poolSpec, health: new FakeHealth([backend]) }],
    logger: silentLogger(),
    metrics,
    clock,
    hangTimeoutMs: HANG_TIMEOUT_MS,
    fork: () => {
      const w = new FakeWorker();
      forked.push(w);
      return w as unknown as Worker;
    },
  });
  const spec: ListenerSpec = { id: 'cp:2379', vip: 'cp', address: '198.18.0.10', port: 2379, pool: poolSpec };
  return {
    clock,
    pool,
    metrics,
    forked,
    spec,
    current: (index) => {
      const pid = pool.workers()[index]!.pid;
      return forked.find((w) => w.process.pid === pid)!;
    },
  };
}

async function restarts(metrics: Metrics, reason: 'hung' | 'exited'): Promise<number> {
  const json = await metrics.proxyWorkerRestarts.get();
  return json.values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

/** Starts the listener while the fake clock runs (start() waits for every worker's ready). */
async function startListener(h: Harness) {
  const listener = h.pool.listener(h.spec);
  const started = listener.start();
  await h.clock.advance(0);
  await started;
  await flushMicrotasks();
  return listener;
}

describe('worker hang watchdog (T17 with workers)', () => {
  it('kills a worker silent for hangTimeout, stops counting it at once, and restarts it; the listener stays bound on the other worker', async () => {
    const h = harness(2);
    const listener = await startListener(h);
    assert.equal(listener.workersBound(), 2);
    const bound: boolean[] = [];
    listener.onBoundChange((b) => bound.push(b));
    const hung = h.current(0);
    hung.frozen = true;

    // Silent for less than hangTimeout: still counted.
    await h.clock.advance(HANG_TIMEOUT_MS - 100);
    assert.deepEqual(hung.signals, [], 'killed before hangTimeout');
    assert.equal(listener.workersBound(), 2);

    // Past hangTimeout (at the next heartbeat, an eighth of it): declared hung and killed.
    await h.clock.advance(HEARTBEAT_MS + 100);
    assert.deepEqual(hung.signals, ['SIGKILL']);
    assert.equal(h.pool.workers()[0]!.hangs, 1);
    assert.equal(await restarts(h.metrics, 'hung'), 1);
    // The replacement is forked at once (no back-off for a hang) and rejoins the listener.
    await h.clock.advance(0);
    assert.equal(h.forked.length, 3, 'a new process for slot 0');
    assert.equal(h.pool.workers()[0]!.state, 'up');
    assert.equal(listener.workersBound(), 2, 'the new worker accepts again');
    assert.equal(listener.bound(), true);
    assert.deepEqual(bound, [], 'the listener never went unbound: worker 1 kept accepting');
    assert.equal(h.current(1).signals.length, 0, 'the answering worker is left alone');
    await h.pool.destroy();
  });

  it('with every worker hung, the listener is unbound within hangTimeout plus one heartbeat, and bound again once they are back', async () => {
    const h = harness(2);
    const listener = await startListener(h);
    const changes: Array<{ bound: boolean; at: number }> = [];
    listener.onBoundChange((b) => changes.push({ bound: b, at: h.clock.now() }));
    const frozenAt = h.clock.now();
    // Both replacements start frozen too for a while: the node stays unbound until a worker answers.
    for (let i = 0; i < 2; i++) h.current(i).frozen = true;
    await h.clock.advance(HANG_TIMEOUT_MS + HEARTBEAT_MS);
    const unbound = changes.find((c) => !c.bound);
    assert.ok(unbound, 'the listener went unbound');
    const detectMs = unbound.at - frozenAt;
    assert.ok(detectMs > HANG_TIMEOUT_MS && detectMs <= HANG_TIMEOUT_MS + HEARTBEAT_MS, `unbound ${detectMs} ms after the freeze`);
    await h.clock.advance(0);
    assert.equal(listener.bound(), true, 'bound again once the new workers accept');
    assert.equal(await restarts(h.metrics, 'hung'), 2);
    console.log(`T17 (unit, fake clock): both workers silent -> listener unbound after ${detectMs} ms (hangTimeout ${HANG_TIMEOUT_MS} ms), bound again after the restart`);
    await h.pool.destroy();
  });

  it('never kills a worker that answers its heartbeat, however long it runs', async () => {
    const h = harness(2);
    const listener = await startListener(h);
    await h.clock.advance(20 * HANG_TIMEOUT_MS);
    assert.deepEqual(h.forked.map((w) => w.signals), [[], []]);
    assert.equal(listener.workersBound(), 2);
    assert.equal(await restarts(h.metrics, 'hung'), 0);
    const pings = h.forked[0]!.received.filter((m) => m.type === 'vipd:ping').length;
    assert.ok(pings >= 150, `${pings} pings in ${20 * HANG_TIMEOUT_MS} ms (eight per hangTimeout)`);
    await h.pool.destroy();
  });

  it('ignores what a worker says once it is declared hung (a late bound must not count it again)', async () => {
    const h = harness(2);
    const listener = await startListener(h);
    const hung = h.current(0);
    // Its kill does not take effect at once (a process in uninterruptible sleep): exit comes later.
    hung.process.kill = (signal: string) => (hung.signals.push(signal), true);
    hung.frozen = true;
    await h.clock.advance(HANG_TIMEOUT_MS + HEARTBEAT_MS);
    assert.deepEqual(hung.signals, ['SIGKILL']);
    assert.equal(h.pool.workers()[0]!.state, 'hung');
    assert.equal(listener.workersBound(), 1);
    hung.emit('message', { type: 'vipd:bound', listener: h.spec.id, bound: true, port: 6443 });
    assert.equal(listener.workersBound(), 1, 'a message from the hung process was taken');
    hung.emit('exit', null, 'SIGKILL');
    await h.clock.advance(0);
    assert.equal(listener.workersBound(), 2, 'its replacement counts');
    await h.pool.destroy();
  });

  it('gives a worker that is still starting the start-up allowance (10 s), not hangTimeout', async () => {
    const h = harness(1);
    h.pool.listener(h.spec);
    // The first process never says ready (it is slow to start, then silent).
    const origFork = h.forked.length;
    const starting = h.pool.start();
    const first = h.forked[origFork]!;
    first.frozen = true;
    await h.clock.advance(5 * HANG_TIMEOUT_MS);
    assert.deepEqual(first.signals, [], 'a starting worker was killed after hangTimeout');
    await h.clock.advance(10_000);
    assert.deepEqual(first.signals, ['SIGKILL'], 'a worker that never said ready is killed after the start-up allowance');
    await h.clock.advance(0);
    await starting;
    await h.pool.destroy();
  });
});
