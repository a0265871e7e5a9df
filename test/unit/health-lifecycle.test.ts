import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackendChecker } from '../../src/health/checker';
import { createPoolHealth } from '../../src/health/pool-health';
import type { CheckSpec, Probe, ProbeResult } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';

/** Issue 9, "one life cycle": close() graceful, destroy() at once, both awaitable and idempotent, both refusing new work. */

const backend = endpoint('198.18.21.2', 2379);

/** A probe whose answers the test releases by hand. */
class HeldProbe implements Probe {
  readonly kind = 'held';
  calls = 0;
  private release: ((r: ProbeResult) => void) | undefined;
  check(): Promise<ProbeResult> {
    this.calls++;
    return new Promise((resolve) => (this.release = resolve));
  }
  answer(ok: boolean): void {
    this.release?.({ ok, detail: ok ? 'ok' : 'fail', durationMs: 1 });
    this.release = undefined;
  }
}

function checker(clock: FakeClock, probe: Probe, results: boolean[]) {
  return new BackendChecker({ backend, probe, intervalMs: 1000, timeoutMs: 500, rise: 1, fall: 1, clock, random: () => 0, onResult: (r) => results.push(r.result.ok) });
}

async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await flushMicrotasks();
  return done;
}

test('checker: close() waits for the probe in flight (its result not judged) and starts none after', async () => {
  const clock = new FakeClock();
  const probe = new HeldProbe();
  const results: boolean[] = [];
  const c = checker(clock, probe, results);
  c.start();
  await clock.advance(0);
  assert.equal(probe.calls, 1, 'first probe in flight');
  const closing = c.close();
  assert.equal(await settled(closing), false, 'close() waits for the probe in flight');
  probe.answer(true);
  assert.equal(await settled(closing), true);
  assert.deepEqual(results, [], 'a result that arrives after close() is not judged');
  c.start();
  await clock.advance(10_000);
  assert.equal(probe.calls, 1, 'a closed checker never probes again, start() or not');
  await c.close();
  await c.destroy();
});

test('checker: close() waits at most the probe timeout, even for a probe that never answers', async () => {
  const clock = new FakeClock();
  const probe = new HeldProbe();
  const c = checker(clock, probe, []);
  c.start();
  await clock.advance(0);
  const closing = c.close();
  await clock.advance(499);
  assert.equal(await settled(closing), false);
  await clock.advance(1);
  assert.equal(await settled(closing), true, 'resolved at the timeout');
});

test('checker: destroy() abandons the probe in flight at once, and ends a close() waiting for it', async () => {
  const clock = new FakeClock();
  const probe = new HeldProbe();
  const c = checker(clock, probe, []);
  c.start();
  await clock.advance(0);
  const closing = c.close();
  await c.destroy();
  assert.equal(await settled(closing), true);
  await clock.advance(10_000);
  assert.equal(probe.calls, 1);
});

test('pool health: close() resolves once probes answered; listeners hear nothing after; a throwing listener does not stop the others', async () => {
  const clock = new FakeClock();
  const probe = new HeldProbe();
  const check: CheckSpec = { kind: 'tcp', intervalMs: 1000, timeoutMs: 500, rise: 1, fall: 1, path: '/', expectStatus: [200], insecureSkipVerify: false };
  const health = createPoolHealth({ pool: 'p', backends: [backend], check, probe, clock, logger: silentLogger(), metrics: createMetrics(), random: () => 0 });
  const heard: string[] = [];
  health.onChange(() => {
    throw new Error('bad subscriber');
  });
  health.onChange((_s, t) => heard.push(t!.to));
  health.start();
  await clock.advance(0);
  probe.answer(true);
  await flushMicrotasks();
  assert.deepEqual(heard, ['healthy'], 'the second listener heard the change although the first threw');
  await clock.advance(1000);
  const closing = health.close();
  assert.equal(health.close(), closing, 'idempotent');
  assert.equal(await settled(closing), false, 'waits for the probe in flight');
  probe.answer(false);
  await closing;
  assert.deepEqual(heard, ['healthy'], 'nothing heard after close()');
  health.start();
  await clock.advance(5000);
  assert.equal(probe.calls, 2, 'never probes again');
  await health.destroy();
});
