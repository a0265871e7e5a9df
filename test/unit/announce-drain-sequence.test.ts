import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DrainSequence, type DrainTarget } from '../../src/announce/drain-sequence';
import type { OnFailure, VipInput } from '../../src/announce/decide';
import { AnnounceReconciler, GRACEFUL_SHUTDOWN_COMMUNITY } from '../../src/announce/reconciler';
import type { HealthState, PoolSnapshot } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeSpeaker } from '../fakes/fake-speaker';

function snapshot(states: HealthState[]): PoolSnapshot {
  const backends = states.map((state, i) => ({ backend: endpoint(`198.18.2${i + 1}.2`, 2379), state, since: 0 }));
  return { pool: 'p', version: 1, backends, healthy: backends.filter((b) => b.state === 'healthy').map((b) => b.backend), settled: !states.includes('unknown') };
}

/** Two VIPs (IPv4 api with pessimize, IPv6 etcd with a 2-of-3 withdraw gate), the drain sequence and a reconciler, as main.ts wires them. */
function setup(closeAfterMs?: number) {
  const clock = new FakeClock();
  const speaker = new FakeSpeaker({ now: () => clock.now() });
  const metrics = createMetrics();
  const closed: DrainTarget[] = [];
  const world = { api: ['healthy', 'healthy', 'healthy'] as HealthState[], etcd: ['healthy', 'healthy', 'healthy'] as HealthState[] };
  let reconciler: AnnounceReconciler | undefined;
  const drains = new DrainSequence({ clock, logger: silentLogger(), metrics, closeAfterMs, onPhase: () => reconciler?.evaluate(), closeConnections: (t) => closed.push(t) });
  const inputs = (name: 'api' | 'etcd', address: string, onFailure: OnFailure, minHealthy: number) => (): VipInput => ({
    vip: address,
    shuttingDown: false,
    drained: drains.phaseFor(name) === 'withdrawn',
    draining: drains.phaseFor(name) === 'grace',
    vipBound: true,
    minHealthyBackends: minHealthy,
    gate: { minHealthy, listeners: 'all' },
    onFailure,
    listeners: [{ id: `${name}:1`, bound: true, pool: snapshot(world[name]) }],
  });
  reconciler = new AnnounceReconciler({
    vips: [
      {
        name: 'api',
        advertisement: { prefix: '198.19.0.10/32', communities: ['65000:1'] },
        pessimized: { prefix: '198.19.0.10/32', communities: ['65000:2'], asPath: [65010, 65010, 65010] },
        draining: { prefix: '198.19.0.10/32', communities: ['65000:3'], largeCommunities: ['65010:0:3'] },
        inputs: inputs('api', '198.19.0.10', 'pessimize', 3),
      },
      { name: 'etcd', advertisement: { prefix: '2001:db8:100::10/128', communities: [] }, inputs: inputs('etcd', '2001:db8:100::10', 'withdraw', 2) },
    ],
    speaker,
    clock,
    logger: silentLogger(),
    metrics,
    holdDownMs: 3000,
  });
  const mark = { source: 'test', at: new Date(clock.wallNow()).toISOString() };
  return { clock, speaker, world, drains, reconciler, closed, mark };
}

const adOf = (speaker: FakeSpeaker, prefix: string) => speaker.lastAds.find((a) => a.prefix === prefix);

test('drain sequence: GRACEFUL_SHUTDOWN during the grace, withdraw at its end, close at closeAfter; undrain goes back through the gate', async () => {
  const { clock, speaker, drains, reconciler, closed, mark } = setup(8000);
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(adOf(speaker, '198.19.0.10/32')?.communities, ['65000:1']);

  drains.begin(undefined, mark, 5000);
  await reconciler.idle();
  // Step 1: still advertised, now with the draining attributes and GRACEFUL_SHUTDOWN.
  const draining = adOf(speaker, '198.19.0.10/32')!;
  assert.deepEqual(draining.communities, ['65000:3', GRACEFUL_SHUTDOWN_COMMUNITY]);
  assert.deepEqual(draining.largeCommunities, ['65010:0:3']);
  assert.deepEqual(adOf(speaker, '2001:db8:100::10/128')?.communities, [GRACEFUL_SHUTDOWN_COMMUNITY], 'without attributes.draining, the up path plus GRACEFUL_SHUTDOWN');
  assert.deepEqual(reconciler.status().map((s) => s.state), ['draining', 'draining']);
  const info = drains.get(undefined)!;
  assert.equal(info.phase, 'grace');
  assert.equal(info.graceUntil, clock.wallNow() + 5000);
  assert.equal(info.closeAt, clock.wallNow() + 8000);

  // Step 2: the grace: nothing changes until its end.
  await clock.advance(4999);
  assert.equal(speaker.current.length, 2, 'still advertised 1 ms before the grace ends');
  // Step 3: withdraw.
  await clock.advance(1);
  await reconciler.idle();
  assert.deepEqual(speaker.current, []);
  assert.deepEqual(reconciler.status().map((s) => s.reason), ['drained', 'drained']);
  assert.equal(drains.get(undefined)!.phase, 'withdrawn');
  assert.deepEqual(closed, []);
  // Step 4: closeAfter, counted from the start of the drain.
  await clock.advance(3000);
  assert.deepEqual(closed, [undefined]);
  assert.equal(drains.get(undefined)!.phase, 'closed');

  // Undrain: back through the gate at once (not held down).
  drains.end(undefined);
  await reconciler.idle();
  assert.deepEqual([...speaker.current].sort(), ['198.19.0.10/32', '2001:db8:100::10/128']);
  assert.deepEqual(adOf(speaker, '198.19.0.10/32')?.communities, ['65000:1']);
  assert.deepEqual(speaker.violations, []);
});

