import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BackendChecker, type CheckRecord } from '../../src/health/checker';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeProbe } from '../fakes/health-fake-probe';

const backend = endpoint('198.18.21.2', 2379);

/**
 * HAProxy's inter / fastinter / downinter on the fake clock, jitter pinned to 0 (random() = 0 removes
 * nothing) so that every gap is exact: interval 1000, fastInterval 200, downInterval 5000, rise 3, fall 2.
 */
function harness(script: (now: number) => boolean, options: { fast?: number; down?: number; random?: () => number } = {}) {
  const clock = new FakeClock();
  const probe = new FakeProbe(clock, (_target, now) => ({ ok: script(now), latencyMs: 0 }));
  const records: Array<CheckRecord & { now: number }> = [];
  const checker = new BackendChecker({
    backend,
    probe,
    intervalMs: 1000,
    ...(options.fast !== undefined ? { fastIntervalMs: options.fast } : {}),
    ...(options.down !== undefined ? { downIntervalMs: options.down } : {}),
    timeoutMs: 100,
    rise: 3,
    fall: 2,
    clock,
    random: options.random ?? (() => 0),
    onResult: (record) => records.push({ ...record, now: clock.now() }),
  });
  return { clock, probe, checker, records };
}

const starts = (probe: FakeProbe) => probe.calls.map((c) => c.startedAt);

describe('BackendChecker intervals: fastInterval while a change is pending, downInterval while down', () => {
  it('rises at fastInterval from unknown, then probes at interval', async () => {
    const h = harness(() => true, { fast: 200, down: 5000 });
    h.checker.start();
    await h.clock.advance(3_000);
    // 0: unknown→pending, 200: pending, 400: healthy (3rd pass), then every 1000.
    assert.deepEqual(starts(h.probe), [0, 200, 400, 1400, 2400]);
    assert.deepEqual(h.records.map((r) => r.outcome), ['changePending', 'changePending', 'changed', 'unchanged', 'unchanged']);
  });

  it('a failure while healthy switches to fastInterval; marked down after fall; then downInterval', async () => {
    let failFrom = Infinity;
    const h = harness((now) => now < failFrom, { fast: 200, down: 5000 });
    h.checker.start();
    await h.clock.advance(1_500); // up at 400, next probe at 1400
    failFrom = 2_000;
    await h.clock.advance(20_000);
    const s = starts(h.probe);
    // 2400 fails (pending) → 2600 fails (down) → 7600, 12600, 17600 at downInterval.
    assert.deepEqual(s, [0, 200, 400, 1400, 2400, 2600, 7600, 12600, 17600]);
    const down = h.records.find((r) => r.outcome === 'changed' && r.to === 'unhealthy')!;
    console.log(`fastinter/downinter: first failure at 2400, marked down at ${down.now}ms (interval alone: 3400), then probes every 5000ms`);
    assert.equal(down.now, 2600);
  });

  it('a pass while down is a pending rise: fastInterval until healthy, then interval', async () => {
    let okFrom = Infinity;
    const h = harness((now) => now >= okFrom, { fast: 200, down: 5000 });
    h.checker.start();
    await h.clock.advance(500); // 0 fail pending, 200 fail → down, next at 5200
    okFrom = 5_000;
    await h.clock.advance(7_000);
    assert.deepEqual(starts(h.probe), [0, 200, 5200, 5400, 5600, 6600]);
    assert.deepEqual(h.records.map((r) => `${r.outcome}:${r.to}`), ['changePending:unknown', 'changed:unhealthy', 'changePending:unhealthy', 'changePending:unhealthy', 'changed:healthy', 'unchanged:healthy']);
  });

  it('a single failed probe between passes goes back to interval at once', async () => {
    const h = harness((now) => now !== 2400, { fast: 200, down: 5000 });
    h.checker.start();
    await h.clock.advance(4_000);
    assert.deepEqual(starts(h.probe), [0, 200, 400, 1400, 2400, 2600, 3600]);
  });

  it('unset, both are the interval (the behaviour before they existed)', async () => {
    const h = harness((now) => now < 3000);
    h.checker.start();
    await h.clock.advance(10_000);
    const s = starts(h.probe);
    assert.deepEqual(s, s.map((_, i) => i * 1000));
  });

  it('jitter stays: every gap is within 10% below its interval', async () => {
    let x = 0.5;
    const random = () => (x = (x * 9301 + 49297) % 233280 / 233280);
    const h = harness((now) => Math.floor(now / 7000) % 2 === 0, { fast: 200, down: 3000, random });
    h.checker.start();
    await h.clock.advance(60_000);
    const records = h.records;
    let jittered = 0;
    for (let i = 1; i < records.length; i++) {
      const previous = records[i - 1]!;
      const interval = previous.outcome === 'changePending' ? 200 : previous.to === 'unhealthy' ? 3000 : 1000;
      const gap = records[i]!.now - previous.now;
      assert.ok(gap >= interval * 0.9 - 1e-9 && gap <= interval + 1e-9, `gap ${gap} after ${previous.outcome}/${previous.to}, interval ${interval}`);
      if (gap < interval - 1) jittered++;
    }
    assert.ok(jittered > records.length / 2, 'gaps are jittered');
  });
});
