import type { Clock } from '../lib/clock';
import { VipdError } from '../lib/errors';
import { ListenerSet } from '../lib/listener-set';
import type { Logger } from '../lib/logger';
import { onCollect, type Metrics } from '../lib/metrics';
import { StateMachine } from '../lib/transition';
import type { Endpoint } from '../net/endpoint';
import { BackendChecker, DEFAULT_JITTER_FRACTION, type CheckerLifecycle, type CheckRecord } from './checker';
import type {
  BackendStatus,
  CheckSpec,
  HealthState,
  HealthTransition,
  PoolHealth,
  PoolSnapshot,
  Probe,
  ProbeResult,
} from './health';
import { createProbe } from './probe';

export interface PoolHealthOptions {
  readonly pool: string;
  /** In configured order; `healthy` in every snapshot keeps this order. */
  readonly backends: readonly Endpoint[];
  readonly check: CheckSpec;
  /** Replaces the probe built from `check` (tests, or a shared probe). */
  readonly probe?: Probe;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Uniform [0, 1) for jitter; Math.random unless a test pins it. */
  readonly random?: () => number;
}

const STATES: readonly HealthState[] = ['unknown', 'healthy', 'unhealthy'];
const FIRST_PROBE_SPACING_MS = 1;

type TransitionListener = (snapshot: PoolSnapshot, transition: HealthTransition | undefined) => void;
type Change = { readonly snapshot: PoolSnapshot; readonly transition: HealthTransition | undefined };

/**
 * One checker per backend, folded into immutable pool snapshots. The version increments exactly when a
 * backend changes state, and listeners hear of exactly those changes. snapshot() may also return a new
 * object with the same version whose only difference is a fresher lastResult.
 * Throws VipdError VIPD_ERR_CONFIG on thresholds or timings no checker could honour, or a backend listed twice.
 */
