import type { PoolSnapshot } from '../health/health';
import { gateNeed, type GateSpec } from './gate';

/**
 * Contract of the announce module's core: a pure function from what the node knows to whether a VIP
 * should be advertised, with which attributes, and a named reason either way. Status, logs, metrics
 * and hooks all show the reason.
 */
export type WithdrawReason =
  | 'shuttingDown'
  | 'drained'
  | 'vipNotBound'
  | 'listenerNotBound'
  | 'starting'
  | 'noHealthyBackends'
  | 'noUsableBackends'
  | 'belowMinHealthy'
  | 'holdDown'
  | 'damped';

/** Which attribute set the advertised path carries (vips[].attributes.{up, pessimized, draining}). */
export type RouteState = 'up' | 'pessimized' | 'draining';

/** Why a path is pessimized: the gate failure that would have withdrawn it under onFailure: withdraw. */
export type PessimizeReason = 'belowMinHealthy' | 'noHealthyBackends';

export type Decision =
  | { readonly announce: true; readonly route: 'up'; readonly reason: 'ready'; readonly detail: string }
  | { readonly announce: true; readonly route: 'pessimized'; readonly reason: PessimizeReason; readonly detail: string }
  | { readonly announce: true; readonly route: 'draining'; readonly reason: 'draining'; readonly detail: string }
  | { readonly announce: false; readonly reason: WithdrawReason; readonly detail: string };

export type OnFailure = 'withdraw' | 'pessimize';

export interface ListenerInput {
  readonly id: string;
  readonly bound: boolean;
  readonly pool: PoolSnapshot;
  /** Backend keys of the pool the operator drained (from the pool's load view). */
  readonly drained?: readonly string[];
  /** Backend keys of the pool passive health ejected (from the pool's load view). */
  readonly ejected?: readonly string[];
}

export interface VipInput {
  readonly vip: string;
  readonly shuttingDown: boolean;
  /** Drained (node or this VIP) and past the grace: withdrawn. */
  readonly drained: boolean;
  /** In a drain's grace: still advertised where the gate allows it, but with the draining attributes. */
  readonly draining?: boolean;
  readonly vipBound: boolean;
  /** Shorthand for gate {minHealthy: N, listeners: all}; `gate` wins when both are given. */
  readonly minHealthyBackends: number;
  readonly gate?: GateSpec;
  /** What a failing gate does (default withdraw). */
  readonly onFailure?: OnFailure;
  readonly listeners: readonly ListenerInput[];
}

interface ListenerVerdict {
  readonly pass: boolean;
  /** How it fails, as the withdrawal it causes; absent when it passes. */
  readonly failure?: { readonly reason: WithdrawReason; readonly detail: string };
  readonly usable: number;
}

/**
 * A VIP is announced (route `up`) iff it is on the node and its gate passes: every listener (`all`, the
 * default) or at least one (`any`) is bound and its pool has at least the gate's number of usable
 * backends (healthy, not drained, not ejected). When the gate fails, `onFailure: pessimize` keeps the
 * path with the pessimized attributes as long as the node can still serve something: every listener
 * bound, checks settled, and at least one usable backend in each listener's pool. Otherwise the first
 * failing condition names the withdrawal: operator intent first, then local plumbing, then backend
 * health, then backends that are healthy but out of service. In a drain's grace, a path that would be
 * advertised carries the draining attributes instead.
 */
