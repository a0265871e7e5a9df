import type { Clock, TimerHandle } from '../lib/clock';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import { StateMachine } from '../lib/transition';
import type { Endpoint } from '../net/endpoint';
import { applyResult, initialMemory, type CheckOutcome, type ThresholdMemory } from './checker-thresholds';
import type { HealthState, Probe, ProbeResult } from './health';

/** One probe result as the checker judged it. `from === to` unless `outcome` is 'changed'. */
export interface CheckRecord {
  readonly backend: Endpoint;
  readonly result: ProbeResult;
  /** Wall-clock ms when the result was judged. */
  readonly at: number;
  readonly from: HealthState;
  readonly to: HealthState;
  readonly outcome: CheckOutcome;
}

export interface BackendCheckerOptions {
  readonly backend: Endpoint;
  readonly probe: Probe;
  readonly intervalMs: number;
  /** HAProxy's fastinter: the interval while a transition is pending (changePending); intervalMs when unset. */
  readonly fastIntervalMs?: number | undefined;
  /** HAProxy's downinter: the interval while unhealthy and not on the way up; intervalMs when unset. */
  readonly downIntervalMs?: number | undefined;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
  readonly clock: Clock;
  /** Uniform [0, 1); Math.random unless a test pins it. */
  readonly random?: () => number;
  /** How much of an interval jitter may remove; 0.1 unless set. */
  readonly jitterFraction?: number;
  /** Where the thresholds start: 'unknown' for a new backend; a reload that rebuilds a checker keeps the old state. */
  readonly initialState?: HealthState;
  /** Called for every result, in order, after the state has been updated. */
  readonly onResult: (record: CheckRecord) => void;
  /**
   * When the first probe starts, from start(); within intervalMs×jitterFraction at random when unset.
   * A pool of many backends sets it to spread their first probes (and so every later one) over the interval.
   */
  readonly firstDelayMs?: number | undefined;
  /** Logs the checker's own life cycle (start, close) at debug. */
  readonly logger?: Logger;
}

export type CheckerLifecycle = 'idle' | 'running' | 'closed';

export const DEFAULT_JITTER_FRACTION = 0.1;

/**
 * Schedules the probes of one backend and runs their results through the rise/fall thresholds.
 *
 * Promises: at most one probe of the backend is in flight; the first probe starts within
 * intervalMs×jitter of start() (or at firstDelayMs); consecutive probe starts are at most intervalMs apart when probes
 * finish within intervalMs (otherwise back to back); no result is ever later than timeoutMs after its
 * probe started, even from a probe that breaks its own contract. So a backend that stops answering
 * is marked down within intervalMs×fall + timeoutMs (when timeoutMs ≤ intervalMs; a fastIntervalMs
 * below intervalMs only shortens it).
 *
 * Which interval applies after each result (HAProxy's inter/fastinter/downinter): fastIntervalMs while
 * the thresholds have a change pending (including every result in 'unknown', which is a change pending
 * by definition), downIntervalMs while unhealthy with nothing pending, intervalMs otherwise.
 */
export class BackendChecker {
  private memory: ThresholdMemory = initialMemory;
  private lastOutcome: CheckOutcome = 'unchanged';
  private readonly lifecycle: StateMachine<CheckerLifecycle>;
  private timer: TimerHandle | undefined;
  private attemptGuard: TimerHandle | undefined;
  /** Resolves when the attempt in flight has its answer (at the latest at its timeout); undefined between attempts. */
  private attemptAnswered: Promise<void> | undefined;
  private settleAttempt: (() => void) | undefined;
  /** The probe's own promise has not settled; stays true past the checker's timeout if the probe overruns. */
  private probeInFlight = false;
  private probeStartedAt = 0;
  private readonly random: () => number;
  private readonly jitterFraction: number;

  constructor(private readonly options: BackendCheckerOptions) {
    this.random = options.random ?? Math.random;
    this.jitterFraction = options.jitterFraction ?? DEFAULT_JITTER_FRACTION;
    if (options.initialState !== undefined) this.memory = { state: options.initialState, successes: 0, failures: 0 };
    this.lifecycle = new StateMachine<CheckerLifecycle>('idle', { machine: 'checker', ...(options.logger ? { logger: options.logger } : {}) });
  }

  get state(): HealthState {
    return this.memory.state;
  }

