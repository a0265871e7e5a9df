import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { BackendChecker, type CheckRecord } from '../../src/health/checker';
import { HttpProbe } from '../../src/health/probe-http';
import { systemClock } from '../../src/lib/clock';
import type { HealthState } from '../../src/health/health';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeProbe, seededRandom, type FakeAnswer } from '../fakes/health-fake-probe';

const backend = endpoint('198.18.21.2', 2379);

interface HarnessOptions {
  script: (now: number) => FakeAnswer;
  honourTimeout?: boolean;
  random?: () => number;
  intervalMs?: number;
  timeoutMs?: number;
  rise?: number;
  fall?: number;
}

function harness(options: HarnessOptions) {
  const clock = new FakeClock();
  const probe = new FakeProbe(clock, (_target, now) => options.script(now), { honourTimeout: options.honourTimeout ?? true });
  const records: Array<CheckRecord & { now: number }> = [];
  const checker = new BackendChecker({
    backend,
    probe,
    intervalMs: options.intervalMs ?? 1000,
    timeoutMs: options.timeoutMs ?? 1000,
    rise: options.rise ?? 2,
    fall: options.fall ?? 2,
    clock,
    random: options.random ?? seededRandom(1),
    onResult: (record) => records.push({ ...record, now: clock.now() }),
  });
  const transitions = () => records.filter((r) => r.outcome === 'changed');
  return { clock, probe, checker, records, transitions };
}

const isDown = (checker: BackendChecker) => checker.state === 'unhealthy';

function gaps(times: readonly number[]): number[] {
  return times.slice(1).map((t, i) => t - times[i]!);
}

/**
 * Expected transitions computed from the results alone, as runs of identical results: a run of `rise`
 * passes (or `fall` failures) switches the state at its rise-th (fall-th) result unless already there.
 */
function expectedTransitions(results: ReadonlyArray<{ ok: boolean; at: number }>, rise: number, fall: number) {
  const out: Array<{ at: number; from: HealthState; to: HealthState }> = [];
  let state: HealthState = 'unknown';
  let runStart = 0;
  results.forEach((r, i) => {
    if (i > 0 && r.ok !== results[i - 1]!.ok) runStart = i;
    const target: HealthState = r.ok ? 'healthy' : 'unhealthy';
    if (i - runStart + 1 === (r.ok ? rise : fall) && state !== target) {
      out.push({ at: r.at, from: state, to: target });
      state = target;
    }
  });
  return out;
}

describe('BackendChecker scheduling', () => {
  it('runs the first probe promptly, spread by jitter across checkers', async () => {
    const random = seededRandom(7);
    const firsts: number[] = [];
    for (let i = 0; i < 100; i++) {
      const h = harness({ script: () => ({ ok: true, latencyMs: 5 }), random });
      h.checker.start();
      await h.clock.advance(200);
      h.checker.close();
      firsts.push(h.probe.calls[0]!.startedAt);
    }
    const min = Math.min(...firsts);
    const max = Math.max(...firsts);
    console.log(`first probe after start over 100 checkers: min ${min.toFixed(1)}ms max ${max.toFixed(1)}ms`);
    assert.ok(firsts.every((t) => t >= 0 && t < 100), 'first probe within interval×10%');
    assert.ok(max - min > 50, 'first probes are spread, not synchronised');
  });

  it('starts probes between 0.9 and 1.0 interval apart, never later', async () => {
    const h = harness({ script: () => ({ ok: true, latencyMs: 5 }), random: seededRandom(3) });
    h.checker.start();
    await h.clock.advance(60_000);
    const g = gaps(h.probe.calls.map((c) => c.startedAt));
    const mean = g.reduce((a, b) => a + b, 0) / g.length;
    console.log(`probe start gaps over 60 s: n=${g.length} min ${Math.min(...g).toFixed(1)}ms mean ${mean.toFixed(1)}ms max ${Math.max(...g).toFixed(1)}ms`);
    assert.ok(g.every((d) => d >= 900 && d <= 1000));
    assert.ok(Math.max(...g) - Math.min(...g) > 50, 'gaps are jittered');
  });

  it('start() twice schedules once', async () => {
    const h = harness({ script: () => ({ ok: true, latencyMs: 5 }), random: () => 0 });
    h.checker.start();
    h.checker.start();
    await h.clock.advance(10_500);
    assert.equal(h.probe.calls.length, 11);
  });

  it('close() stops probing; a result arriving after close is ignored and no timer is left', async () => {
    const h = harness({ script: () => ({ ok: true, latencyMs: 400 }), random: () => 0 });
    h.checker.start();
    await h.clock.advance(2_100);
    assert.equal(h.probe.calls.length, 3);
    const recordsAtClose = h.records.length;
    h.checker.close();
    h.checker.close();
    await h.clock.advance(10_000);
    assert.equal(h.probe.calls.length, 3);
    assert.equal(h.records.length, recordsAtClose, 'the probe in flight at close() is not judged');
    assert.equal(h.clock.pendingTimers(), 0);
  });
});

