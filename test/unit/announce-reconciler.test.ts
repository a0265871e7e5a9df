import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { VipInput } from '../../src/announce/decide';
import { AnnounceReconciler } from '../../src/announce/reconciler';
import type { HealthState, PoolSnapshot } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeSpeaker } from '../fakes/fake-speaker';

function snapshot(states: HealthState[]): PoolSnapshot {
  const backends = states.map((state, i) => ({ backend: endpoint(`198.18.2${i + 1}.2`, 2379), state, since: 0 }));
  return { pool: 'etcd', version: 1, backends, healthy: backends.filter((b) => b.state === 'healthy').map((b) => b.backend), settled: !states.includes('unknown') };
}

function setup(holdDownMs = 3000) {
  const clock = new FakeClock();
  const speaker = new FakeSpeaker();
  const metrics = createMetrics();
  const world = { states: ['unknown', 'unknown'] as HealthState[], drained: false };
  const inputs = (): VipInput => ({
    vip: '198.19.0.10',
    shuttingDown: false,
    drained: world.drained,
    vipBound: true,
    minHealthyBackends: 1,
    listeners: [{ id: 'cp:2379', bound: true, pool: snapshot(world.states) }],
  });
  const reconciler = new AnnounceReconciler({
    vips: [{ name: 'cp', advertisement: { prefix: '198.19.0.10/32', communities: ['65000:100'] }, inputs }],
    speaker,
    clock,
    logger: silentLogger(),
    metrics,
    holdDownMs,
  });
  return { clock, speaker, metrics, world, reconciler };
}

test('reconciler: nothing is pushed while starting; announce once healthy', async () => {
  const { speaker, world, reconciler } = setup();
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.pushes, [], 'no push while every backend is unknown');
  assert.equal(reconciler.status()[0]!.reason, 'starting');
  world.states = ['healthy', 'unknown'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.pushes, [['198.19.0.10/32']]);
  assert.equal(reconciler.status()[0]!.state, 'announced');
});

test('reconciler: re-evaluating an unchanged world pushes nothing', async () => {
  const { speaker, world, reconciler } = setup();
  world.states = ['healthy', 'healthy'];
  for (let i = 0; i < 5; i++) reconciler.evaluate();
  await reconciler.idle();
  assert.equal(speaker.pushes.length, 1);
});

test('reconciler: health withdrawal is held down; drain and undrain are not', async () => {
  const { clock, speaker, world, reconciler } = setup(3000);
  world.states = ['healthy', 'healthy'];
  reconciler.evaluate();
  await reconciler.idle();
  world.states = ['unhealthy', 'unhealthy'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, []);
  assert.equal(reconciler.status()[0]!.reason, 'noHealthyBackends');

  await clock.advance(1000);
  world.states = ['healthy', 'unhealthy'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, [], 'still held down 1 s after the withdrawal');
  assert.equal(reconciler.status()[0]!.reason, 'holdDown');

  await clock.advance(1999);
  assert.deepEqual(speaker.current, [], 'held down until 3 s');
  await clock.advance(2);
  await reconciler.idle();
  assert.deepEqual(speaker.current, ['198.19.0.10/32'], 'announced by the hold-down timer itself, without a new input change');

  world.drained = true;
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, []);
  world.drained = false;
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, ['198.19.0.10/32'], 'undrain is not held down');
});

test('reconciler: a flapping pool changes the route at most twice per hold-down window', async () => {
  const { clock, speaker, world, reconciler } = setup(5000);
  world.states = ['healthy'];
  reconciler.evaluate();
  await reconciler.idle();
  // Flap every 1.5 s for 60 s.
  for (let t = 0; t < 60_000; t += 1500) {
    world.states = [(t / 1500) % 2 === 0 ? 'unhealthy' : 'healthy'];
    reconciler.evaluate();
    await clock.advance(1500);
  }
  await reconciler.idle();
  const changes = speaker.pushes.length;
  console.log(`flap 60 s every 1.5 s, hold-down 5 s: ${changes} route changes (unthrottled would be 40)`);
  assert.ok(changes <= 2 * Math.ceil(60_000 / 5000) + 1, `at most 2 changes per hold-down window, got ${changes}`);
});

test('reconciler: pushes are serial and the latest set wins; failures are survived', async () => {
  const { speaker, world, reconciler } = setup(0);
  let release!: () => void;
  speaker.pushDelay = () => new Promise<void>((r) => (release = r));
  world.states = ['healthy'];
  reconciler.evaluate();
  await flushMicrotasks();
  world.states = ['unhealthy'];
  reconciler.evaluate();
  world.states = ['healthy'];
  reconciler.evaluate();
  speaker.pushDelay = async () => {};
  release();
  await reconciler.idle();
  assert.deepEqual(speaker.current, ['198.19.0.10/32']);
  assert.ok(speaker.pushes.length <= 2, 'intermediate states were coalesced');

  speaker.failNext = 1;
  world.states = ['unhealthy'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.equal(reconciler.status()[0]!.state, 'withdrawn', 'the decision stands even when a push fails');
});

test('reconciler: withdrawAll on shutdown empties the set and blocks later announcements', async () => {
  const { speaker, world, reconciler, metrics } = setup();
  world.states = ['healthy'];
  reconciler.evaluate();
  await reconciler.idle();
  await reconciler.withdrawAll('shuttingDown');
  assert.deepEqual(speaker.current, []);
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, []);
  const text = await metrics.registry.metrics();
  assert.match(text, /vipd_announce_vip_announced\{vip="cp"\} 0/);
  assert.match(text, /vipd_announce_decisions_total\{vip="cp",action="withdraw",reason="shuttingDown"\} 1/);
});
