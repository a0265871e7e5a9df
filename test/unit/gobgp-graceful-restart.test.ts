import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { routeFromAdvertisement } from '../../src/speaker/gobgp/codec';
import { createGobgpSpeaker, neighborHoldMs, type ManagedGobgpd } from '../../src/speaker/gobgp/gobgp-speaker';
import type { GobgpdConfig } from '../../src/speaker/gobgp/gobgpd-config';
import type { GobgpdSupervisorOptions, SupervisorEvent } from '../../src/speaker/gobgp/supervisor';
import type { Advertisement, Speaker } from '../../src/speaker/speaker';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { destroyedAfterEach } from '../fakes/gobgp-speaker-harness';
import { FakeGobgpClient } from '../fakes/gobgp-fake-client';

/**
 * Graceful restart (issue 11, T15): a respawned gobgpd must not have a session (and so must not send an
 * End-of-RIB, where the ToR flushes the stale paths) before vipd's paths are back in its RIB. The
 * supervisor holds the neighbors back; the speaker releases them after a reconciliation pass against the
 * new gobgpd. These tests check the speaker's side of that ordering with a fake supervisor and client.
 */
const A: Advertisement = { prefix: '198.19.0.10/32', communities: ['65000:100'] };
const B: Advertisement = { prefix: '198.19.0.11/32', communities: [] };
const TOR = '198.18.0.2';

/** The supervisor's contract as the speaker sees it; `respawn()` plays a gobgpd that was killed and came back. */
class FakeSupervisor implements ManagedGobgpd {
  held = false;
  /** What the fake client had been asked when the neighbors were released (the order under test). */
  readonly releases: Array<{ reason: string; ribCallsBefore: string[] }> = [];
  private readonly listeners = new Set<(e: SupervisorEvent) => void>();

  constructor(
    readonly options: GobgpdSupervisorOptions,
    private readonly client: FakeGobgpClient,
  ) {}