describe('BackendChecker never overlaps probes and bounds overruns', () => {
  it('a probe that ignores its timeout is cut at the timeout and never overlapped', async () => {
    const h = harness({ script: () => ({ ok: true, latencyMs: 2_500 }), honourTimeout: false, random: () => 0 });
    h.checker.start();
    await h.clock.advance(20_000);
    assert.deepEqual(h.probe.overlaps, []);
    for (const call of h.probe.calls) {
      const judged = h.records.find((r) => r.now >= call.startedAt);
      assert.ok(judged && judged.now - call.startedAt <= 1_000, `result for the probe started at ${call.startedAt} within the timeout`);
    }
    const down = h.transitions()[0]!;
    console.log(`overrunning probe (2.5 s, timeout 1 s): marked ${down.to} at ${down.now}ms, ${h.probe.calls.length} probes in 20 s, details: ${[...new Set(h.records.map((r) => r.result.detail))].join(' | ')}`);
    assert.equal(down.to, 'unhealthy');
    assert.ok(down.now <= 1_000 * 2 + 1_000);
    assert.ok(h.records.every((r) => !r.result.ok));
  });

  it('a probe that never settles keeps failing the backend without a second probe', async () => {
    const h = harness({ script: () => ({ ok: true, latencyMs: Infinity }), honourTimeout: false, random: () => 0 });
    h.checker.start();
    await h.clock.advance(30_000);
    assert.equal(h.probe.calls.length, 1);
    assert.equal(h.checker.state, 'unhealthy');
    assert.ok(h.records.length >= 29, `a failure each interval (${h.records.length})`);
    assert.match(h.records.at(-1)!.result.detail, /^previous probe still running after \d+ms$/);
  });

  it('slow probes (latency above the interval, within the timeout) run back to back, one at a time', async () => {
    const h = harness({ script: () => ({ ok: true, latencyMs: 1_400 }), intervalMs: 1_000, timeoutMs: 1_500 });
    h.checker.start();
    await h.clock.advance(30_000);
    assert.deepEqual(h.probe.overlaps, []);
    const g = gaps(h.probe.calls.map((c) => c.startedAt));
    assert.ok(g.every((d) => d === 1_400), 'the next probe starts as soon as the previous one ends');
    assert.equal(h.checker.state, 'healthy');
  });

  it('a probe that throws or rejects counts as a failure and checking goes on', async () => {
    const clock = new FakeClock();
    let n = 0;
    const records: CheckRecord[] = [];
    const checker = new BackendChecker({
      backend,
      probe: {
        kind: 'broken',
        check: () => {
          n++;
          if (n % 2 === 1) throw new Error('boom sync');
          return Promise.reject(new Error('boom async'));
        },
      },
      intervalMs: 1000,
      timeoutMs: 1000,
      rise: 2,
      fall: 2,
      clock,
      random: () => 0,
      onResult: (r) => records.push(r),
    });
    checker.start();
    await clock.advance(3_500);
    checker.close();
    assert.deepEqual(records.map((r) => r.result.detail), ['probe error: boom sync', 'probe error: boom async', 'probe error: boom sync', 'probe error: boom async']);
    assert.equal(checker.state, 'unhealthy');
  });
});

describe('T04 unit: flapping backend, fake clock', () => {
  const FLAP_MS = 1_500;
  const isUp = (t: number) => Math.floor(t / FLAP_MS) % 2 === 0;

  for (const seed of [1, 2, 3, 4]) {
    it(`healthy/unhealthy every 1.5 s for 60 s, interval 1 s, rise 2 fall 2: transitions follow rise/fall exactly (seed ${seed})`, async () => {
      const h = harness({ script: (now) => ({ ok: isUp(now), latencyMs: 5 }), random: seededRandom(seed) });
      h.checker.start();
      await h.clock.advance(60_000);
      h.checker.close();

      const starts = h.probe.calls.map((c) => c.startedAt);
      assert.ok(starts[0]! < 100 && gaps(starts).every((d) => d >= 900 && d <= 1000), 'schedule is interval with jitter');
      const judged = h.probe.calls.filter((c) => c.settledAt !== undefined && c.settledAt <= 60_000);
      const expected = expectedTransitions(judged.map((c) => ({ ok: isUp(c.startedAt), at: c.startedAt + 5 })), 2, 2);
      const actual = h.transitions().map((r) => ({ at: r.now, from: r.from, to: r.to }));
      console.log(`T04 seed ${seed}: ${judged.length} probes, ${actual.length} transitions at ${actual.map((t) => `${(t.at / 1000).toFixed(2)}s→${t.to}`).join(', ')}`);
      assert.deepEqual(actual, expected);
      assert.ok(actual.length >= 3, 'the scenario exercises both directions');
      assert.deepEqual(h.probe.overlaps, []);
    });
  }

  it('a flap shorter than fall never marks the backend down (probes exactly 1 s apart: ok ok fail ...)', async () => {
    const h = harness({ script: (now) => ({ ok: isUp(now), latencyMs: 5 }), random: () => 0 });
    h.checker.start();
    await h.clock.advance(60_000);
    const results = h.records.map((r) => (r.result.ok ? 'o' : 'x')).join('');
    assert.match(results, /^(oox)+o*$/);
    assert.deepEqual(h.transitions().map((r) => ({ at: r.now, to: r.to })), [{ at: 1_005, to: 'healthy' }]);
  });
});

