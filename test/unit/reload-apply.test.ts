import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AnnounceReconciler } from '../../src/announce/reconciler';
import type { VipInput } from '../../src/announce/decide';
import type { CheckSpec, PoolSnapshot } from '../../src/health/health';
import { createPoolHealth } from '../../src/health/pool-health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import type { PoolSpec } from '../../src/proxy/proxy';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeProbe, seededRandom } from '../fakes/health-fake-probe';
import { FakeSpeaker } from '../fakes/fake-speaker';

const a = endpoint('198.18.21.2', 2379);
const b = endpoint('198.18.21.3', 2379);
const c = endpoint('198.18.21.4', 2379);

const check: CheckSpec = { kind: 'tcp', intervalMs: 1000, timeoutMs: 500, rise: 2, fall: 2, path: '/', expectStatus: [200], insecureSkipVerify: false };

function healthOf(backends: Endpoint[], down: Set<string> = new Set()) {
  const clock = new FakeClock();
  const probe = new FakeProbe(clock, (t) => ({ ok: !down.has(t.key), latencyMs: 5 }));
  const metrics = createMetrics();
  const health = createPoolHealth({ pool: 'etcd', backends, check, probe, clock, logger: silentLogger(), metrics, random: seededRandom(3) });
  return { clock, probe, metrics, health };
}

const states = (s: PoolSnapshot) => Object.fromEntries(s.backends.map((x) => [x.backend.key, x.state]));

test('pool health reconfigure: kept backends keep state and checker, an added one starts unknown and rises, a removed one is no longer probed', async () => {
  const { clock, probe, health } = healthOf([a, b]);
  const heard: Array<string | undefined> = [];
  health.onChange((_s, t) => heard.push(t ? `${t.backend.key}->${t.to}` : 'reconfigured'));
  health.start();
  await clock.advance(3000);
  assert.deepEqual(states(health.snapshot()), { [a.key]: 'healthy', [b.key]: 'healthy' });

  const callsOnBBefore = probe.callsFor(b).length;
  health.reconfigure([a, c], check);
  assert.deepEqual(states(health.snapshot()), { [a.key]: 'healthy', [c.key]: 'unknown' }, 'a keeps healthy at once; c starts unknown');
  assert.equal(heard.at(-1), 'reconfigured');
  await clock.advance(3000);
  assert.deepEqual(states(health.snapshot()), { [a.key]: 'healthy', [c.key]: 'healthy' }, 'c rose');
  assert.ok(probe.callsFor(b).length <= callsOnBBefore + 1, 'b is not probed after its removal (one in flight at most)');
  assert.ok(!heard.includes(`${a.key}->unknown`), 'a never left healthy');
  assert.deepEqual(probe.overlaps, []);
});

test('pool health reconfigure: a changed check rebuilds checkers but keeps each backend\'s state; a bad check changes nothing', async () => {
  const { clock, probe, health } = healthOf([a, b]);
  health.start();
  await clock.advance(3000);
  const version = health.snapshot().version;
  assert.throws(() => health.reconfigure([a, b], { ...check, rise: 0 }), /rise/);
  assert.equal(health.snapshot().version, version, 'a refused reconfigure changes nothing');
  health.reconfigure([a, b], { ...check, intervalMs: 200, timeoutMs: 100 });
  assert.deepEqual(states(health.snapshot()), { [a.key]: 'healthy', [b.key]: 'healthy' });
  const before = probe.callsFor(a).length;
  await clock.advance(1000);
  assert.ok(probe.callsFor(a).length - before >= 4, `new interval in use: ${probe.callsFor(a).length - before} probes in 1 s at 200 ms`);
  assert.deepEqual(probe.overlaps, []);
});

function poolSpec(backends: Array<{ endpoint: Endpoint; weight?: number }>, extra: Partial<PoolSpec> = {}): PoolSpec {
  return {
    name: 'etcd',
    balance: 'round-robin',
    backends: backends.map((x) => ({ endpoint: x.endpoint, weight: x.weight ?? 1 })),
    slowStartMs: 0,
    connectTimeoutMs: 1000,
    maxConnectAttempts: 3,
    retryBeforeReply: 'tls',
    queue: { size: 0, timeoutMs: 1000 },
    timeouts: { firstByteMs: 10_000, idleMs: 0, maxConnectionAgeMs: 0, maxConnectionAgeJitterMs: 0 },
    tcpKeepaliveMs: 10_000,
    outlier: { consecutiveConnectFailures: 5, baseEjectionMs: 5000, maxEjectionMs: 300_000 },
    closeOnBackendDown: false,
    ...extra,
  };
}