export function createPoolHealth(options: PoolHealthOptions): PoolHealth {
  const { pool, clock, metrics } = options;
  let backends = options.backends;
  let check = options.check;
  validate(pool, backends, check);
  let probe = options.probe ?? createProbe(check);
  const log = withBindings(options.logger, { component: 'health', pool });

  const createdAt = clock.wallNow();
  let states: HealthState[] = backends.map(() => 'unknown');
  let since: number[] = backends.map(() => createdAt);
  let lastResults: Array<(ProbeResult & { readonly at: number }) | undefined> = backends.map(() => undefined);
  let current = buildSnapshot(pool, 0, backends, states, since, lastResults);
  /** A probe result arrived that `current` does not show yet; rebuilt lazily, since most are never read. */
  let resultsNewerThanSnapshot = false;
  // One faulty subscriber must not stop the others from hearing about the change, nor the checks.
  const listeners = new ListenerSet<Change>((err) =>
    log.error({ event: 'listenerError', err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'health change listener threw'),
  );
  const lifecycle = new StateMachine<CheckerLifecycle>('idle', { machine: 'poolHealth', logger: log });
  let closed: Promise<void> | undefined;

  backends.forEach((backend, index) => setStateGauge(metrics, pool, backend, states[index]!));

  // Probe counts per backend key, folded into the metric when it is read: a labelled inc() hashes its
  // labels on every call, 1,000 times a second at 1,000 backends (bench "checks").
  const unfolded = new Map<string, { ok: number; fail: number }>();
  const stopFolding = onCollect(metrics.healthChecks, () => {
    for (const [backend, counts] of unfolded) {
      if (counts.ok > 0) metrics.healthChecks.inc({ pool, backend, result: 'ok' }, counts.ok);
      if (counts.fail > 0) metrics.healthChecks.inc({ pool, backend, result: 'fail' }, counts.fail);
      counts.ok = 0;
      counts.fail = 0;
    }
  });
  const probeDebug = log.isLevelEnabled('debug');
  const random = options.random ?? Math.random;

  function createChecker(backend: Endpoint, initialState: HealthState, firstDelayMs?: number): BackendChecker {
    const backendLog = log.child({ backend: backend.key });
    let counts = unfolded.get(backend.key);
    if (counts === undefined) unfolded.set(backend.key, (counts = { ok: 0, fail: 0 }));
    const backendCounts = counts;
    const checker: BackendChecker = new BackendChecker({
      backend,
      probe,
      firstDelayMs,
      intervalMs: check.intervalMs,
      fastIntervalMs: check.fastIntervalMs,
      downIntervalMs: check.downIntervalMs,
      timeoutMs: check.timeoutMs,
      rise: check.rise,
      fall: check.fall,
      clock,
      random,
      logger: backendLog,
      initialState,
      // By checker, not by a captured index: a reload reorders and removes backends under running checkers.
      onResult: (record) => {
        const index = checkerIndex.get(checker);
        if (index !== undefined) onResult(index, record, backendLog, backendCounts);
      },
    });
    return checker;
  }
  let checkers: BackendChecker[] = [];
  /** Where each checker's backend is now; rebuilt with `checkers`, so a result finds its slot without a scan. */
  let checkerIndex = new Map<BackendChecker, number>();
  const setCheckers = (next: BackendChecker[]): void => {
    checkers = next;
    checkerIndex = new Map(next.map((checker, index) => [checker, index]));
  };
  // HAProxy spreads the first checks of a backend list over the interval; so do we, but only as far as
  // needed for about one probe start per FIRST_PROBE_SPACING_MS: three backends still start at once (a
  // node becomes ready as fast as before), 1,000 at 1 s start 1 ms apart instead of 1,000 within the
  // 100 ms of start-up jitter, where they would stay bunched (every later wait is relative to the last)
  // and an http burst of 1,000 probes would hold the event loop past their timeouts (bench "checks").
  const spreadMs = Math.min(check.intervalMs, backends.length * FIRST_PROBE_SPACING_MS);
  const spread = spreadMs > check.intervalMs * DEFAULT_JITTER_FRACTION;
  setCheckers(backends.map((backend, index) => createChecker(backend, 'unknown', spread ? (spreadMs * (index + random())) / backends.length : undefined)));

  function onResult(index: number, record: CheckRecord, backendLog: Logger, counts: { ok: number; fail: number }): void {
    const { backend, result, from, to, outcome } = record;
    if (result.ok) counts.ok++;
    else counts.fail++;
    metrics.healthCheckDuration.observe({ pool }, result.durationMs / 1000);
    lastResults[index] = Object.freeze({ ...result, at: record.at });
    resultsNewerThanSnapshot = true;
    // The object would be built (and thrown away) per probe even with debug off.
    if (probeDebug) backendLog.debug({ event: 'healthProbe', ok: result.ok, detail: result.detail, durationMs: result.durationMs, outcome, state: to }, 'probe');
    if (outcome !== 'changed') return;
    const labels = { pool, backend: backend.key };

    states[index] = to;
    since[index] = record.at;
    current = buildSnapshot(pool, current.version + 1, backends, states, since, lastResults);
    resultsNewerThanSnapshot = false;
    setStateGauge(metrics, pool, backend, to);
    metrics.healthTransitions.inc({ ...labels, to });
    // Losing a backend is what an operator looks for first; gaining one is routine.
    backendLog[to === 'unhealthy' ? 'warn' : 'info'](
      { event: 'healthTransition', from, to, detail: result.detail, durationMs: result.durationMs, healthy: current.healthy.length, total: backends.length },
      `backend ${backend.key} ${from} -> ${to}: ${result.detail}`,
    );

    const transition: HealthTransition = Object.freeze({ pool, backend, from, to, result });
    listeners.emit({ snapshot: current, transition });
  }

  function reconfigure(nextBackends: readonly Endpoint[], nextCheck: CheckSpec): void {
    validate(pool, nextBackends, nextCheck);
    if (lifecycle.is('closed')) return;
    const checkChanged = JSON.stringify(nextCheck) !== JSON.stringify(check);
    const nextProbe = checkChanged ? (options.probe ?? createProbe(nextCheck)) : probe;
    const running = lifecycle.is('running');
    const oldIndex = new Map(backends.map((b, i) => [b.key, i]));
    const nextKeys = new Set(nextBackends.map((b) => b.key));
    const retired: BackendChecker[] = [];
    backends.forEach((b, i) => {
      if (nextKeys.has(b.key)) return;
      retired.push(checkers[i]!);
      for (const state of STATES) metrics.backendState.remove({ pool, backend: b.key, state });
      log.info({ event: 'healthRemoved', backend: b.key, state: states[i] }, `backend ${b.key} removed by reload: no longer checked`);
    });
    const now = clock.wallNow();
    const nextStates: HealthState[] = [];
    const nextSince: number[] = [];
    const nextResults: Array<(ProbeResult & { readonly at: number }) | undefined> = [];
    const nextCheckers: BackendChecker[] = [];
    // The new checkers are built with the new check and probe.
    const previousProbe = probe;
    check = nextCheck;
    probe = nextProbe;
    const started: BackendChecker[] = [];
    for (const backend of nextBackends) {
      const i = oldIndex.get(backend.key);
      if (i === undefined) {
        nextStates.push('unknown');
        nextSince.push(now);
        nextResults.push(undefined);
        const checker = createChecker(backend, 'unknown');
        nextCheckers.push(checker);
        started.push(checker);
        setStateGauge(metrics, pool, backend, 'unknown');
        log.info({ event: 'healthAdded', backend: backend.key }, `backend ${backend.key} added by reload: unknown until ${nextCheck.rise} passing checks`);
        continue;
      }
      nextStates.push(states[i]!);
      nextSince.push(since[i]!);
      nextResults.push(lastResults[i]);
      if (checkChanged) {
        retired.push(checkers[i]!);
        const checker = createChecker(backend, states[i]!);
        nextCheckers.push(checker);
        started.push(checker);
      } else nextCheckers.push(checkers[i]!);
    }
    backends = nextBackends;
    states = nextStates;
    since = nextSince;
    lastResults = nextResults;
    setCheckers(nextCheckers);
    const replacedProbe = checkChanged && options.probe === undefined ? previousProbe : undefined;
    // A replaced probe (its gRPC channels) is closed once the checkers that used it have stopped.
    void Promise.all(retired.map((checker) => checker.close())).then(() => replacedProbe?.close?.());
    if (checkChanged) log.info({ event: 'healthReconfigured', kind: nextProbe.kind, intervalMs: check.intervalMs, timeoutMs: check.timeoutMs, rise: check.rise, fall: check.fall }, 'check settings changed by reload; backends keep their state');
    current = buildSnapshot(pool, current.version + 1, backends, states, since, lastResults);
    resultsNewerThanSnapshot = false;
    if (running) for (const checker of started) checker.start();
    listeners.emit({ snapshot: current, transition: undefined });
  }

  function stop(how: 'close' | 'destroy'): Promise<void> {
    const wasRunning = lifecycle.is('running');
    if (lifecycle.transition(['idle', 'running'], 'closed', `${how}()`)) {
      listeners.clear();
      closed = Promise.all(checkers.map((checker) => (how === 'close' ? checker.close() : checker.destroy()))).then(() => {
        // Only a probe this pool built is its to close; an injected one belongs to its owner.
        if (options.probe === undefined) probe.close?.();
        // Counts stay exact for a last scrape: fold what is pending before letting go of the hook.
        void metrics.healthChecks.get().finally(stopFolding);
        if (wasRunning) log.info({ event: 'healthStop' }, 'health checks stopped');
      });
    } else if (how === 'destroy') {
      // A close() under way: abandon the probes it waits for.
      for (const checker of checkers) void checker.destroy();
    }
    return closed ?? Promise.resolve();
  }

  return {
    pool,
    start(): void {
      if (!lifecycle.transition(['idle'], 'running', 'start()')) return;
      log.info({ event: 'healthStart', kind: probe.kind, backends: backends.length, intervalMs: check.intervalMs, timeoutMs: check.timeoutMs, rise: check.rise, fall: check.fall }, 'health checks started');
      for (const checker of checkers) checker.start();
    },
    close(): Promise<void> {
      return stop('close');
    },
    destroy(): Promise<void> {
      return stop('destroy');
    },
    snapshot(): PoolSnapshot {
      if (resultsNewerThanSnapshot) {
        // Same version: states are unchanged, only lastResult is fresher (status pages want the latest probe).
        current = buildSnapshot(pool, current.version, backends, states, since, lastResults);
        resultsNewerThanSnapshot = false;
      }
      return current;
    },
    onChange(listener: TransitionListener): () => void {
      return listeners.add(({ snapshot, transition }) => listener(snapshot, transition));
    },
    reconfigure,
  };
}

function buildSnapshot(
  pool: string,
  version: number,
  backends: readonly Endpoint[],
  states: readonly HealthState[],
  since: readonly number[],
  lastResults: ReadonlyArray<(ProbeResult & { readonly at: number }) | undefined>,
): PoolSnapshot {
  const statuses: BackendStatus[] = backends.map((backend, index) => {
    const lastResult = lastResults[index];
    return Object.freeze({ backend, state: states[index]!, since: since[index]!, ...(lastResult !== undefined ? { lastResult } : {}) });
  });
  return Object.freeze({
    pool,
    version,
    backends: Object.freeze(statuses),
    healthy: Object.freeze(statuses.filter((s) => s.state === 'healthy').map((s) => s.backend)),
    settled: statuses.every((s) => s.state !== 'unknown'),
  });
}

function setStateGauge(metrics: Metrics, pool: string, backend: Endpoint, state: HealthState): void {
  for (const candidate of STATES) metrics.backendState.set({ pool, backend: backend.key, state: candidate }, candidate === state ? 1 : 0);
}

function validate(pool: string, backends: readonly Endpoint[], check: CheckSpec): void {
  const problems: string[] = [];
  if (!(Number.isInteger(check.rise) && check.rise >= 1)) problems.push(`rise must be an integer ≥ 1, got ${check.rise}`);
  if (!(Number.isInteger(check.fall) && check.fall >= 1)) problems.push(`fall must be an integer ≥ 1, got ${check.fall}`);
  if (!(check.intervalMs > 0 && Number.isFinite(check.intervalMs))) problems.push(`intervalMs must be > 0, got ${check.intervalMs}`);
  if (!(check.timeoutMs > 0 && Number.isFinite(check.timeoutMs))) problems.push(`timeoutMs must be > 0, got ${check.timeoutMs}`);
  for (const key of ['fastIntervalMs', 'downIntervalMs'] as const) {
    const value = check[key];
    if (value !== undefined && !(value > 0 && Number.isFinite(value))) problems.push(`${key} must be > 0, got ${value}`);
  }
  const seen = new Set<string>();
  for (const backend of backends) {
    if (seen.has(backend.key)) problems.push(`backend ${backend.key} is listed twice`);
    seen.add(backend.key);
  }
  if (problems.length > 0) throw new VipdError('VIPD_ERR_CONFIG', `health of pool ${pool}: ${problems.join('; ')}`);
}

/** The composition root may already have bound these; pino would repeat a key bound twice. */
function withBindings(logger: Logger, bindings: Record<string, string>): Logger {
  const existing = logger.bindings();
  const missing = Object.fromEntries(Object.entries(bindings).filter(([key, value]) => existing[key] !== value));
  return Object.keys(missing).length > 0 ? logger.child(missing) : logger;
}