describe('T03 unit: slow backend, fake clock', () => {
  it('0.7 s answers with a 1 s timeout cause no transition in 60 s; 1.5 s answers mark it down within interval×fall + timeout', async () => {
    const detection: number[] = [];
    let steadyTransitions = 0;
    for (let phase = 0; phase < 1_000; phase += 50) {
      let slowFrom = Infinity;
      const h = harness({ script: (now) => ({ ok: true, latencyMs: now >= slowFrom ? 1_500 : 700 }), random: seededRandom(100 + phase) });
      h.checker.start();
      await h.clock.advance(5_000);
      assert.equal(h.checker.state, 'healthy');
      const healthyAt = h.transitions()[0]!.now;
      await h.clock.advance(60_000);
      steadyTransitions += h.transitions().filter((r) => r.now > healthyAt).length;

      slowFrom = h.clock.now() + phase;
      while (!isDown(h.checker) && h.clock.now() < slowFrom + 10_000) await h.clock.advance(10);
      const down = h.transitions().at(-1)!;
      assert.equal(down.to, 'unhealthy');
      detection.push(down.now - slowFrom);
      assert.deepEqual(h.probe.overlaps, []);
      h.checker.close();
    }
    console.log(`T03: transitions during 60 s at 0.7 s latency (20 runs): ${steadyTransitions}; mark-down after the switch to 1.5 s: min ${Math.min(...detection).toFixed(0)}ms max ${Math.max(...detection).toFixed(0)}ms (bound 3000ms)`);
    assert.equal(steadyTransitions, 0);
    assert.ok(Math.max(...detection) <= 1_000 * 2 + 1_000);
  });

  it('T02 shape: a backend that stops answering is down within interval×fall + timeout, whatever the phase', async () => {
    const detection: number[] = [];
    for (let phase = 0; phase < 1_000; phase += 25) {
      let hungFrom = Infinity;
      const h = harness({ script: (now) => ({ ok: true, latencyMs: now >= hungFrom ? Infinity : 3 }), random: seededRandom(500 + phase) });
      h.checker.start();
      await h.clock.advance(10_000);
      hungFrom = h.clock.now() + phase;
      while (!isDown(h.checker) && h.clock.now() < hungFrom + 10_000) await h.clock.advance(10);
      detection.push(h.transitions().at(-1)!.now - hungFrom);
      h.checker.close();
    }
    console.log(`T02 shape (hang): mark-down after the hang over 40 phases: min ${Math.min(...detection).toFixed(0)}ms max ${Math.max(...detection).toFixed(0)}ms (bound 3000ms)`);
    assert.ok(Math.max(...detection) <= 3_000);
  });
});

describe('BackendChecker on the system clock with a real probe', () => {
  it("the probe's own timeout wins the tie with the checker's guard, so the detail names the phase", async () => {
    const sockets: Socket[] = [];
    const silent: Server = createServer(() => undefined);
    silent.on('connection', (socket: Socket) => sockets.push(socket));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const target = endpoint('127.0.0.1', (silent.address() as AddressInfo).port);
    const records: CheckRecord[] = [];
    const done = new Promise<void>((resolve) => {
      const checker = new BackendChecker({
        backend: target,
        probe: new HttpProbe({ tls: false, path: '/', expectStatus: [200], insecureSkipVerify: false }),
        intervalMs: 60,
        timeoutMs: 40,
        rise: 1,
        fall: 1,
        clock: systemClock,
        onResult: (record) => {
          records.push(record);
          if (records.length === 20) {
            checker.close();
            resolve();
          }
        },
      });
      checker.start();
    });
    await done;
    for (const s of sockets) s.destroy();
    silent.close();
    assert.deepEqual(new Set(records.map((r) => r.result.detail)), new Set(['timeout after 40ms (headers)']));
    assert.equal(sockets.length, 20, 'one connection per probe');
  });
});