test('load tracker reconfigure: a kept backend keeps its connections and drain; a removed one drains (or is closed with closeOnBackendDown); a new one is added', async () => {
  for (const closeOnBackendDown of [false, true]) {
    const { clock, health } = healthOf([a, b]);
    health.start();
    await clock.advance(3000);
    const tracker = new BackendLoadTracker({ spec: poolSpec([{ endpoint: a }, { endpoint: b }], { closeOnBackendDown }), health, metrics: createMetrics(), clock });
    const closedOn: string[] = [];
    tracker.attach({ closeSessionsOn: (entry) => closedOn.push(entry.endpoint.key) });
    const onA = tracker.dialStarted(a);
    tracker.established(onA);
    const onB = tracker.dialStarted(b);
    tracker.established(onB);
    tracker.drainBackend(a.key, true);

    health.reconfigure([a, c], check);
    const removed = tracker.reconfigure(poolSpec([{ endpoint: a, weight: 3 }, { endpoint: c }], { closeOnBackendDown }));
    assert.deepEqual(removed, [{ backend: b.key, active: 1 }]);
    assert.equal(tracker.entry(a.key), onA, 'a keeps its entry');
    assert.equal(onA.active, 1);
    assert.equal(onA.weight, 3);
    assert.equal(tracker.isDrained(a.key), true, 'the drain of a kept backend survives');
    assert.equal(tracker.entry(b.key), undefined, 'b left the pool');
    assert.notEqual(tracker.entry(c.key), undefined);
    assert.equal(tracker.entry(c.key)!.healthy, false, 'c is not healthy before its rise');
    assert.deepEqual(closedOn, closeOnBackendDown ? [b.key] : [], `closeOnBackendDown ${closeOnBackendDown}`);
    // The session on b ends by itself later: releasing its entry is harmless.
    tracker.release(onB);
    assert.equal(onB.active, 0);
    await clock.advance(3000);
    assert.equal(tracker.entry(c.key)!.healthy, true, 'c takes traffic after its rise');
    tracker.close();
    await health.close();
  }
});

test('reconciler setVips: unchanged attributes push nothing; changed attributes re-send; a removed VIP is withdrawn; a new one starts', async () => {
  const clock = new FakeClock();
  const speaker = new FakeSpeaker({ now: () => clock.now() });
  const ready = (vip: string): (() => VipInput) => () => ({
    vip,
    shuttingDown: false,
    drained: false,
    vipBound: true,
    minHealthyBackends: 1,
    listeners: [{ id: `${vip}:2379`, bound: true, pool: { pool: 'etcd', version: 1, backends: [{ backend: a, state: 'healthy', since: 0 }], healthy: [a], settled: true } }],
  });
  const src = (name: string, prefix: string, communities: string[]) => ({ name, advertisement: { prefix, communities }, inputs: ready(prefix.split('/')[0]!) });
  const reconciler = new AnnounceReconciler({ vips: [src('cp', '198.19.0.10/32', ['65000:100'])], speaker, clock, logger: silentLogger(), metrics: createMetrics(), holdDownMs: 3000 });
  reconciler.evaluate();
  await reconciler.idle();
  const pushes = () => speaker.pushes.length;
  const afterStart = pushes();
  assert.ok(afterStart >= 1);

  reconciler.setVips([src('cp', '198.19.0.10/32', ['65000:100'])]);
  await reconciler.idle();
  await flushMicrotasks();
  assert.equal(pushes(), afterStart, 'same attributes: nothing pushed');

  reconciler.setVips([src('cp', '198.19.0.10/32', ['65000:200'])]);
  await reconciler.idle();
  assert.equal(pushes(), afterStart + 1, 'changed attributes: one push');
  assert.deepEqual(speaker.sets.at(-1)!.map((ad) => ad.communities), [['65000:200']]);

  reconciler.setVips([src('api', '198.19.0.20/32', [])]);
  await reconciler.idle();
  assert.deepEqual(speaker.pushes.at(-1), ['198.19.0.20/32'], 'cp withdrawn, api announced');
  assert.deepEqual(reconciler.status().map((s) => [s.vip, s.state]), [['api', 'announced']]);
  assert.deepEqual(speaker.violations, []);
});
