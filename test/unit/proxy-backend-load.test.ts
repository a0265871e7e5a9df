import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker, type BackendEntry, type QueuedClient } from '../../src/proxy/backend-load';
import { BackendOutlier } from '../../src/proxy/outlier';
import type { BackendSpec } from '../../src/proxy/proxy';
import { FakeClock } from '../fakes/fake-clock';
import { FakeHealth, metricValue, testPoolSpec, type PoolSpecOverrides } from '../fakes/proxy-harness';

const a = endpoint('127.0.0.1', 7001);
const b = endpoint('127.0.0.1', 7002);
const c = endpoint('127.0.0.1', 7003);

interface Pool {
  readonly load: BackendLoadTracker;
  readonly health: FakeHealth;
  readonly metrics: Metrics;
  readonly clock: FakeClock;
}

function pool(backends: readonly (Endpoint | BackendSpec)[], overrides: PoolSpecOverrides = {}, healthy?: readonly Endpoint[]): Pool {
  const metrics = createMetrics();
  const clock = new FakeClock();
  const all = backends.map((x) => ('endpoint' in x ? x.endpoint : x));
  const health = new FakeHealth(healthy ?? all);
  const load = new BackendLoadTracker({ spec: testPoolSpec(backends, overrides), health, metrics, clock });
  return { load, health, metrics, clock };
}

/** A queued client that records what the tracker tells it. */
class Waiter implements QueuedClient {
  queueNext: QueuedClient | undefined;
  queuePrev: QueuedClient | undefined;
  queueDeadline = 0;
  queuedFor: BackendEntry | undefined;
  servedOn: string | undefined;
  timedOutAt: number | undefined;
  constructor(
    readonly name: string,
    private readonly clock: FakeClock,
    private readonly tried: readonly string[] = [],
  ) {}
  hasTried(key: string): boolean {
    return this.tried.includes(key);
  }
  onSlotReserved(entry: BackendEntry): void {
    assert.equal(this.servedOn, undefined, `${this.name} served twice`);
    this.servedOn = entry.endpoint.key;
  }
  onQueueTimeout(): void {
    assert.equal(this.timedOutAt, undefined, `${this.name} timed out twice`);
    this.timedOutAt = this.clock.now();
  }
}

/** Fails `n` dials to `backend` in a row. */
function failDials(load: BackendLoadTracker, backend: Endpoint, n: number): void {
  for (let i = 0; i < n; i++) load.dialFailed(load.dialStarted(backend), 'refused');
}