  get apiAddress(): string {
    return 'unix:/fake/api.sock';
  }
  get neighbors(): GobgpdConfig['neighbors'] {
    return this.options.config.neighbors;
  }
  get neighborsHeld(): boolean {
    return this.held;
  }
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  async destroy(): Promise<void> {}
  async reloadNeighbors(): Promise<void> {}
  onEvent(listener: (e: SupervisorEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  async releaseNeighbors(reason: string): Promise<void> {
    if (!this.held) return;
    this.held = false;
    this.releases.push({ reason, ribCallsBefore: this.client.ribCalls().filter((c) => c.method === 'addPath').map((c) => `addPath ${c.prefix}`) });
  }

  /** gobgpd SIGKILLed: the API goes away with the paths; the supervisor respawns it without neighbors. */
  async crashAndRespawn(clock: FakeClock): Promise<void> {
    this.client.setReachable(false);
    this.client.restartDaemon();
    this.emit({ type: 'exited', pid: 1, code: null, signal: 'SIGKILL', expected: false });
    await clock.advance(500);
    this.held = this.options.holdNeighborsOnRestartMs !== undefined;
    this.client.clearCalls();
    this.client.setReachable(true);
    this.emit({ type: 'started', pid: 2, restart: true });
  }

  private emit(e: SupervisorEvent): void {
    for (const l of this.listeners) l(e);
  }
}

interface Harness {
  speaker: Speaker;
  fake: FakeGobgpClient;
  supervisor: FakeSupervisor;
  clock: FakeClock;
}

const harnesses = destroyedAfterEach<Harness>();

async function startHarness(o: { gracefulRestart: boolean }): Promise<Harness> {
  const clock = new FakeClock();
  const fake = new FakeGobgpClient({ peers: [{ address: TOR, asn: 65000, state: 'ESTABLISHED' }] });
  let supervisor: FakeSupervisor | undefined;
  const speaker = createGobgpSpeaker({
    asn: 65001,
    routerId: '198.18.0.1',
    manage: true,
    peers: [{ address: TOR, asn: 65000 }],
    ...(o.gracefulRestart && { gracefulRestart: { restartTimeS: 30, notification: false } }),
    reconcileIntervalMs: 3000,
    clock,
    logger: silentLogger(),
    metrics: createMetrics(),
    clientFactory: () => fake,
    supervisorFactory: (options) => (supervisor = new FakeSupervisor(options, fake)),
  });
  await speaker.start();
  await flushMicrotasks();
  const h = { speaker, fake, supervisor: supervisor!, clock };
  harnesses.push(h);
  return h;
}


describe('GobgpSpeaker: graceful restart, neighbors only after the paths', () => {
  test('with graceful restart the supervisor holds a respawned gobgpd\'s neighbors, for half the restart time at most', async () => {
    const h = await startHarness({ gracefulRestart: true });
    assert.equal(h.supervisor.options.holdNeighborsOnRestartMs, 15_000);
    assert.equal(neighborHoldMs({ restartTimeS: 1, notification: false }), 1000, 'never less than 1 s');
  });

  test('without graceful restart nothing is held (a respawned gobgpd starts with its neighbors, as before)', async () => {
    const h = await startHarness({ gracefulRestart: false });
    assert.equal(h.supervisor.options.holdNeighborsOnRestartMs, undefined);
    await h.speaker.setAdvertisements([A]);
    await h.supervisor.crashAndRespawn(h.clock);
    await h.clock.advance(1000);
    assert.deepEqual(h.fake.localRoutes(), [routeFromAdvertisement(A)]);
    assert.deepEqual(h.supervisor.releases, []);
  });

  test('the neighbors are released only after every desired path is back in the new gobgpd', async () => {
    const h = await startHarness({ gracefulRestart: true });
    await h.speaker.setAdvertisements([A, B]);
    await h.supervisor.crashAndRespawn(h.clock);
    assert.equal(h.supervisor.neighborsHeld, true);
    assert.deepEqual(h.fake.localRoutes(), [], 'the respawned gobgpd starts empty');
    await h.clock.advance(1000);
    assert.equal(h.supervisor.neighborsHeld, false, 'released once the paths are back');
    assert.equal(h.supervisor.releases.length, 1);
    assert.deepEqual(h.supervisor.releases[0]!.ribCallsBefore.sort(), ['addPath 198.19.0.10/32', 'addPath 198.19.0.11/32']);
  });

  test('refused AddPaths keep the neighbors held; the pass that puts the path in releases them', async () => {
    const h = await startHarness({ gracefulRestart: true });
    await h.speaker.setAdvertisements([A]);
    for (let i = 0; i < 3; i++) h.fake.failNext('addPath', grpc.status.INVALID_ARGUMENT);
    await h.supervisor.crashAndRespawn(h.clock);
    const addPaths = () => h.fake.ribCalls().filter((c) => c.method === 'addPath').length;
    const seen: string[] = [];
    for (let t = 0; t < 5000 && h.supervisor.releases.length === 0; t += 10) {
      await h.clock.advance(10);
      seen.push(`${addPaths()} AddPath, ${h.supervisor.releases.length} release`);
    }
    assert.equal(h.supervisor.releases.length, 1, `released in the end: ${seen.join('; ')}`);
    assert.ok(seen.some((s) => s.startsWith('3 AddPath, 0')), `held while gobgpd refused: ${[...new Set(seen)].join('; ')}`);
    assert.deepEqual(h.supervisor.releases[0]!.ribCallsBefore, Array(4).fill('addPath 198.19.0.10/32'), 'three refused calls, then the one that put the path in');
    assert.deepEqual(h.fake.localRoutes(), [routeFromAdvertisement(A)]);
  });

  test('with nothing to announce the neighbors are released by the first pass (sessions come up empty)', async () => {
    const h = await startHarness({ gracefulRestart: true });
    await h.supervisor.crashAndRespawn(h.clock);
    await h.clock.advance(1000);
    assert.equal(h.supervisor.releases.length, 1);
    assert.deepEqual(h.supervisor.releases[0]!.ribCallsBefore, []);
  });
});
