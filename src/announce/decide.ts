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
  | 'noUsableBackends'
  | 'belowMinHealthy'
  | 'holdDown';

export type Decision =
  | { readonly announce: true; readonly reason: 'ready'; readonly detail: string }
  | { readonly announce: false; readonly reason: WithdrawReason; readonly detail: string };

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
  readonly drained: boolean;
  readonly vipBound: boolean;
  readonly minHealthyBackends: number;
  readonly listeners: readonly ListenerInput[];
}

/**
 * A VIP is announced iff it is on the node, every listener is bound, and every listener's pool has at
 * least minHealthyBackends usable backends: healthy, not drained and not ejected. The first failing
 * condition, in this order, names the reason: operator intent first, then local plumbing, then backend
 * health, then backends that are healthy but out of service.
 */
export function decide(input: VipInput): Decision {
  if (input.shuttingDown) return withdraw('shuttingDown', 'vipd is shutting down');
  if (input.drained) return withdraw('drained', 'node drained by the operator');
  if (!input.vipBound) return withdraw('vipNotBound', `${input.vip} is not on the node`);
  const unbound = input.listeners.find((l) => !l.bound);
  if (unbound) return withdraw('listenerNotBound', `listener ${unbound.id} is not bound`);

  const need = input.minHealthyBackends;
  for (const l of input.listeners) {
    const healthy = l.pool.healthy.length;
    const total = l.pool.backends.length;
    if (healthy < need) {
      const counts = `${healthy}/${total} healthy in pool ${l.pool.pool}, need ${need}`;
      if (!l.pool.settled) return withdraw('starting', `${counts}; checks still running`);
      if (healthy === 0) return withdraw('noHealthyBackends', counts);
      return withdraw('belowMinHealthy', counts);
    }
    const out = outOfService(l);
    const usable = healthy - out.drained - out.ejected;
    if (usable >= need) continue;
    const counts = `${usable}/${total} usable in pool ${l.pool.pool} (${healthy} healthy, of which ${out.drained} drained and ${out.ejected} ejected), need ${need}`;
    return withdraw(usable === 0 ? 'noUsableBackends' : 'belowMinHealthy', counts);
  }
  const summary = input.listeners.map((l) => `${l.id}: ${usableCount(l)}/${l.pool.backends.length}`).join(', ');
  return { announce: true, reason: 'ready', detail: summary };
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
 * Withdrawals that the hold-down applies to: the node's own health, not operator intent.
 * noUsableBackends is left out on purpose. Passive health never ejects the last backend in service of
 * a pool, so an empty pool always involves an operator's backend drain, and undoing a drain must
 * restore the route at once through the gate, like undoing a node drain. An ejection that ends on its
 * own is already damped: it lasts at least the base ejection time and grows with each repeat.
 */
export function isHealthReason(reason: Decision['reason']): boolean {
  return reason === 'noHealthyBackends' || reason === 'belowMinHealthy' || reason === 'listenerNotBound' || reason === 'vipNotBound';
}
