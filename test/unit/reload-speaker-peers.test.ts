import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flushMicrotasks } from '../fakes/fake-clock';
import { FAKE_TOR as TOR, fakeGobgpSpeaker } from '../fakes/gobgp-speaker-harness';

const OTHER = '198.18.0.6';

test('speaker setPeers (reload): a kept peer keeps its state, an added one is listed unknown, a removed one leaves list and gauges', async () => {
  const { speaker, fake, metrics } = fakeGobgpSpeaker();
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
