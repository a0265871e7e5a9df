import type { PoolSnapshot } from '../health/health';

/**
 * Contract of the announce module's core: a pure function from what the node knows to whether a VIP
 * should be advertised, with a named reason either way. Status, logs and metrics all show the reason.
 */
export type WithdrawReason =
  | 'shuttingDown'
  | 'drained'
  | 'vipNotBound'
  | 'listenerNotBound'
  | 'starting'
  | 'noHealthyBackends'
  | 'belowMinHealthy'
  | 'holdDown';

export type Decision =
  | { readonly announce: true; readonly reason: 'ready'; readonly detail: string }
  | { readonly announce: false; readonly reason: WithdrawReason; readonly detail: string };

export interface ListenerInput {
  readonly id: string;
  readonly bound: boolean;
  readonly pool: PoolSnapshot;
}

export interface VipInput {
  readonly vip: string;
  readonly shuttingDown: boolean;
  readonly drained: boolean;
  readonly vipBound: boolean;
  readonly minHealthyBackends: number;
  readonly listeners: readonly ListenerInput[];
}

/**
 * A VIP is announced iff it is on the node, every listener is bound, and every listener's pool has at
 * least minHealthyBackends healthy backends. The first failing condition, in this order, names the reason:
 * operator intent first, then local plumbing, then backend health.
 */
export function decide(input: VipInput): Decision {
  if (input.shuttingDown) return withdraw('shuttingDown', 'vipd is shutting down');
  if (input.drained) return withdraw('drained', 'node drained by the operator');
  if (!input.vipBound) return withdraw('vipNotBound', `${input.vip} is not on the node`);
  const unbound = input.listeners.find((l) => !l.bound);
  if (unbound) return withdraw('listenerNotBound', `listener ${unbound.id} is not bound`);

  for (const l of input.listeners) {
    const healthy = l.pool.healthy.length;
    if (healthy >= input.minHealthyBackends) continue;
    const counts = `${healthy}/${l.pool.backends.length} healthy in pool ${l.pool.pool}, need ${input.minHealthyBackends}`;
    if (!l.pool.settled) return withdraw('starting', `${counts}; checks still running`);
    if (healthy === 0) return withdraw('noHealthyBackends', counts);
    return withdraw('belowMinHealthy', counts);
  }
  const summary = input.listeners.map((l) => `${l.id}: ${l.pool.healthy.length}/${l.pool.backends.length}`).join(', ');
  return { announce: true, reason: 'ready', detail: summary };
}

function withdraw(reason: WithdrawReason, detail: string): Decision {
  return { announce: false, reason, detail };
}

/** Withdrawals that the hold-down applies to: the node's own health, not operator intent. */
export function isHealthReason(reason: Decision['reason']): boolean {
  return reason === 'noHealthyBackends' || reason === 'belowMinHealthy' || reason === 'listenerNotBound' || reason === 'vipNotBound';
}
