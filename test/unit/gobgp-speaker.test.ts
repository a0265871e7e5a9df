import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { VipdError } from '../../src/lib/errors';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { routeFromAdvertisement } from '../../src/speaker/gobgp/codec';
import { createGobgpSpeaker } from '../../src/speaker/gobgp/gobgp-speaker';
import type { Advertisement, Speaker, SpeakerEvent } from '../../src/speaker/speaker';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeGobgpClient } from '../fakes/gobgp-fake-client';
import { FAKE_TOR as TOR, fakeGobgpSpeaker, destroyedAfterEach } from '../fakes/gobgp-speaker-harness';

const A: Advertisement = { prefix: '198.19.0.10/32', communities: ['65000:100'] };
const A_DRAINING: Advertisement = { prefix: '198.19.0.10/32', communities: ['65000:100', '65535:0'] };
const B: Advertisement = { prefix: '2001:db8:100::10/128', communities: ['65000:200'], med: 5 };
const C: Advertisement = { prefix: '198.19.0.12/32', communities: [], localPref: 150 };

interface Harness {
  speaker: Speaker;
  fake: FakeGobgpClient;
  clock: FakeClock;
  metrics: Metrics;
  events: SpeakerEvent[];
}

const harnesses = destroyedAfterEach<Harness>();

async function startHarness(): Promise<Harness> {
  const { speaker, fake, clock, metrics } = fakeGobgpSpeaker({
    peerState: 'ACTIVE',
    onDial: (address) => assert.equal(address, '127.0.0.1:50051'),
  });
  const events: SpeakerEvent[] = [];
  speaker.onEvent((e) => events.push(e));
  await speaker.start();
  await flushMicrotasks();
  const h = { speaker, fake, clock, metrics, events };
  harnesses.push(h);
  return h;
}


const routes = (...ads: Advertisement[]) => ads.map(routeFromAdvertisement).sort((a, b) => a.prefix.localeCompare(b.prefix));

async function counter(metrics: Metrics, name: 'pathsRepaired' | 'reconciles' | 'pushes' | 'peerTransitions', labels: Record<string, string>): Promise<number> {
  const { values } = await metrics[name].get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l)).reduce((sum, v) => sum + v.value, 0);
}

function ribCallSummary(fake: FakeGobgpClient): string[] {
  return fake.ribCalls().filter((c) => c.method !== 'listPath').map((c) => `${c.method} ${c.prefix}`);
}