describe('backend load', () => {
  it('counts dials, connections and failures per backend, and mirrors them in metrics', async () => {
    const { load, metrics } = pool([a, b]);
    assert.deepEqual(load.counters(a.key), { active: 0, total: 0, connectErrors: 0, queued: 0, drained: false });

    const first = load.dialStarted(a);
    const second = load.dialStarted(a);
    const third = load.dialStarted(b);
    // A dial in progress already counts: least-conn must not send a burst to one backend.
    assert.equal(load.active(a), 2);
    load.established(first);
    load.dialFailed(second, 'refused');
    load.established(third);
    assert.deepEqual(load.counters(a.key), { active: 1, total: 1, connectErrors: 1, queued: 0, drained: false });
    assert.deepEqual(load.counters(b.key), { active: 1, total: 1, connectErrors: 0, queued: 0, drained: false });
    load.release(first);
    load.release(third);
    assert.equal(load.active(a), 0);
    assert.equal(load.active(b), 0);

    assert.equal(await metricValue(metrics.backendActive, { backend: a.key }), 0);
    assert.equal(await metricValue(metrics.backendConnections, { pool: 'test-pool', backend: a.key }), 1);
    assert.equal(await metricValue(metrics.backendConnectErrors, { backend: a.key, kind: 'refused' }), 1);
  });

  it('pushes relayed bytes to the byte counter on flush, once', async () => {
    const { load, metrics } = pool([a]);
    const entry = load.dialStarted(a);
    entry.unflushedBytesIn += 1_000;
    entry.unflushedBytesOut += 24;
    assert.equal(await metricValue(metrics.backendBytes, { backend: a.key }), 0);
    load.flushMetrics();
    load.flushMetrics();
    assert.equal(await metricValue(metrics.backendBytes, { backend: a.key, direction: 'in' }), 1_000);
    assert.equal(await metricValue(metrics.backendBytes, { backend: a.key, direction: 'out' }), 24);
  });

  it('drainBackend takes a backend out of service and back, and refuses an unknown one', async () => {
    const { load, metrics } = pool([a, b]);
    assert.equal(load.drainBackend(a.key, true), true);
    assert.equal(load.isDrained(a.key), true);
    assert.equal(load.entry(a.key)!.inService, false);
    assert.equal(load.counters(a.key).drained, true);
    assert.equal(await metricValue(metrics.backendDrained, { backend: a.key }), 1);
    assert.equal(load.drainBackend('127.0.0.1:1', true), false);
    assert.equal(load.drainBackend(a.key, false), true);
    assert.equal(load.entry(a.key)!.inService, true);
    assert.equal(await metricValue(metrics.backendDrained, { backend: a.key }), 0);
  });

  it('skew: busiest backend per unit of weight over the pool average, over backends in service', () => {
    const { load } = pool([{ endpoint: a, weight: 1 }, { endpoint: b, weight: 3 }, { endpoint: c, weight: 1 }]);
    assert.equal(load.skew(), 1, 'an idle pool is even');
    // a 1, b 3, c 0: per weight 1, 1, 0; average 4/5 = 0.8 per weight; max 1 => 1.25
    load.dialStarted(a);
    for (let i = 0; i < 3; i++) load.dialStarted(b);
    assert.equal(load.skew(), 1.25);
    // A drained backend is not part of the comparison: a and b alone are exactly even.
    load.drainBackend(c.key, true);
    assert.equal(load.skew(), 1);
    for (let i = 0; i < 4; i++) load.dialStarted(a);
    // a 5, b 3 over weights 1 and 3: average 8/4 = 2, max 5 => 2.5
    assert.equal(load.skew(), 2.5);
  });
});

describe('outlier back-off (BackendOutlier, explicit times)', () => {
  const policy = { consecutiveConnectFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 5_000 };

  it('ejects at the threshold; a success in between starts the streak over', () => {
    const outlier = new BackendOutlier(policy);
    assert.equal(outlier.recordFailure(), false);
    assert.equal(outlier.recordFailure(), false);
    outlier.recordSuccess();
    assert.equal(outlier.recordFailure(), false);
    assert.equal(outlier.recordFailure(), false);
    assert.equal(outlier.recordFailure(), true);
  });

  it('consecutive ejections last base x 2^(n-1), capped at max; time in service decays the level', () => {
    const outlier = new BackendOutlier(policy);
    const durations: number[] = [];
    let now = 10_000;
    for (let n = 0; n < 5; n++) {
      const duration = outlier.eject(now);
      durations.push(duration);
      now += duration;
      outlier.restore(now);
      // Fails again at once after each return.
      now += 10;
    }
    assert.deepEqual(durations, [1_000, 2_000, 4_000, 5_000, 5_000]);
    // Level 5; 3 base periods in service take it down to 2, so the next ejection is the third in a row.
    now += 3 * policy.baseEjectionMs;
    assert.equal(outlier.eject(now), 4_000);
    assert.equal(outlier.level, 3);
  });

  it('is off with a threshold of 0', () => {
    const outlier = new BackendOutlier({ ...policy, consecutiveConnectFailures: 0 });
    for (let i = 0; i < 100; i++) assert.equal(outlier.recordFailure(), false);
  });
});