  /** Idempotent; a closed checker never starts again. */
  start(): void {
    if (!this.lifecycle.transition(['idle'], 'running', 'start()')) return;
    // Prompt, but spread: many checkers started together must not probe in lockstep.
    this.schedule(this.options.firstDelayMs ?? this.options.intervalMs * this.jitterFraction * this.random());
  }

  /**
   * Graceful: no probe starts from now on, and the one in flight is waited for (at most timeoutMs); its
   * result is not judged. Idempotent; a closed checker never starts again.
   */
  async close(): Promise<void> {
    this.stop('close()');
    await this.attemptAnswered;
  }

  /** At once: no probe starts from now on and the one in flight is abandoned (its result ignored). Idempotent. */
  async destroy(): Promise<void> {
    this.stop('destroy()');
    this.attemptGuard?.cancel();
    this.attemptGuard = undefined;
    this.attemptSettled();
  }

  private attemptSettled(): void {
    const settle = this.settleAttempt;
    this.settleAttempt = undefined;
    this.attemptAnswered = undefined;
    settle?.();
  }

  private stop(reason: string): void {
    this.lifecycle.transition(['idle', 'running'], 'closed', reason);
    this.timer?.cancel();
    this.timer = undefined;
  }

  /**
   * Jitter only shortens the wait. Lengthening it would push the worst-case detection time past
   * intervalMs×fall + timeoutMs, the bound the reliability scenarios (T02, T03) hold us to.
   */
  private nextWait(): number {
    return this.currentIntervalMs() * (1 - this.jitterFraction * this.random());
  }

  /** The interval the next wait is based on, from the last judged result. */
  currentIntervalMs(): number {
    const { intervalMs, fastIntervalMs, downIntervalMs } = this.options;
    if (this.lastOutcome === 'changePending') return fastIntervalMs ?? intervalMs;
    if (this.memory.state === 'unhealthy') return downIntervalMs ?? intervalMs;
    return intervalMs;
  }

  private schedule(delayMs: number): void {
    this.timer = this.options.clock.setTimeout(() => this.runAttempt(), Math.max(0, delayMs));
  }

  private runAttempt(): void {
    this.timer = undefined;
    if (!this.lifecycle.is('running')) return;
    const { clock, timeoutMs, probe, backend } = this.options;
    const startedAt = clock.now();

    if (this.probeInFlight) {
      // Starting another probe would put two in flight; a probe this late is a failure in itself.
      this.judge({ ok: false, detail: `previous probe still running after ${Math.round(startedAt - this.probeStartedAt)}ms`, durationMs: 0 });
      this.schedule(this.nextWait());
      return;
    }

    this.probeInFlight = true;
    this.probeStartedAt = startedAt;
    let answered = false;
    this.attemptAnswered = new Promise<void>((resolve) => (this.settleAttempt = resolve));
    const answer = (result: ProbeResult): void => {
      if (answered) return;
      answered = true;
      this.attemptGuard?.cancel();
      this.attemptGuard = undefined;
      this.attemptSettled();
      if (!this.lifecycle.is('running')) return;
      this.judge(result);
      if (!this.lifecycle.is('running')) return;
      // A probe still running after the guard fired gets a full interval to settle before the next attempt.
      const elapsed = this.probeInFlight ? 0 : clock.now() - startedAt;
      this.schedule(this.nextWait() - elapsed);
    };

    let pending: Promise<ProbeResult>;
    try {
      pending = probe.check(backend, timeoutMs);
    } catch (err) {
      pending = Promise.reject(err);
    }
    // Armed after check() so that a probe honouring its own timeout (armed first, same delay) always wins the tie.
    this.attemptGuard = clock.setTimeout(() => answer({ ok: false, detail: `timeout after ${timeoutMs}ms (probe overran)`, durationMs: timeoutMs }), timeoutMs);
    pending.then(
      (result) => {
        this.probeInFlight = false;
        answer(result);
      },
      (err: unknown) => {
        this.probeInFlight = false;
        answer({ ok: false, detail: `probe error: ${errorMessage(err)}`, durationMs: Math.round(clock.now() - startedAt) });
      },
    );
  }

  private judge(result: ProbeResult): void {
    const from = this.memory.state;
    const { memory, outcome } = applyResult(this.memory, result.ok, this.options);
    this.memory = memory;
    this.lastOutcome = outcome;
    this.options.onResult({ backend: this.options.backend, result, at: this.options.clock.wallNow(), from, to: memory.state, outcome });
  }
}