test('drain sequence: a drain of one VIP leaves the other alone', async () => {
  const { clock, speaker, drains, reconciler, mark } = setup();
  reconciler.evaluate();
  await reconciler.idle();
  drains.begin('etcd', mark, 2000);
  await reconciler.idle();
  assert.deepEqual(adOf(speaker, '198.19.0.10/32')?.communities, ['65000:1'], 'api untouched');
  assert.ok(adOf(speaker, '2001:db8:100::10/128')!.communities.includes(GRACEFUL_SHUTDOWN_COMMUNITY));
  await clock.advance(2000);
  await reconciler.idle();
  assert.deepEqual(speaker.current, ['198.19.0.10/32']);
  assert.equal(reconciler.status()[0]!.state, 'announced');
});

test('drain sequence: grace 0 withdraws at once; a restored drain starts withdrawn and never shows GRACEFUL_SHUTDOWN', async () => {
  const { speaker, drains, reconciler, mark } = setup();
  drains.restore(undefined, mark, '/var/lib/vipd/lb1.state.json');
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.pushes, [], 'never announced');
  assert.equal(drains.get(undefined)!.restoredFrom, '/var/lib/vipd/lb1.state.json');
  drains.end(undefined);
  await reconciler.idle();
  drains.begin('api', mark, 0);
  await reconciler.idle();
  assert.deepEqual(speaker.current, ['2001:db8:100::10/128']);
  assert.ok(speaker.lastAds.every((a) => !a.communities.includes(GRACEFUL_SHUTDOWN_COMMUNITY)));
});

test('pessimize and withdraw side by side: the api VIP keeps a pessimized path, the etcd VIP (2-of-3) is withdrawn', async () => {
  const { speaker, world, reconciler } = setup();
  reconciler.evaluate();
  await reconciler.idle();
  world.api = ['healthy', 'unhealthy', 'unhealthy'];
  world.etcd = ['healthy', 'unhealthy', 'unhealthy'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, ['198.19.0.10/32']);
  const ad = adOf(speaker, '198.19.0.10/32')!;
  assert.deepEqual(ad.communities, ['65000:2']);
  assert.deepEqual(ad.asPath, [65010, 65010, 65010]);
  assert.deepEqual(
    reconciler.status().map((s) => [s.vip, s.state, s.reason]),
    [
      ['api', 'pessimized', 'belowMinHealthy'],
      ['etcd', 'withdrawn', 'belowMinHealthy'],
    ],
  );
  // With no healthy backend left, pessimize withdraws too.
  world.api = ['unhealthy', 'unhealthy', 'unhealthy'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.deepEqual(speaker.current, []);
  assert.equal(reconciler.status()[0]!.reason, 'noHealthyBackends');
});

test('reconciler: a change of attributes alone is pushed; an unchanged state is not', async () => {
  const { speaker, world, reconciler } = setup();
  reconciler.evaluate();
  await reconciler.idle();
  const before = speaker.pushes.length;
  reconciler.evaluate();
  await reconciler.idle();
  assert.equal(speaker.pushes.length, before, 'same state, no push');
  world.api = ['healthy', 'healthy', 'unhealthy'];
  reconciler.evaluate();
  await reconciler.idle();
  assert.equal(speaker.pushes.length, before + 1, 'up -> pessimized is pushed although the prefix set is the same');
  assert.deepEqual(adOf(speaker, '198.19.0.10/32')?.communities, ['65000:2']);
});
