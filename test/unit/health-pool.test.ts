import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import type { CheckSpec, HealthTransition, PoolSnapshot } from '../../src/health/health';
import { createPoolHealth } from '../../src/health/pool-health';
import { VipdError } from '../../src/lib/errors';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeProbe, seededRandom, type FakeAnswer } from '../fakes/health-fake-probe';

const a = endpoint('198.18.21.2', 2379);
const b = endpoint('198.18.21.3', 2379);
const c = endpoint('2001:db8::4', 2379);

const check: CheckSpec = {
  kind: 'tcp',
  intervalMs: 1000,
  timeoutMs: 1000,
  rise: 2,
  fall: 2,
  path: '/',
  expectStatus: [200],
  insecureSkipVerify: false,
};

function pool(script: (target: Endpoint, now: number) => FakeAnswer, options: { logger?: pino.Logger; spec?: Partial<CheckSpec>; backends?: Endpoint[] } = {}) {
  const clock = new FakeClock();
  const probe = new FakeProbe(clock, script);
  const metrics = createMetrics();
  const health = createPoolHealth({
    pool: 'etcd',
    backends: options.backends ?? [a, b, c],
    check: { ...check, ...options.spec },
    probe,
    clock,
    logger: options.logger ?? silentLogger(),
    metrics,
    random: seededRandom(11),
  });
  const changes: Array<{ snapshot: PoolSnapshot; transition: HealthTransition; now: number }> = [];
  health.onChange((snapshot, transition) => changes.push({ snapshot, transition: transition!, now: clock.now() }));
  return { clock, probe, metrics, health, changes };
}

function assertHealthyMatchesStates(snapshot: PoolSnapshot): void {
  assert.deepEqual(
    snapshot.healthy,
    snapshot.backends.filter((s) => s.state === 'healthy').map((s) => s.backend),
  );
  assert.equal(snapshot.settled, snapshot.backends.every((s) => s.state !== 'unknown'));
}

