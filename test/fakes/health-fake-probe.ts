import type { ProbeResult, Probe } from '../../src/health/health';
import type { Endpoint } from '../../src/net/endpoint';
import type { FakeClock } from './fake-clock';

/** What the simulated backend does with a probe that starts now. */
export interface FakeAnswer {
  readonly ok: boolean;
  /** Infinity: the backend never answers. */
  readonly latencyMs: number;
}

export interface FakeProbeCall {
  readonly target: string;
  readonly startedAt: number;
  readonly timeoutMs: number;
  settledAt?: number;
  result?: ProbeResult;
}

/**
 * A probe on a FakeClock whose answers come from a script. By default it keeps the Probe contract the
 * way the real probes do (never later than the timeout); `honourTimeout: false` models a broken probe.
 * Misuse by the caller (two calls in flight for one backend) is recorded in `overlaps` for the test to assert.
 */
export class FakeProbe implements Probe {
  readonly kind = 'fake';
  readonly calls: FakeProbeCall[] = [];
  readonly overlaps: FakeProbeCall[] = [];
  private readonly running = new Map<string, number>();

  constructor(
    private readonly clock: FakeClock,
    private readonly script: (target: Endpoint, now: number) => FakeAnswer,
    private readonly options: { readonly honourTimeout?: boolean } = {},
  ) {}

  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult> {
    if (!(timeoutMs > 0)) throw new Error(`FakeProbe: bad timeout ${timeoutMs}`);
    const call: FakeProbeCall = { target: target.key, startedAt: this.clock.now(), timeoutMs };
    this.calls.push(call);
    const runningNow = this.running.get(target.key) ?? 0;
    if (runningNow > 0) this.overlaps.push(call);
    this.running.set(target.key, runningNow + 1);
    const { ok, latencyMs } = this.script(target, call.startedAt);
    return new Promise((resolve) => {
      const settle = (result: ProbeResult): void => {
        this.running.set(target.key, (this.running.get(target.key) ?? 1) - 1);
        call.settledAt = this.clock.now();
        call.result = result;
        resolve(result);
      };
      if ((this.options.honourTimeout ?? true) && latencyMs > timeoutMs) {
        this.clock.setTimeout(() => settle({ ok: false, detail: `timeout after ${timeoutMs}ms`, durationMs: timeoutMs }), timeoutMs);
      } else if (Number.isFinite(latencyMs)) {
        this.clock.setTimeout(() => settle({ ok, detail: ok ? 'fake ok' : 'fake fail', durationMs: latencyMs }), latencyMs);
      }
    });
  }

  callsFor(target: Endpoint): FakeProbeCall[] {
    return this.calls.filter((c) => c.target === target.key);
  }
}

export { seededRandom } from './seeded-random';
