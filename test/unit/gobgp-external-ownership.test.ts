import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { Metrics } from '../../src/lib/metrics';
import type { ApiSessionState } from '../../src/speaker/gobgp/api-types';
import { routeFromAdvertisement } from '../../src/speaker/gobgp/codec';
import type { GobgpSpeakerHandle } from '../../src/speaker/gobgp/gobgp-speaker';
import { deleteMarkedPaths, ownerMark, routerIdAsOwnerId } from '../../src/speaker/gobgp/ownership';
import type { Advertisement } from '../../src/speaker/speaker';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeGobgpClient } from '../fakes/gobgp-fake-client';
import { FAKE_TOR as TOR, fakeGobgpSpeaker, destroyedAfterEach } from '../fakes/gobgp-speaker-harness';

/**
 * Issue 11 points 2 and 6 against the fake gobgpd: an external gobgpd shared with others (vipd deletes
 * only paths carrying its mark), the read-back of each peer's adj-RIB-out (drift logged, counted,
 * repaired) and gobgpd refusing calls (logged, counted, retried, reported in sync()).
 */
const MARK = ownerMark(65001, routerIdAsOwnerId('198.18.0.1'));
const A: Advertisement = { prefix: '198.19.0.10/32', communities: ['65000:100'] };
const B: Advertisement = { prefix: '198.19.0.11/32', communities: [] };
const marked = (ad: Advertisement) => routeFromAdvertisement({ ...ad, largeCommunities: [...(ad.largeCommunities ?? []), MARK] });
const plain = (prefix: string) => routeFromAdvertisement({ prefix, communities: [] });

interface Harness {
  speaker: GobgpSpeakerHandle;
  fake: FakeGobgpClient;
  clock: FakeClock;
  metrics: Metrics;
}
const harnesses = destroyedAfterEach<Harness>();

async function startHarness(o: { mark?: boolean; peerState?: ApiSessionState; before?: (fake: FakeGobgpClient) => void } = {}): Promise<Harness> {
  const h = fakeGobgpSpeaker({
    peerState: o.peerState,
    before: o.before,
    options: { retryBackoff: { initialMs: 200, maxMs: 1000 }, ...(o.mark !== false && { ownerMark: MARK }) },
  });
  await h.speaker.start();
  await flushMicrotasks();
  harnesses.push(h);
  return h;
}


async function count(metrics: Metrics, name: 'pathsRepaired' | 'drift' | 'apiErrors', labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metrics[name].get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l)).reduce((s, v) => s + v.value, 0);
}

const prefixes = (fake: FakeGobgpClient) => fake.localRoutes().map((r) => r.prefix);

