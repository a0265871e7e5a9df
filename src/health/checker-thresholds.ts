import type { HealthState } from './health';

/**
 * The rise/fall state machine of one backend, with no time in it: the checker feeds it results and
 * acts on what it returns, and tests drive it from a case table.
 */
export interface Thresholds {
  /** Consecutive passes that make a backend healthy. */
  readonly rise: number;
  /** Consecutive failures that make a backend unhealthy. */
  readonly fall: number;
}

/** A backend's state and the current run of identical results (only one of the two is non-zero). */
export interface ThresholdMemory {
  readonly state: HealthState;
  readonly successes: number;
  readonly failures: number;
}

/**
 * Envoy's classification of one result: it changed the state, it moved toward a change that the
 * thresholds have not confirmed yet, or it confirmed the current state.
 */
export type CheckOutcome = 'changed' | 'changePending' | 'unchanged';

export const initialMemory: ThresholdMemory = Object.freeze({ state: 'unknown', successes: 0, failures: 0 });

/**
 * 'unknown' is a state of its own, not a lean toward either side: a new backend must earn `rise`
 * passes before it may take traffic, and `fall` failures mark it down without ever having been up.
 */
export function applyResult(
  memory: ThresholdMemory,
  ok: boolean,
  thresholds: Thresholds,
): { readonly memory: ThresholdMemory; readonly outcome: CheckOutcome } {
  const target: HealthState = ok ? 'healthy' : 'unhealthy';
  const successes = ok ? memory.successes + 1 : 0;
  const failures = ok ? 0 : memory.failures + 1;
  const run = ok ? successes : failures;
  const needed = ok ? thresholds.rise : thresholds.fall;
  if (memory.state === target) return { memory: { state: target, successes, failures }, outcome: 'unchanged' };
  if (run >= needed) return { memory: { state: target, successes, failures }, outcome: 'changed' };
  return { memory: { state: memory.state, successes, failures }, outcome: 'changePending' };
}