export function decide(input: VipInput): Decision {
  if (input.shuttingDown) return withdraw('shuttingDown', 'vipd is shutting down');
  if (input.drained) return withdraw('drained', 'drained by the operator');
  if (!input.vipBound) return withdraw('vipNotBound', `${input.vip} is not on the node`);
  const gate: GateSpec = input.gate ?? { minHealthy: input.minHealthyBackends, listeners: 'all' };
  const unbound = input.listeners.find((l) => !l.bound);
  // With `all`, a listener that cannot accept fails the VIP before health is looked at.
  if (unbound && gate.listeners === 'all') return withdraw('listenerNotBound', `listener ${unbound.id} is not bound`);

  const verdicts = input.listeners.map((l) => judgeListener(l, gate));
  const passing = verdicts.filter((v) => v.pass).length;
  const gatePasses = gate.listeners === 'all' ? passing === verdicts.length : passing > 0;
  const draining = input.draining === true;
  if (gatePasses) {
    const summary = input.listeners.map((l, i) => `${l.id}: ${verdicts[i]!.usable}/${l.pool.backends.length}`).join(', ');
    if (draining) return { announce: true, route: 'draining', reason: 'draining', detail: `draining (GRACEFUL_SHUTDOWN); ${summary}` };
    return { announce: true, route: 'up', reason: 'ready', detail: gate.listeners === 'any' ? `${passing}/${verdicts.length} listeners pass; ${summary}` : summary };
  }
  const failure = verdicts.find((v) => !v.pass)!.failure!;
  if (input.onFailure === 'pessimize' && canStillServe(input.listeners, verdicts) && (failure.reason === 'belowMinHealthy' || failure.reason === 'noHealthyBackends')) {
    const detail = `${failure.detail}; pessimized: every listener still has a usable backend`;
    if (draining) return { announce: true, route: 'draining', reason: 'draining', detail: `draining (GRACEFUL_SHUTDOWN); ${detail}` };
    return { announce: true, route: 'pessimized', reason: failure.reason, detail };
  }
  if (unbound) return withdraw('listenerNotBound', `listener ${unbound.id} is not bound; no listener passes the gate`);
  return withdraw(failure.reason, failure.detail);
}

function judgeListener(l: ListenerInput, gate: GateSpec): ListenerVerdict {
  const total = l.pool.backends.length;
  const need = gateNeed(gate, total);
  const usable = usableCount(l);
  if (!l.bound) return { pass: false, usable, failure: { reason: 'listenerNotBound', detail: `listener ${l.id} is not bound` } };
  const healthy = l.pool.healthy.length;
  if (healthy < need) {
    const counts = `${healthy}/${total} healthy in pool ${l.pool.pool}, need ${need}`;
    if (!l.pool.settled) return { pass: false, usable, failure: { reason: 'starting', detail: `${counts}; checks still running` } };
    if (healthy === 0) return { pass: false, usable, failure: { reason: 'noHealthyBackends', detail: counts } };
    if (usable === 0) return { pass: false, usable, failure: { reason: 'noUsableBackends', detail: `${counts}; none of them usable (drained or ejected)` } };
    return { pass: false, usable, failure: { reason: 'belowMinHealthy', detail: counts } };
  }
  if (usable >= need) return { pass: true, usable };
  const out = outOfService(l);
  const counts = `${usable}/${total} usable in pool ${l.pool.pool} (${healthy} healthy, of which ${out.drained} drained and ${out.ejected} ejected), need ${need}`;
  return { pass: false, usable, failure: { reason: usable === 0 ? 'noUsableBackends' : 'belowMinHealthy', detail: counts } };
}

/** Pessimize only while every listener could serve a client now: bound, checks settled, one usable backend. */
function canStillServe(listeners: readonly ListenerInput[], verdicts: readonly ListenerVerdict[]): boolean {
  return listeners.every((l, i) => l.bound && l.pool.settled && verdicts[i]!.usable >= 1);
}

/** Healthy backends that are drained, and (not drained) ejected; a backend both drained and ejected counts once. */
function outOfService(l: ListenerInput): { drained: number; ejected: number } {
  const drained = new Set(l.drained ?? []);
  const ejected = new Set(l.ejected ?? []);
  let d = 0;
  let e = 0;
  for (const b of l.pool.healthy) {
    if (drained.has(b.key)) d++;
    else if (ejected.has(b.key)) e++;
  }
  return { drained: d, ejected: e };
}

function usableCount(l: ListenerInput): number {
  const out = outOfService(l);
  return l.pool.healthy.length - out.drained - out.ejected;
}

function withdraw(reason: WithdrawReason, detail: string): Decision {
  return { announce: false, reason, detail };
}

/**
 * Withdrawals that the hold-down and damping apply to: the node's own health, not operator intent.
 * noUsableBackends is left out on purpose. Passive health never ejects the last backend in service of
 * a pool, so an empty pool always involves an operator's backend drain, and undoing a drain must
 * restore the route at once through the gate, like undoing a node drain. An ejection that ends on its
 * own is already damped: it lasts at least the base ejection time and grows with each repeat.
 */
export function isHealthReason(reason: Decision['reason']): boolean {
  return reason === 'noHealthyBackends' || reason === 'belowMinHealthy' || reason === 'listenerNotBound' || reason === 'vipNotBound';
}
