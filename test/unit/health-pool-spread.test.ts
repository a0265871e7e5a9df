import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CheckSpec } from '../../src/health/health';
import { createPoolHealth } from '../../src/health/pool-health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeProbe, seededRandom } from '../fakes/health-fake-probe';

const check: CheckSpec = { kind: 'tcp', intervalMs: 1000, timeoutMs: 1000, rise: 2, fall: 2, path: '/', expectStatus: [200], insecureSkipVerify: false };

function run(count: number) {
  const clock = new FakeClock();
  const probe = new FakeProbe(clock, () => ({ ok: true, latencyMs: 1 }));
  const metrics = createMetrics();
  const backends = Array.from({ length: count }, (_, i) => endpoint(`198.18.${20 + Math.floor(i / 250)}.${1 + (i % 250)}`, 2379));
  const health = createPoolHealth({ pool: 'big', backends, check, probe, clock, logger: silentLogger(), metrics, random: seededRandom(5) });
  return { clock, probe, metrics, health };
}

/** The most probe starts in any 10 ms window, over [from, to). */
function densest(starts: readonly number[], from: number, to: number): number {
  const buckets = new Map<number, number>();
  for (const t of starts) if (t >= from && t < to) buckets.set(Math.floor(t / 10), (buckets.get(Math.floor(t / 10)) ?? 0) + 1);
  return Math.max(...buckets.values());
}

describe('pool health spreads the probes of a large pool over the interval (as HAProxy does)', () => {
  it('1,000 backends at 1 s: first probes spread over the whole second, and they stay spread', async () => {
    const { clock, probe, health } = run(1000);
    health.start();
    await clock.advance(4_000);
    const starts = probe.calls.map((c) => c.startedAt);
    const first = densest(starts, 0, 1000);
    const later = densest(starts, 2000, 4000);
    console.log(`1,000 backends, interval 1 s: at most ${first} probe starts per 10 ms in the first second, ${later} in seconds 2-4 (bunched within 100 ms of start-up jitter it would be ~100)`);
    assert.ok(first <= 25, `${first} probes in one 10 ms window`);
    assert.ok(later <= 25, `${later} probes in one 10 ms window`);
    assert.deepEqual(probe.overlaps, []);
    await health.destroy();
  });

  it('3 backends still start at once, within the start-up jitter (a node gets ready as fast as before)', async () => {
    const { clock, probe, health } = run(3);
    health.start();
    await clock.advance(100);
    assert.equal(probe.calls.length, 3);
    assert.ok(probe.calls.every((c) => c.startedAt < 100));
    await health.destroy();
  });

  it('probe counts reach the metric when it is read, exactly', async () => {
    const { clock, probe, metrics, health } = run(3);
    health.start();
    await clock.advance(5_000);
    const values = (await metrics.healthChecks.get()).values;
    const total = values.reduce((sum, v) => sum + v.value, 0);
    assert.equal(total, probe.calls.filter((c) => c.result !== undefined).length);
    await health.destroy();
  });
});
