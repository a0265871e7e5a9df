import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { AnnounceReconciler } from '../../src/announce/reconciler';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import { FakeClock } from '../fakes/fake-clock';
import { FakeSpeaker } from '../fakes/fake-speaker';
import { FakeHealth, testPoolSpec } from '../fakes/proxy-harness';

/**
 * T32 in the unit suite: the load view tells the reconciler when a drain or an ejection changes what a
 * pool can serve (an ejection ends by time alone), and the reconciler withdraws a VIP whose pool has no
 * usable backend and announces it again, with no hold-down, once one is back.
 */
const a = endpoint('127.0.0.1', 7001);
const b = endpoint('127.0.0.1', 7002);
const outlier = { consecutiveConnectFailures: 2, baseEjectionMs: 5_000, maxEjectionMs: 20_000 };

function setUp(backends: readonly Endpoint[]) {
  const clock = new FakeClock();
  const metrics = createMetrics();
  const health = new FakeHealth(backends);
  const load = new BackendLoadTracker({ spec: testPoolSpec(backends, { outlier }), health, metrics, clock });
  const speaker = new FakeSpeaker();
  const reconciler = new AnnounceReconciler({
    vips: [
      {
        name: 'cp',
        advertisement: { prefix: '198.19.0.10/32', communities: [] },
        inputs: () => ({ vip: '198.19.0.10', shuttingDown: false, drained: false, vipBound: true, minHealthyBackends: 1, listeners: [{ id: 'cp:6443', bound: true, pool: load.snapshot(), ...load.outOfService() }] }),
      },
    ],
    speaker,
    clock,
    logger: silentLogger(),
    metrics,
    holdDownMs: 3000,
  });
  let changes = 0;
  load.onServiceChange(() => {
    changes++;
    reconciler.evaluate();
  });
  reconciler.evaluate();
  speakers.push(speaker);
  return { clock, load, speaker, reconciler, changes: () => changes };
}

const speakers: FakeSpeaker[] = [];
afterEach(() => {
  for (const s of speakers.splice(0)) assert.deepEqual(s.violations, [], 'speaker contract violations');
});

describe('pool service changes reach the announce decision', () => {
  it('draining every backend withdraws (noUsableBackends); undraining one announces again at once', async () => {
    const { load, speaker, reconciler, changes } = setUp([a, b]);
    await reconciler.idle();
    assert.deepEqual(speaker.current, ['198.19.0.10/32']);
    load.drainBackend(a.key, true);
    await reconciler.idle();
    assert.deepEqual(speaker.current, ['198.19.0.10/32'], 'one usable backend is enough');
    load.drainBackend(b.key, true);
    await reconciler.idle();
    assert.deepEqual(speaker.current, []);
    assert.equal(reconciler.status()[0]!.reason, 'noUsableBackends');
    assert.deepEqual(load.outOfService(), { drained: [a.key, b.key], ejected: [] });
    load.drainBackend(b.key, true);
    assert.equal(changes(), 2, 'a drain that changes nothing tells nobody');
    load.drainBackend(a.key, false);
    await reconciler.idle();
    assert.deepEqual(speaker.current, ['198.19.0.10/32'], 'no hold-down after an undrain');
  });

  it('an ejection and its end by time are told, so a pool emptied by drain + ejection comes back when the ejection ends', async () => {
    const { clock, load, speaker, reconciler, changes } = setUp([a, b]);
    await reconciler.idle();
    for (let i = 0; i < 2; i++) load.dialFailed(load.dialStarted(a), 'refused');
    assert.deepEqual(load.outOfService().ejected, [a.key]);
    assert.equal(changes(), 1);
    load.drainBackend(b.key, true);
    await reconciler.idle();
    assert.deepEqual(speaker.current, [], 'a ejected and b drained: nothing usable');
    assert.equal(reconciler.status()[0]!.reason, 'noUsableBackends');
    await clock.advance(outlier.baseEjectionMs);
    await reconciler.idle();
    assert.equal(changes(), 3, 'the end of the ejection is told');
    assert.deepEqual(load.outOfService().ejected, []);
    assert.deepEqual(speaker.current, ['198.19.0.10/32']);
  });
});
