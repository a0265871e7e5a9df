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
  const speaker = new FakeSpeaker({ now: () => clock.now() });
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
  assert.deepEqual(speaker.violations, [], 'the reconciler kept the Speaker contract');
});

test('reconciler: re-evaluating an unchanged world pushes nothing', async () => {
  const { speaker, world, reconciler } = setup();
  world.states = ['healthy', 'healthy'];
  for (let i = 0; i < 5; i++) reconciler.evaluate();
  await reconciler.idle();
  assert.equal(speaker.pushes.length, 1);
  assert.deepEqual(speaker.violations, [], 'the reconciler kept the Speaker contract');
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
  assert.deepEqual(speaker.violations, [], 'the reconciler kept the Speaker contract');
});

test('reconciler: a flapping pool changes the route at most twice in any hold-down window (T04)', async () => {
  const holdDownMs = 5000;
  const flapMs = 1500;
  const { clock, speaker, world, reconciler } = setup(holdDownMs);
  world.states = ['healthy'];
  reconciler.evaluate();
  await reconciler.idle();
  // Flap every 1.5 s for 60 s.
  for (let t = 0; t < 60_000; t += flapMs) {
    world.states = [(t / flapMs) % 2 === 0 ? 'unhealthy' : 'healthy'];
    reconciler.evaluate();
    await clock.advance(flapMs);
  }
  await reconciler.idle();
  const changes = speaker.applied;
  // Window by window, and every window: from each change, the hold-down window that starts there.
  let worst = 0;
  for (const first of changes) {
    const inWindow = changes.filter((c) => c.at >= first.at && c.at < first.at + holdDownMs);
    worst = Math.max(worst, inWindow.length);
    assert.ok(inWindow.length <= 2, `${inWindow.length} route changes in the hold-down window from ${first.at} ms: ${JSON.stringify(inWindow)}`);
  }
  console.log(`T04: flap 60 s every 1.5 s, hold-down 5 s: ${changes.length} route changes, at most ${worst} in any hold-down window (bound 2; unthrottled would be 40)`);
  // Throttled, not frozen: after every hold-down the route comes back at the next healthy phase. A cycle
  // is withdraw, 5 s held down, back within one flap, healthy for at most one flap: at most 8 s.
  assert.ok(changes.length >= 2 * Math.floor(60_000 / (holdDownMs + 2 * flapMs)), `the route must still follow the pool between hold-downs: ${changes.length} changes`);
  assert.deepEqual(speaker.violations, []);
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
  assert.deepEqual(speaker.violations, [], 'the reconciler kept the Speaker contract');
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
  assert.deepEqual(speaker.violations, [], 'the reconciler kept the Speaker contract');
});

test('FakeSpeaker records contract breaches instead of throwing them into the reconciler', async () => {
  const speaker = new FakeSpeaker();
  let release!: () => void;
  speaker.pushDelay = () => new Promise<void>((r) => (release = r));
  const first = speaker.setAdvertisements([{ prefix: '198.19.0.10/32', communities: [] }]);
  speaker.pushDelay = async () => {};
  await speaker.setAdvertisements([{ prefix: '198.19.0.10/32', communities: [] }, { prefix: '198.19.0.10/32', communities: [] }]);
  release();
  await first;
  await speaker.close();
  await speaker.setAdvertisements([]);
  assert.deepEqual(speaker.violations, [
    'concurrent setAdvertisements (198.19.0.10/32,198.19.0.10/32 while another push runs)',
    'duplicate prefixes in one set: 198.19.0.10/32,198.19.0.10/32',
    'setAdvertisements after close (empty set)',
  ]);
});