describe('outlier ejection in the pool (fake clock)', () => {
  const outlier = { consecutiveConnectFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 4_000 };

  it('ejects after N consecutive failures for growing times, restores at expiry, and counts it', async () => {
    const { load, metrics, clock } = pool([a, b], { outlier });
    const ejectedFor: number[] = [];
    for (let round = 0; round < 4; round++) {
      failDials(load, a, 2);
      assert.equal(load.entry(a.key)!.inService, true, 'ejected before the threshold');
      const failedAt = clock.now();
      failDials(load, a, 1);
      assert.equal(load.entry(a.key)!.inService, false);
      assert.equal(load.counters(a.key).ejectedUntil, clock.wallNow() + Math.min(1_000 * 2 ** round, 4_000));
      assert.equal(await metricValue(metrics.backendEjected, { backend: a.key }), 1);
      // Dials already under way when it was ejected do not extend the ejection.
      failDials(load, a, 5);
      while (!load.entry(a.key)!.inService) await clock.advance(100);
      ejectedFor.push(clock.now() - failedAt);
      assert.equal(load.counters(a.key).ejectedUntil, undefined);
      assert.equal(await metricValue(metrics.backendEjected, { backend: a.key }), 0);
    }
    console.log(`ejection durations (base 1000, max 4000, failing again at once): ${ejectedFor.join(' ')} ms`);
    assert.deepEqual(ejectedFor, [1_000, 2_000, 4_000, 4_000]);
    assert.equal(await metricValue(metrics.backendEjections, { backend: a.key }), 4);
  });

  it('a successful connect resets the failure streak', () => {
    const { load } = pool([a, b], { outlier });
    for (let i = 0; i < 5; i++) {
      failDials(load, a, 2);
      load.established(load.dialStarted(a));
    }
    assert.equal(load.entry(a.key)!.inService, true);
    assert.equal(load.counters(a.key).connectErrors, 10);
  });

  it('never ejects the last backend in service; health must take it out', async () => {
    const { load, metrics } = pool([a, b], { outlier });
    failDials(load, a, 3);
    assert.equal(load.entry(a.key)!.inService, false);
    failDials(load, b, 10);
    assert.equal(load.entry(b.key)!.inService, true);
    assert.equal(await metricValue(metrics.backendEjections, {}), 1);
  });

  it('close() cancels the ejection timers', async () => {
    const { load, clock } = pool([a, b], { outlier });
    failDials(load, a, 3);
    assert.equal(clock.pendingTimers(), 1);
    load.close();
    assert.equal(clock.pendingTimers(), 0);
  });
});