describe('external gobgpd: vipd owns only the paths carrying its mark', () => {
  test('the mark is <asn>:1986621540:<router id as a number>', () => {
    assert.equal(MARK, '65001:1986621540:3323068417');
  });

  test('every path vipd adds carries the mark, next to the VIP\'s own large communities', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, { ...B, largeCommunities: ['65000:1:2'] }]);
    assert.deepEqual(h.fake.localRoutes(), [marked(A), marked({ ...B, largeCommunities: ['65000:1:2'] })]);
  });

  test('a path someone else added stays through pushes, intervals and close; it is never counted as repaired', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.injectLocal(plain('0.0.0.0/0'));
    h.fake.injectLocal(plain('198.19.0.99/32'));
    await h.clock.advance(9000);
    await h.speaker.setAdvertisements([]);
    assert.deepEqual(prefixes(h.fake), ['0.0.0.0/0', '198.19.0.99/32']);
    await h.speaker.setAdvertisements([A]);
    await h.speaker.close();
    assert.deepEqual(prefixes(h.fake), ['0.0.0.0/0', '198.19.0.99/32']);
    assert.equal(await count(h.metrics, 'pathsRepaired', { op: 'deleted' }), 0);
  });

  test("a previous vipd's marked path is deleted at start and counted; a wanted one is kept as it is", async () => {
    const h = await startHarness({
      before: (fake) => {
        fake.injectLocal(marked(B));
        fake.injectLocal(marked(A));
        fake.injectLocal(plain('0.0.0.0/0'));
      },
    });
    // Nothing desired yet: start removed both stale paths, not the foreign one.
    assert.deepEqual(prefixes(h.fake), ['0.0.0.0/0']);
    assert.equal(await count(h.metrics, 'pathsRepaired', { op: 'deleted' }), 2);
  });

  test('a marked path added by hand later is deleted by the next interval', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.injectLocal(marked(B));
    await h.clock.advance(3000);
    assert.deepEqual(prefixes(h.fake), ['198.19.0.10/32']);
    assert.equal(await count(h.metrics, 'pathsRepaired', { op: 'deleted' }), 1);
  });

  test('an external gobgpd that restarts forgets the paths; vipd announces them again when its API is back', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, B]);
    h.fake.setReachable(false);
    h.fake.restartDaemon();
    await h.clock.advance(1000);
    assert.deepEqual(prefixes(h.fake), []);
    h.fake.setReachable(true);
    await h.clock.advance(5000);
    assert.deepEqual(h.fake.localRoutes(), [marked(A), marked(B)]);
    assert.equal(await count(h.metrics, 'pathsRepaired', { op: 'added' }), 2);
  });

  test('without a mark (managed gobgpd) every local path is vipd\'s: a foreign one is deleted and counted (T27)', async () => {
    const h = await startHarness({ mark: false });
    await h.speaker.setAdvertisements([A]);
    h.fake.injectLocal(plain('0.0.0.0/0'));
    await h.clock.advance(3000);
    assert.deepEqual(prefixes(h.fake), ['198.19.0.10/32']);
    assert.equal(await count(h.metrics, 'pathsRepaired', { op: 'deleted' }), 1);
  });

  test("deleteMarkedPaths (the guardian's sweep) deletes the marked local paths only", async () => {
    const fake = new FakeGobgpClient();
    fake.injectLocal(marked(A));
    // Another node's mark: not this vipd's.
    fake.injectLocal(routeFromAdvertisement({ ...B, largeCommunities: ['65001:1986621540:7'] }));
    fake.injectLocal(plain('0.0.0.0/0'));
    fake.injectLearned(marked({ prefix: '198.19.0.50/32', communities: [] }), TOR);
    assert.deepEqual(await deleteMarkedPaths(fake, MARK), ['198.19.0.10/32']);
    assert.deepEqual(prefixes(fake), ['0.0.0.0/0', '198.19.0.11/32']);
    assert.deepEqual(fake.violations, []);
  });
});