describe('GobgpSpeaker: declarative pushes', () => {
  test('step table: each push leaves exactly the desired set, with only the calls needed', async () => {
    const h = await startHarness();
    const steps: ReadonlyArray<{ name: string; ads: Advertisement[]; calls: string[] }> = [
      { name: 'announce both', ads: [A, B], calls: ['addPath 198.19.0.10/32', 'addPath 2001:db8:100::10/128'] },
      { name: 'same set again', ads: [B, A], calls: [] },
      { name: 'drain community on A', ads: [A_DRAINING, B], calls: ['addPath 198.19.0.10/32'] },
      { name: 'withdraw A', ads: [B], calls: ['deletePath 198.19.0.10/32'] },
      { name: 'swap B for C', ads: [C], calls: ['addPath 198.19.0.12/32', 'deletePath 2001:db8:100::10/128'] },
      { name: 'withdraw all', ads: [], calls: ['deletePath 198.19.0.12/32'] },
    ];
    for (const step of steps) {
      h.fake.clearCalls();
      await h.speaker.setAdvertisements(step.ads);
      assert.deepEqual(h.fake.localRoutes(), routes(...step.ads), step.name);
      assert.deepEqual(ribCallSummary(h.fake), step.calls, step.name);
    }
    assert.equal(await counter(h.metrics, 'pathsRepaired', {}), 0, 'intended changes are not repairs');
    assert.equal(await counter(h.metrics, 'pushes', { result: 'ok' }), steps.length);
  });

  test('pushes run one at a time and the latest wins', async () => {
    const h = await startHarness();
    const release = h.fake.hold();
    const first = h.speaker.setAdvertisements([A]);
    await flushMicrotasks();
    const second = h.speaker.setAdvertisements([B]);
    const third = h.speaker.setAdvertisements([C]);
    release();
    await Promise.all([first, second, third]);
    assert.deepEqual(h.fake.localRoutes(), routes(C));
    assert.equal(h.fake.ribConcurrency, 1);
    assert.ok(!ribCallSummary(h.fake).includes('addPath 2001:db8:100::10/128'), 'the superseded set [B] is never applied');
    assert.equal(await counter(h.metrics, 'reconciles', { trigger: 'push' }), 2, 'the second and third pushes share one pass');
  });

  test('bad input is rejected with VIPD_ERR_CODEC and the previous set stays in force', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    await assert.rejects(h.speaker.setAdvertisements([B, { prefix: '198.19.0.1/24', communities: [] }]), { code: 'VIPD_ERR_CODEC' });
    await assert.rejects(h.speaker.setAdvertisements([A, A_DRAINING]), { code: 'VIPD_ERR_CODEC', message: /twice with different attributes/ });
    await h.clock.advance(3000);
    assert.deepEqual(h.fake.localRoutes(), routes(A));
  });

  test('a push fails with VIPD_ERR_GOBGP_API when gobgpd is unreachable; the set is applied once it is back', async () => {
    const h = await startHarness();
    h.fake.setReachable(false);
    await flushMicrotasks();
    await assert.rejects(h.speaker.setAdvertisements([A, B]), (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_GOBGP_API');
    assert.ok(h.events.some((e) => e.type === 'daemon' && !e.up));
    assert.equal((await h.metrics.daemonUp.get()).values[0]!.value, 0);
    h.fake.setReachable(true);
    await h.clock.advance(3000);
    assert.deepEqual(h.fake.localRoutes(), routes(A, B));
    assert.deepEqual(h.events.flatMap((e) => (e.type === 'daemon' ? [e.up] : [])), [true, false, true]);
    assert.equal((await h.metrics.daemonUp.get()).values[0]!.value, 1);
  });

  test('a failed AddPath is retried by the next reconciliation', async () => {
    const h = await startHarness();
    h.fake.failNext('addPath', grpc.status.UNKNOWN);
    await assert.rejects(h.speaker.setAdvertisements([A]), { code: 'VIPD_ERR_GOBGP_API', message: /AddPath/ });
    assert.equal(await counter(h.metrics, 'pushes', { result: 'error' }), 1);
    await h.clock.advance(3000);
    assert.deepEqual(h.fake.localRoutes(), routes(A));
  });
});

describe('GobgpSpeaker: reconciliation with what gobgpd really has', () => {
  test('a local path vipd did not add is deleted at the next interval and counted; peer paths are left alone', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.injectLocal(routeFromAdvertisement({ prefix: '0.0.0.0/0', communities: [] }));
    h.fake.injectLearned(routeFromAdvertisement({ prefix: '198.19.99.0/24', communities: [] }), TOR);
    h.fake.clearCalls();
    await h.clock.advance(3000);
    assert.deepEqual(h.fake.localRoutes(), routes(A));
    assert.deepEqual(ribCallSummary(h.fake), ['deletePath 0.0.0.0/0']);
    assert.equal(await counter(h.metrics, 'pathsRepaired', { op: 'deleted' }), 1);
    assert.ok(h.events.some((e) => e.type === 'reconciled' && e.trigger === 'interval' && e.deleted === 1));
  });

  test('a local path changed behind vipd is put back and counted as a repair', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.injectLocal(routeFromAdvertisement({ ...A, med: 999 }));
    await h.clock.advance(3000);
    assert.deepEqual(h.fake.localRoutes(), routes(A));
    assert.equal(await counter(h.metrics, 'pathsRepaired', { op: 'added' }), 1);
  });

  test('paths forgotten by a gobgpd restart are re-added as soon as the watch stream breaks', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, B]);
    h.fake.restartDaemon();
    assert.deepEqual(h.fake.localRoutes(), []);
    await flushMicrotasks();
    assert.deepEqual(h.fake.localRoutes(), routes(A, B), 'no clock advance needed: the stream error triggers it');
    assert.equal(await counter(h.metrics, 'pathsRepaired', { op: 'added' }), 2);
    assert.equal(await counter(h.metrics, 'reconciles', { trigger: 'watch-error', result: 'ok' }), 1);
  });

  test('after an outage the reopened watch stream triggers a reconnect reconciliation', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.setReachable(false);
    h.fake.restartDaemon();
    await flushMicrotasks();
    assert.equal(h.fake.watchLive, false);
    h.fake.setReachable(true);
    // Watch back-off starts at 250 ms (±50 %), well before the 3 s interval.
    await h.clock.advance(400);
    assert.equal(h.fake.watchLive, true);
    assert.deepEqual(h.fake.localRoutes(), routes(A));
    assert.equal(await counter(h.metrics, 'reconciles', { trigger: 'reconnect', result: 'ok' }), 1);
  });

  test('reconciles every interval without touching a RIB that already matches', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, B]);
    h.fake.clearCalls();
    await h.clock.advance(9000);
    assert.equal(await counter(h.metrics, 'reconciles', { trigger: 'interval', result: 'ok' }), 3);
    assert.deepEqual(ribCallSummary(h.fake), []);
    assert.equal(h.fake.ribCalls().length, 6, 'two ListPath (IPv4, IPv6) per pass');
  });
});