describe('pool queue (fake clock)', () => {
  const capped = (max: number): BackendSpec[] => [
    { endpoint: a, weight: 1, maxConnections: max },
    { endpoint: b, weight: 1, maxConnections: max },
  ];

  it('serves waiters in FIFO order as slots free, each once, and attributes them per backend', async () => {
    const { load, metrics, clock } = pool(capped(1), { queue: { size: 10, timeoutMs: 1_000 } });
    const onA = load.dialStarted(a);
    const onB = load.dialStarted(b);
    const waiters = ['w1', 'w2', 'w3'].map((name) => new Waiter(name, clock));
    assert.ok(load.enqueue(waiters[0]!, onA));
    assert.ok(load.enqueue(waiters[1]!, onB));
    assert.ok(load.enqueue(waiters[2]!, onA));
    assert.equal(load.queued(), 3);
    assert.equal(load.counters(a.key).queued, 2);
    assert.equal(await metricValue(metrics.backendQueued, { backend: a.key }), 2);
    // A slot on b goes to the oldest waiter, whichever backend it was attributed to.
    load.release(onB);
    assert.equal(waiters[0]!.servedOn, b.key);
    assert.equal(load.active(b), 1, 'the slot went straight to the waiter');
    load.release(onA);
    assert.equal(waiters[1]!.servedOn, a.key);
    assert.equal(waiters[2]!.servedOn, undefined);
    assert.equal(load.queued(), 1);
    assert.equal(load.counters(a.key).queued, 1);
    assert.equal(load.counters(b.key).queued, 0);
  });

  it('skips a waiter that already failed on the freed backend', () => {
    const { load, clock } = pool(capped(1), { queue: { size: 10, timeoutMs: 1_000 } });
    const onA = load.dialStarted(a);
    const onB = load.dialStarted(b);
    const triedA = new Waiter('tried-a', clock, [a.key]);
    const fresh = new Waiter('fresh', clock);
    load.enqueue(triedA, onB);
    load.enqueue(fresh, onA);
    load.release(onA);
    assert.equal(triedA.servedOn, undefined);
    assert.equal(fresh.servedOn, a.key);
    load.release(onB);
    assert.equal(triedA.servedOn, b.key);
  });

  it('times waiters out after queue.timeoutMs with a single timer, and refuses beyond queue.size', async () => {
    const { load, metrics, clock } = pool(capped(1), { queue: { size: 2, timeoutMs: 500 } });
    const onA = load.dialStarted(a);
    load.dialStarted(b);
    const first = new Waiter('first', clock);
    const second = new Waiter('second', clock);
    assert.ok(load.enqueue(first, onA));
    await clock.advance(200);
    assert.ok(load.enqueue(second, onA));
    assert.equal(load.enqueue(new Waiter('third', clock), onA), false, 'queue.size is a hard bound');
    assert.equal(clock.pendingTimers(), 1);
    await clock.advance(1_000);
    assert.equal(first.timedOutAt, 500);
    assert.equal(second.timedOutAt, 700);
    assert.equal(load.queued(), 0);
    assert.equal(await metricValue(metrics.backendQueued, {}), 0);
    assert.equal(clock.pendingTimers(), 0);
  });

  it('a queue of size 0 refuses at once', () => {
    const { load, clock } = pool(capped(1));
    assert.equal(load.enqueue(new Waiter('w', clock), load.dialStarted(a)), false);
  });

  it('serves waiters when a backend comes back: healthy again, undrained, ejection over', async () => {
    const { load, health, clock } = pool(capped(1), { queue: { size: 10, timeoutMs: 60_000 }, outlier: { consecutiveConnectFailures: 1, baseEjectionMs: 1_000 } }, [a]);
    const onA = load.dialStarted(a);
    const waiters = ['w1', 'w2', 'w3'].map((name) => new Waiter(name, clock));
    for (const waiter of waiters) load.enqueue(waiter, onA);
    health.set([a, b]);
    assert.equal(waiters[0]!.servedOn, b.key, 'b became healthy with a free slot');
    assert.equal(waiters[1]!.servedOn, undefined, 'b is at its cap now');
    // b's dial fails: it is ejected (a stays in service), and its slot does not go to a waiter.
    load.dialFailed(load.entry(b.key)!, 'refused');
    assert.equal(load.entry(b.key)!.inService, false);
    assert.equal(waiters[1]!.servedOn, undefined);
    await clock.advance(1_000);
    assert.equal(waiters[1]!.servedOn, b.key, 'ejection over');
    load.drainBackend(a.key, true);
    load.release(onA);
    assert.equal(waiters[2]!.servedOn, undefined, 'a slot on a drained backend is not handed out');
    load.drainBackend(a.key, false);
    assert.equal(waiters[2]!.servedOn, a.key);
  });

  it('close() refuses every waiter', () => {
    const { load, clock } = pool(capped(1), { queue: { size: 10, timeoutMs: 60_000 } });
    const onA = load.dialStarted(a);
    const waiter = new Waiter('w', clock);
    load.enqueue(waiter, onA);
    load.close();
    assert.equal(waiter.timedOutAt, 0);
    assert.equal(load.queued(), 0);
  });
});

describe('closeOnBackendDown hook', () => {
  for (const closeOnBackendDown of [true, false]) {
    it(`closeOnBackendDown ${closeOnBackendDown}: listeners are ${closeOnBackendDown ? '' : 'not '}told when a backend leaves the healthy set`, () => {
      const { load, health } = pool([a, b], { closeOnBackendDown });
      const told: string[] = [];
      const detach = load.attach({ closeSessionsOn: (entry) => told.push(entry.endpoint.key) });
      health.set([b], [a]);
      health.set([b], [a]);
      health.set([a, b]);
      detach();
      health.set([a], [b]);
      assert.deepEqual(told, closeOnBackendDown ? [a.key] : []);
    });
  }
});