describe('read-back: adj-RIB-out against the desired set', () => {
  test('a path missing from an established peer\'s adj-RIB-out is a drift after two quiet readings: logged, counted, repaired', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, B]);
    assert.deepEqual(h.speaker.sync().desired.get(TOR), ['198.19.0.10/32', '198.19.0.11/32']);
    assert.deepEqual(h.speaker.advertised().get(TOR), ['198.19.0.10/32', '198.19.0.11/32']);
    h.fake.hideFromAdjOut(TOR, A.prefix);
    await h.clock.advance(3000);
    assert.equal(await count(h.metrics, 'drift'), 0, 'one reading is not enough');
    h.fake.clearCalls();
    await h.clock.advance(3000);
    assert.equal(await count(h.metrics, 'drift', { peer: TOR, kind: 'missing' }), 1);
    assert.deepEqual(h.speaker.sync().drift.get(TOR), { missing: ['198.19.0.10/32'], extra: [] });
    assert.deepEqual(h.fake.ribCalls().filter((c) => c.method === 'addPath').map((c) => c.prefix), ['198.19.0.10/32'], 'repaired by adding it again');
    await h.clock.advance(3000);
    assert.deepEqual(h.speaker.advertised().get(TOR), ['198.19.0.10/32', '198.19.0.11/32']);
    assert.equal(h.speaker.sync().drift.size, 0, 'cleared once the peer has it');
    assert.equal(await count(h.metrics, 'drift'), 1);
  });

  test('a path vipd withdrew that its adj-RIB-out still holds is an extra drift, deleted again; someone else\'s path is not', async () => {
    const h = await startHarness({ peerState: 'ESTABLISHED' });
    await h.speaker.setAdvertisements([A, B]);
    await h.speaker.setAdvertisements([A]);
    h.fake.staleAdjOut(TOR, marked(B));
    h.fake.injectLocal(plain('0.0.0.0/0'));
    await h.clock.advance(6000);
    assert.equal(await count(h.metrics, 'drift', { peer: TOR, kind: 'extra' }), 1);
    assert.equal(await count(h.metrics, 'drift', { kind: 'missing' }), 0);
    assert.ok(h.fake.calls.some((c) => c.method === 'deletePath' && c.prefix === B.prefix));
    assert.deepEqual(prefixes(h.fake), ['0.0.0.0/0', '198.19.0.10/32']);
  });

  test('no drift while applying: a difference that each push changes is never counted', async () => {
    const h = await startHarness();
    for (let i = 0; i < 4; i++) {
      await h.speaker.setAdvertisements(i % 2 === 0 ? [A] : [A, B]);
      h.fake.hideFromAdjOut(TOR, A.prefix);
      await h.clock.advance(3000);
    }
    assert.equal(await count(h.metrics, 'drift'), 0);
  });

  test('a peer that is not established has no drift: its adj-RIB-out is empty and expected so', async () => {
    const h = await startHarness({ peerState: 'ACTIVE' });
    await h.speaker.setAdvertisements([A]);
    await h.clock.advance(9000);
    assert.deepEqual(h.speaker.advertised().get(TOR), []);
    assert.equal(await count(h.metrics, 'drift'), 0);
  });
});

describe('gobgpd refuses a call', () => {
  test('logged with its reply, counted, reported as failing with what is not applied, retried with back-off', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A]);
    h.fake.failNext('addPath', grpc.status.INVALID_ARGUMENT);
    await assert.rejects(h.speaker.setAdvertisements([A, B]), /AddPath/);
    assert.equal(await count(h.metrics, 'apiErrors', { method: 'AddPath', code: 'INVALID_ARGUMENT' }), 1);
    const sync = h.speaker.sync();
    assert.equal(sync.state, 'failing');
    assert.deepEqual(sync.pendingAdd, ['198.19.0.11/32']);
    assert.deepEqual(sync.pendingDelete, []);
    assert.equal(sync.lastError?.call, 'AddPath 198.19.0.11/32');
    assert.match(sync.lastError!.reply, /INVALID_ARGUMENT: injected/);
    // The retry comes after the back-off (200..1000 ms), long before the 3 s interval.
    await h.clock.advance(250);
    assert.deepEqual(prefixes(h.fake), ['198.19.0.10/32', '198.19.0.11/32']);
    assert.equal(h.speaker.sync().state, 'in-sync');
    assert.equal(h.speaker.sync().lastError, undefined);
  });

  test('a refused delete leaves the path reported as pending delete until a retry succeeds', async () => {
    const h = await startHarness();
    await h.speaker.setAdvertisements([A, B]);
    h.fake.failNext('deletePath', grpc.status.UNKNOWN);
    h.fake.failNext('deletePath', grpc.status.UNKNOWN);
    await assert.rejects(h.speaker.setAdvertisements([A]));
    assert.deepEqual(h.speaker.sync().pendingDelete, ['198.19.0.11/32']);
    await h.clock.advance(250);
    assert.equal(h.speaker.sync().state, 'failing', 'the first retry is refused too');
    assert.equal(await count(h.metrics, 'apiErrors', { method: 'DeletePath' }), 2);
    await h.clock.advance(1000);
    assert.equal(h.speaker.sync().state, 'in-sync');
    assert.deepEqual(prefixes(h.fake), ['198.19.0.10/32']);
  });
});