describe('GobgpSpeaker: peers', () => {
  test('peer states follow WatchEvent; transitions are counted and emitted', async () => {
    const h = await startHarness();
    assert.equal(h.speaker.peers()[0]!.state, 'active');
    h.fake.setPeerState(TOR, 'OPENSENT');
    h.fake.setPeerState(TOR, 'ESTABLISHED');
    assert.deepEqual(h.speaker.peers().map((p) => [p.address, p.asn, p.state]), [[TOR, 65000, 'established']]);
    assert.deepEqual(
      h.events.filter((e) => e.type === 'peer'),
      [
        { type: 'peer', peer: TOR, from: 'unknown', to: 'active' },
        { type: 'peer', peer: TOR, from: 'active', to: 'opensent' },
        { type: 'peer', peer: TOR, from: 'opensent', to: 'established' },
      ],
    );
    assert.equal(await counter(h.metrics, 'peerTransitions', { peer: TOR, to: 'established' }), 1);
    const gauge = (await h.metrics.peerState.get()).values.filter((v) => v.value === 1).map((v) => v.labels.state);
    assert.deepEqual(gauge, ['established']);
    h.fake.setReachable(false);
    assert.equal(h.speaker.peers()[0]!.state, 'unknown', 'an unreachable daemon tells nothing about sessions');
  });
});

describe('GobgpSpeaker: lifecycle', () => {
  test('close() withdraws every path, stops all background work and refuses new pushes', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, B]);
    h.fake.injectLocal(routeFromAdvertisement(C));
    await h.speaker.close();
    assert.deepEqual(h.fake.localRoutes(), []);
    assert.equal(h.fake.isClosed, true);
    assert.equal(h.fake.watchLive, false);
    assert.equal(h.clock.pendingTimers(), 0);
    await assert.rejects(h.speaker.setAdvertisements([A]), { code: 'VIPD_ERR_CLOSED' });
    await h.speaker.close();
    assert.equal((await h.metrics.pathsAdvertised.get()).values[0]!.value, 0);
  });

  test('destroy() stops at once without withdrawing', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.clearCalls();
    h.speaker.destroy();
    h.speaker.destroy();
    assert.deepEqual(h.fake.localRoutes(), routes(A));
    assert.deepEqual(h.fake.ribCalls(), []);
    assert.equal(h.fake.isClosed, true);
    assert.equal(h.clock.pendingTimers(), 0);
  });

  test('a push made before start() is applied by start()', async () => {
    const clock = new FakeClock();
    const fake = new FakeGobgpClient();
    const speaker = createGobgpSpeaker({
      asn: 65001,
      routerId: '198.18.0.1',
      manage: false,
      api: 'unix:/run/gobgpd.sock',
      peers: [],
      clock,
      logger: silentLogger(),
      metrics: createMetrics(),
      clientFactory: () => fake,
    });
    harnesses.push({ speaker, fake, clock, metrics: createMetrics(), events: [] });
    await speaker.setAdvertisements([A]);
    assert.deepEqual(fake.localRoutes(), []);
    await speaker.start();
    assert.deepEqual(fake.localRoutes(), routes(A));
  });

  test('an external gobgpd that is down at start does not fail start(); it is reconciled once up', async () => {
    const clock = new FakeClock();
    const fake = new FakeGobgpClient();
    fake.setReachable(false);
    const speaker = createGobgpSpeaker({
      asn: 65001,
      routerId: '198.18.0.1',
      manage: false,
      api: '127.0.0.1:50051',
      peers: [],
      startTimeoutMs: 1000,
      clock,
      logger: silentLogger(),
      metrics: createMetrics(),
      clientFactory: () => fake,
    });
    harnesses.push({ speaker, fake, clock, metrics: createMetrics(), events: [] });
    await speaker.setAdvertisements([A]);
    const started = speaker.start();
    await clock.advance(1000);
    await started;
    assert.deepEqual(fake.localRoutes(), []);
    fake.setReachable(true);
    await clock.advance(3000);
    assert.deepEqual(fake.localRoutes(), routes(A));
  });
});
