import assert from 'node:assert/strict';
import { afterEach } from 'node:test';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import type { ApiSessionState } from '../../src/speaker/gobgp/api-types';
import { createGobgpSpeaker, type GobgpSpeakerHandle, type GobgpSpeakerOptions } from '../../src/speaker/gobgp/gobgp-speaker';
import { FakeClock } from './fake-clock';
import { FakeGobgpClient } from './gobgp-fake-client';

/** The one peer of the fake gobgpd: the ToR, AS 65000. */
export const FAKE_TOR = '198.18.0.2';
/** The API address the speaker is given (an external gobgpd). */
export const FAKE_GOBGPD_API = '127.0.0.1:50051';

export interface FakeGobgpSpeaker {
  speaker: GobgpSpeakerHandle;
  fake: FakeGobgpClient;
  clock: FakeClock;
  metrics: Metrics;
}

/**
 * A gobgp speaker (AS 65001, router id 198.18.0.1) on an external gobgpd that is a FakeGobgpClient
 * with one peer, FAKE_TOR, on the injected clock. Not started: callers start it when their test wants.
 */
export function fakeGobgpSpeaker(
  o: {
    /** The ToR session's state in the fake; default ESTABLISHED. */
    peerState?: ApiSessionState;
    /** Speaker options on top of the defaults (retry backoff, owner mark, ...). */
    options?: Partial<Omit<GobgpSpeakerOptions, 'clock' | 'logger' | 'metrics' | 'clientFactory'>>;
    /** Called with the fake before the speaker exists (to seed routes, inject failures). */
    before?: (fake: FakeGobgpClient) => void;
    /** Called with the address the speaker dials, each time it makes a client. */
    onDial?: (address: string) => void;
  } = {},
): FakeGobgpSpeaker {
  const clock = new FakeClock();
  const metrics = createMetrics();
  const fake = new FakeGobgpClient({ peers: [{ address: FAKE_TOR, asn: 65000, state: o.peerState ?? 'ESTABLISHED' }] });
  o.before?.(fake);
  const speaker = createGobgpSpeaker({
    asn: 65001,
    routerId: '198.18.0.1',
    manage: false,
    api: FAKE_GOBGPD_API,
    peers: [{ address: FAKE_TOR, asn: 65000 }],
    reconcileIntervalMs: 3000,
    ...o.options,
    clock,
    logger: silentLogger(),
    metrics,
    clientFactory: (address) => {
      o.onDial?.(address);
      return fake;
    },
  });
  return { speaker, fake, clock, metrics };
}

/**
 * Speakers a test file makes, destroyed after each test with a check that none broke the gobgpd
 * client contract (FakeGobgpClient.violations). Call once at the top level of the file.
 */
export function destroyedAfterEach<H extends { readonly speaker: { destroy(): unknown }; readonly fake: FakeGobgpClient }>(): H[] {
  const made: H[] = [];
  afterEach(() => {
    for (const h of made.splice(0)) {
      void h.speaker.destroy();
      assert.deepEqual(h.fake.violations, [], 'the speaker broke the gobgpd client contract');
    }
  });
  return made;
}
