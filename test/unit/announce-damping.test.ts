import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_DAMPING, FlapDamping, decayed, type DampingSpec } from '../../src/announce/damping';
import type { VipInput } from '../../src/announce/decide';
import { AnnounceReconciler } from '../../src/announce/reconciler';
import type { HealthState, PoolSnapshot } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeSpeaker } from '../fakes/fake-speaker';

/** RFC 2439 section 4.8.1: the figure of merit decays as p(t) = p0 * 2^(-t / half-life). */
const rfc2439 = (p0: number, tMs: number, halfLifeMs: number): number => p0 * Math.exp((-Math.LN2 * tMs) / halfLifeMs);

test('damping: the penalty decays as RFC 2439 says, step by step on the fake clock', async () => {
  const clock = new FakeClock();
  const d = new FlapDamping(DEFAULT_DAMPING);
  d.withdrawn(clock.now());
  for (let t = 0; t <= 120_000; t += 7_500) {
    const expected = rfc2439(1000, t, 30_000);
    assert.ok(Math.abs(d.penalty(clock.now()) - expected) < 1e-6, `t=${t}: ${d.penalty(clock.now())} vs ${expected}`);
    await clock.advance(7_500);
  }
  assert.ok(Math.abs(decayed(1000, 30_000, 30_000) - 500) < 1e-9, 'one half-life halves it');
});

test('damping: penalties add up after decay (1000 + 630 + 397 = 2027 for withdrawals 20 s apart)', () => {
  const d = new FlapDamping(DEFAULT_DAMPING);
  d.withdrawn(0);
  d.withdrawn(20_000);
  d.withdrawn(40_000);
  const expected = 1000 + rfc2439(1000, 20_000, 30_000) + rfc2439(1000, 40_000, 30_000);
  assert.ok(Math.abs(d.penalty(40_000) - expected) < 1e-6);
  assert.equal(Math.round(d.penalty(40_000)), 2027);
});

test('damping defaults: two withdrawals never suppress, three in a minute (20 s apart) do', () => {
  const two = new FlapDamping(DEFAULT_DAMPING);
  assert.equal(two.withdrawn(0), false);
  assert.equal(two.withdrawn(1), false, 'two withdrawals 1 ms apart stay just under 2000');
  assert.equal(two.isSuppressed(1), false);
  const three = new FlapDamping(DEFAULT_DAMPING);
  three.withdrawn(0);
  three.withdrawn(20_000);
  assert.equal(three.withdrawn(40_000), true, 'the third withdrawal suppresses');
  // Reuse when 2027 * 2^(-t/30 s) < 750: t = 30 s * log2(2027 / 750) = 43.0 s.
  const reuseAt = three.reuseAt(40_000)!;
  assert.ok(Math.abs(reuseAt - (40_000 + 30_000 * Math.log2(three.penalty(40_000) / 750))) < 1e-6);
  assert.ok(Math.abs(reuseAt - 40_000 - 43_000) < 100, `suppressed for ${reuseAt - 40_000} ms`);
  assert.equal(three.isSuppressed(reuseAt - 1), true);
  assert.equal(three.isSuppressed(reuseAt + 1), false);
  assert.equal(three.isSuppressed(reuseAt + 2), false, 'a suppression that ended stays ended');
});

test('damping: the ceiling bounds a suppression to maxSuppress after the last flap', () => {
  const spec: DampingSpec = { ...DEFAULT_DAMPING, maxSuppressMs: 60_000 };
  const d = new FlapDamping(spec);
  for (let i = 0; i < 50; i++) d.withdrawn(i);
  assert.ok(d.penalty(49) <= 750 * 4 + 1e-6, 'ceiling: reuse * 2^(max / half-life)');
  assert.ok(d.reuseAt(49)! - 49 <= 60_000 + 1, 'reused within maxSuppress');
});

function snapshot(states: HealthState[]): PoolSnapshot {
  const backends = states.map((state, i) => ({ backend: endpoint(`198.18.2${i + 1}.2`, 2379), state, since: 0 }));
  return { pool: 'etcd', version: 1, backends, healthy: backends.filter((b) => b.state === 'healthy').map((b) => b.backend), settled: !states.includes('unknown') };
}

test('reconciler with damping: the third flap suppresses, reason damped, penalty in status and metrics; reuse brings it back by itself', async () => {
  const clock = new FakeClock();
  const speaker = new FakeSpeaker({ now: () => clock.now() });
  const metrics = createMetrics();
  const world = { states: ['healthy'] as HealthState[] };
  const inputs = (): VipInput => ({ vip: '198.19.0.10', shuttingDown: false, drained: false, vipBound: true, minHealthyBackends: 1, listeners: [{ id: 'cp:2379', bound: true, pool: snapshot(world.states) }] });
  const reconciler = new AnnounceReconciler({
    vips: [{ name: 'cp', advertisement: { prefix: '198.19.0.10/32', communities: [] }, damping: DEFAULT_DAMPING, inputs }],
    speaker,
    clock,
    logger: silentLogger(),
    metrics,
    holdDownMs: 3000,
  });
  const step = async (states: HealthState[], ms: number) => {
    world.states = states;
    reconciler.evaluate();
    await clock.advance(ms);
    await reconciler.idle();
  };
  await step(['healthy'], 10_000);
  for (let flap = 0; flap < 2; flap++) {
    await step(['unhealthy'], 5_000);
    await step(['healthy'], 15_000);
    assert.equal(reconciler.status()[0]!.state, 'announced', `back after flap ${flap + 1} (hold-down only)`);
  }
  await step(['unhealthy'], 5_000);
  world.states = ['healthy'];
  reconciler.evaluate();
  await reconciler.idle();
  const s = reconciler.status()[0]!;
  assert.equal(s.state, 'withdrawn');
  assert.equal(s.reason, 'damped');
  // 2027 at the third withdrawal, 5 s of decay since: 2027 * 2^(-5/30) = 1806.
  assert.equal(s.penalty, Math.round(2027 * Math.pow(2, -5 / 30)));
  assert.ok(s.suppressedUntil !== undefined && s.suppressedUntil > clock.wallNow());
  assert.match(await metrics.registry.metrics(), new RegExp(`vipd_announce_damping_penalty\\{vip="cp"\\} ${s.penalty}`));
  assert.deepEqual(speaker.current, []);
  await clock.advance(s.suppressedUntil! - clock.wallNow() + 10);
  await reconciler.idle();
  assert.equal(reconciler.status()[0]!.state, 'announced', 'reused without a new input change');
  assert.ok(reconciler.status()[0]!.penalty <= 750, 'decayed to the reuse threshold');
  assert.deepEqual(speaker.violations, []);
});