function captureLogs() {
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('createPoolHealth snapshots', () => {
  it('starts at version 0 with every backend unknown, nothing healthy, not settled, frozen', () => {
    const { health } = pool(() => ({ ok: true, latencyMs: 5 }));
    const s = health.snapshot();
    assert.equal(s.pool, 'etcd');
    assert.equal(s.version, 0);
    assert.deepEqual(s.backends.map((x) => x.state), ['unknown', 'unknown', 'unknown']);
    assert.deepEqual(s.healthy, []);
    assert.equal(s.settled, false);
    assert.ok(Object.isFrozen(s) && Object.isFrozen(s.backends) && Object.isFrozen(s.healthy) && s.backends.every(Object.isFrozen));
  });

  it('builds a new snapshot per transition (version + 1) and never touches an old one', async () => {
    const { clock, health, changes } = pool(() => ({ ok: true, latencyMs: 5 }));
    const first = health.snapshot();
    const firstCopy = structuredClone(first);
    health.start();
    await clock.advance(5_000);
    assert.equal(changes.length, 3);
    assert.deepEqual(changes.map((ch) => ch.snapshot.version), [1, 2, 3]);
    assert.deepEqual(first, firstCopy, 'the version 0 snapshot is unchanged');
    for (const { snapshot } of changes) assert.notEqual(snapshot, first);
    assert.equal(changes[0]!.snapshot.healthy.length, 1, 'the first change snapshot still shows one healthy backend');
    assert.throws(() => {
      (first as { version: number }).version = 99;
    }, TypeError);
    assert.throws(() => {
      (first.healthy as Endpoint[]).push(a);
    }, TypeError);
    assert.throws(() => {
      (first.backends[0] as { state: string }).state = 'healthy';
    }, TypeError);
    assert.deepEqual(health.snapshot().healthy, [a, b, c]);
    assert.equal(health.snapshot().settled, true);
    health.close();
  });

  it('lists healthy backends in configured order, whatever order they came up in', async () => {
    const upAt = new Map([[a.key, 6_000], [b.key, 0], [c.key, 3_000]]);
    const { clock, health, changes } = pool((t, now) => ({ ok: now >= upAt.get(t.key)!, latencyMs: 5 }));
    health.start();
    await clock.advance(10_000);
    assert.deepEqual(changes.filter((ch) => ch.transition.to === 'healthy').map((ch) => ch.transition.backend), [b, c, a]);
    assert.deepEqual(health.snapshot().healthy, [a, b, c]);
    health.close();
  });

  it('never lists an unknown backend as healthy, and settles only when none is unknown', async () => {
    // a passes twice then fails for ever; b passes every other probe (stays unknown); c passes.
    const calls = new Map<string, number>();
    const { clock, health, changes } = pool(
      (t) => {
        const n = (calls.get(t.key) ?? 0) + 1;
        calls.set(t.key, n);
        if (t.key === a.key) return { ok: n <= 2, latencyMs: 5 };
        if (t.key === b.key) return { ok: n % 2 === 0, latencyMs: 5 };
        return { ok: true, latencyMs: 5 };
      },
      { spec: { rise: 3, fall: 2 } },
    );
    health.start();
    for (let step = 0; step < 200; step++) {
      await clock.advance(100);
      const s = health.snapshot();
      assertHealthyMatchesStates(s);
      assert.ok(!s.healthy.includes(b), 'b never earned rise');
    }
    for (const { snapshot } of changes) assertHealthyMatchesStates(snapshot);
    const s = health.snapshot();
    assert.deepEqual(s.backends.map((x) => x.state), ['unhealthy', 'unknown', 'healthy']);
    assert.deepEqual(s.healthy, [c]);
    assert.equal(s.settled, false);
    health.close();
  });

  it('reports the latest probe result under the same version when no state changed', async () => {
    let ok = true;
    const { clock, health } = pool(() => ({ ok, latencyMs: 5 }), { backends: [a] });
    health.start();
    await clock.advance(3_000);
    const healthy = health.snapshot();
    assert.equal(healthy.version, 1);
    ok = false;
    await clock.advance(1_000);
    const pending = health.snapshot();
    assert.equal(pending.version, 1, 'one failure below fall is no change');
    assert.notEqual(pending, healthy);
    assert.equal(pending.backends[0]!.state, 'healthy');
    assert.equal(pending.backends[0]!.lastResult?.ok, false);
    assert.ok(pending.backends[0]!.lastResult!.at > healthy.backends[0]!.lastResult!.at);
    assert.ok(pending.backends[0]!.lastResult!.at <= clock.wallNow());
    assert.equal(healthy.backends[0]!.lastResult?.ok, true, 'the earlier snapshot keeps its own result');
    assert.equal(health.snapshot(), pending, 'no new object without a new result');
    health.close();
  });
});

describe('createPoolHealth listeners, metrics and logs', () => {
  it('calls listeners once per transition with the transition and its probe result; unsubscribe works; a throwing listener is contained', async () => {
    const { clock, health, changes } = pool((t) => ({ ok: t.key !== b.key, latencyMs: 5 }));
    const second: HealthTransition[] = [];
    health.onChange(() => {
      throw new Error('listener bug');
    });
    const unsubscribe = health.onChange((_s, transition) => {
      second.push(transition!);
      unsubscribe();
    });
    health.start();
    await clock.advance(5_000);
    assert.equal(changes.length, 3);
    for (const { snapshot, transition } of changes) {
      assert.equal(transition.pool, 'etcd');
      assert.equal(transition.from, 'unknown');
      assert.equal(snapshot.backends.find((s) => s.backend === transition.backend)!.state, transition.to);
      assert.equal(transition.result.ok, transition.to === 'healthy');
    }
    assert.deepEqual(second, [changes[0]!.transition], 'the unsubscribed listener heard nothing more');
    assert.deepEqual(new Set(changes.map((ch) => `${ch.transition.backend.key}:${ch.transition.to}`)), new Set([`${a.key}:healthy`, `${b.key}:unhealthy`, `${c.key}:healthy`]));
    health.close();
  });

  it('exports state, checks, durations and transitions', async () => {
    const { clock, health, metrics } = pool((t) => ({ ok: t.key !== b.key, latencyMs: 250 }));
    const state = async (backend: Endpoint) =>
      (await metrics.backendState.get()).values.filter((v) => v.labels.backend === backend.key && v.value === 1).map((v) => v.labels.state);
    assert.deepEqual(await state(a), ['unknown']);
    health.start();
    await clock.advance(3_000);
    assert.deepEqual(await state(a), ['healthy']);
    assert.deepEqual(await state(b), ['unhealthy']);
    const transitions = (await metrics.healthTransitions.get()).values;
    assert.deepEqual(
      transitions.map((v) => `${v.labels.backend}:${v.labels.to}=${v.value}`).sort(),
      [`${a.key}:healthy=1`, `${b.key}:unhealthy=1`, `${c.key}:healthy=1`].sort(),
    );
    const checks = (await metrics.healthChecks.get()).values;
    assert.ok(checks.some((v) => v.labels.backend === b.key && v.labels.result === 'fail' && v.value >= 2));
    const text = await metrics.registry.getSingleMetricAsString('vipd_health_check_duration_seconds');
    assert.match(text, /vipd_health_check_duration_seconds_bucket\{le="0.25",pool="etcd"\} [1-9]/);
    assert.match(text, /vipd_health_check_duration_seconds_bucket\{le="0.1",pool="etcd"\} 0/);
    health.close();
  });

  it('logs every transition with component, pool, backend, from, to and the probe detail, binding each key once', async () => {
    const logs = captureLogs();
    const bound = logs.logger.child({ component: 'health', pool: 'etcd' });
    const { clock, health } = pool((t) => ({ ok: t.key === a.key, latencyMs: 5 }), { logger: bound, backends: [a, b] });
    health.start();
    await clock.advance(3_000);
    health.close();
    const transitions = logs
      .records()
      .filter((r) => r.event === 'healthTransition')
      .map((r) => ({ component: r.component, pool: r.pool, backend: r.backend, from: r.from, to: r.to, detail: r.detail, level: r.level }))
      .sort((x, y) => String(x.backend).localeCompare(String(y.backend)));
    assert.deepEqual(transitions, [
      { component: 'health', pool: 'etcd', backend: a.key, from: 'unknown', to: 'healthy', detail: 'fake ok', level: 30 },
      { component: 'health', pool: 'etcd', backend: b.key, from: 'unknown', to: 'unhealthy', detail: 'fake fail', level: 40 },
    ]);
    for (const line of logs.lines) {
      assert.equal(line.match(/"component":/g)?.length ?? 0, 1, line);
      assert.ok((line.match(/"pool":/g)?.length ?? 0) <= 1, line);
    }
    assert.ok(logs.records().some((r) => r.event === 'healthProbe' && r.outcome === 'changePending'), 'probe results are logged at debug');
  });
});

describe('createPoolHealth lifecycle and validation', () => {
  it('start() and close() are idempotent; nothing probes after close, and start() after close() does nothing', async () => {
    const { clock, health, probe } = pool(() => ({ ok: true, latencyMs: 5 }));
    health.close();
    health.start();
    await clock.advance(5_000);
    assert.equal(probe.calls.length, 0);

    const second = pool(() => ({ ok: true, latencyMs: 5 }));
    second.health.start();
    second.health.start();
    await second.clock.advance(2_050);
    const calls = second.probe.calls.length;
    assert.equal(calls, 9, 'three backends, three probes each, not six');
    second.health.close();
    second.health.close();
    await second.clock.advance(5_000);
    assert.equal(second.probe.calls.length, calls);
    assert.equal(second.clock.pendingTimers(), 0);
  });

  it('rejects thresholds and timings no checker can honour, and a backend listed twice', () => {
    const bad: Array<[Partial<CheckSpec>, Endpoint[], RegExp]> = [
      [{ rise: 0 }, [a], /rise must be an integer ≥ 1/],
      [{ fall: 1.5 }, [a], /fall must be an integer ≥ 1/],
      [{ intervalMs: 0 }, [a], /intervalMs must be > 0/],
      [{ timeoutMs: Number.NaN }, [a], /timeoutMs must be > 0/],
      [{}, [a, endpoint('198.18.21.2', 2379)], /backend 198.18.21.2:2379 is listed twice/],
    ];
    for (const [spec, backends, message] of bad) {
      assert.throws(
        () => pool(() => ({ ok: true, latencyMs: 5 }), { spec, backends }),
        (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CONFIG' && message.test(err.message) && err.message.includes('pool etcd'),
      );
    }
  });
});
