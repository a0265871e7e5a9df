/**
 * The announce gate of a VIP (vips[].gate): how many usable backends each listener's pool needs, and
 * whether every listener or any one of them must pass.
 */
export interface GateSpec {
  /** A count of backends, or a percentage of the pool's configured backends. */
  readonly minHealthy: number | { readonly percent: number };
  readonly listeners: 'all' | 'any';
}

/**
 * Usable backends a pool of `configured` backends needs to pass. A percentage rounds up (50% of 3 is 2:
 * "half" must never be met by fewer than half), and never asks for less than 1: a pool with no usable
 * backend cannot serve, whatever the percentage.
 */
export function gateNeed(gate: GateSpec, configured: number): number {
  if (typeof gate.minHealthy === 'number') return gate.minHealthy;
  return Math.max(1, Math.ceil((gate.minHealthy.percent * configured) / 100 - 1e-9));
}

/** "2", "66%": how status and logs show a gate. */
export function formatGate(gate: GateSpec): string {
  const n = typeof gate.minHealthy === 'number' ? String(gate.minHealthy) : `${gate.minHealthy.percent}%`;
  return `minHealthy ${n}, listeners ${gate.listeners}`;
}
