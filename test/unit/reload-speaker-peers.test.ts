import assert from 'node:assert/strict';
import { test } from 'node:test';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { createGobgpSpeaker } from '../../src/speaker/gobgp/gobgp-speaker';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeGobgpClient } from '../fakes/gobgp-fake-client';

const TOR = '198.18.0.2';
const OTHER = '198.18.0.6';

test('speaker setPeers (reload): a kept peer keeps its state, an added one is listed unknown, a removed one leaves list and gauges', async () => {
  const clock = new FakeClock();
  const metrics = createMetrics();
  const fake = new FakeGobgpClient({ peers: [{ address: TOR, asn: 65000, state: 'ESTABLISHED' }] });
  const speaker = createGobgpSpeaker({
    asn: 65001,
    routerId: '198.18.0.1',
    manage: false,
    api: '127.0.0.1:50051',
    peers: [{ address: TOR, asn: 65000 }],
    reconcileIntervalMs: 3000,
    clock,
    logger: silentLogger(),
    metrics,
    clientFactory: () => fake,
  });
  await assert.rejects(speaker.setPeers([]), /cannot change now/, 'refused before start');
  await speaker.start();
  await flushMicrotasks();
  const torBefore = speaker.peers().find((p) => p.address === TOR)!;

  await speaker.setPeers([{ address: TOR, asn: 65000 }, { address: OTHER, asn: 65000 }]);
  const listed = new Map(speaker.peers().map((p) => [p.address, p]));
  assert.equal(listed.get(TOR)?.state, torBefore.state, 'kept peer keeps its state');
  assert.equal(listed.get(TOR)?.since, torBefore.since);
  assert.equal(listed.get(OTHER)?.state, 'unknown');

  await speaker.setPeers([{ address: TOR, asn: 65000 }]);
  assert.deepEqual(speaker.peers().map((p) => p.address), [TOR]);
  const gauges = (await metrics.peerState.get()).values.filter((v) => v.labels.peer === OTHER);
  assert.deepEqual(gauges, [], 'the removed peer has no gauge left');
  await speaker.destroy();
  assert.deepEqual(fake.violations, []);
});
