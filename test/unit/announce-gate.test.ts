import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide, type OnFailure, type VipInput } from '../../src/announce/decide';
import { gateNeed, type GateSpec } from '../../src/announce/gate';
import type { BackendStatus, HealthState, PoolSnapshot } from '../../src/health/health';
import { endpoint } from '../../src/net/endpoint';

/** Issue 10: vips[].gate {minHealthy: N | "P%", listeners: all | any} and onFailure: withdraw | pessimize. */

function pool(name: string, states: HealthState[]): PoolSnapshot {
  const backends: BackendStatus[] = states.map((state, i) => ({ backend: endpoint(`198.18.2${i + 1}.2`, 2379), state, since: 0 }));
  return { pool: name, version: 1, backends, healthy: backends.filter((b) => b.state === 'healthy').map((b) => b.backend), settled: states.every((s) => s !== 'unknown') };
}
const key = (i: number): string => endpoint(`198.18.2${i + 1}.2`, 2379).key;
const H = 'healthy' as const;
const U = 'unhealthy' as const;

function input(pools: HealthState[][], gate: GateSpec, onFailure: OnFailure = 'withdraw', extra: Partial<VipInput> & { drainedIdx?: number[][]; bound?: boolean[] } = {}): VipInput {
  const { drainedIdx, bound, ...rest } = extra;
  return {
    vip: '198.19.0.10',
    shuttingDown: false,
    drained: false,
    vipBound: true,
    minHealthyBackends: 1,
    gate,
    onFailure,
    listeners: pools.map((states, i) => ({
      id: `l${i}`,
      bound: bound?.[i] ?? true,
      pool: pool(`p${i}`, states),
      ...(drainedIdx ? { drained: (drainedIdx[i] ?? []).map(key) } : {}),
    })),
    ...rest,
  };
}

test('gateNeed: a count is taken as it is; a percentage of the configured backends rounds up, never below 1', () => {
  const cases: Array<[GateSpec['minHealthy'], number, number]> = [
    [2, 3, 2],
    [{ percent: 50 }, 3, 2],
    [{ percent: 50 }, 4, 2],
    [{ percent: 66 }, 3, 2],
    [{ percent: 67 }, 3, 3],
    [{ percent: 100 }, 5, 5],
    [{ percent: 1 }, 3, 1],
    [{ percent: 10 }, 10, 1],
    [{ percent: 30 }, 10, 3],
  ];
  for (const [minHealthy, configured, need] of cases) assert.equal(gateNeed({ minHealthy, listeners: 'all' }, configured), need, `${JSON.stringify(minHealthy)} of ${configured}`);
});

const all = (minHealthy: GateSpec['minHealthy']): GateSpec => ({ minHealthy, listeners: 'all' });
const any = (minHealthy: GateSpec['minHealthy']): GateSpec => ({ minHealthy, listeners: 'any' });

const cases: Array<{ name: string; in: VipInput; announce: boolean; route?: string; reason: string }> = [
  // numbers and percentages
  { name: '2-of-3 gate met', in: input([[H, H, U]], all(2)), announce: true, route: 'up', reason: 'ready' },
  { name: '2-of-3 gate failed: withdraw', in: input([[H, U, U]], all(2)), announce: false, reason: 'belowMinHealthy' },
  { name: '50% of 3 needs 2', in: input([[H, U, U]], all({ percent: 50 })), announce: false, reason: 'belowMinHealthy' },
  { name: '50% of 4 is met by 2', in: input([[H, H, U, U]], all({ percent: 50 })), announce: true, route: 'up', reason: 'ready' },
  { name: 'a percentage counts usable backends (drained ones do not count)', in: input([[H, H, U, U]], all({ percent: 50 }), 'withdraw', { drainedIdx: [[0]] }), announce: false, reason: 'belowMinHealthy' },
  // all / any
  { name: 'all: one failing listener fails the VIP', in: input([[H, H], [H, U]], all(2)), announce: false, reason: 'belowMinHealthy' },
  { name: 'any: one passing listener is enough', in: input([[H, H], [H, U]], any(2)), announce: true, route: 'up', reason: 'ready' },
  { name: 'any: one passing listener is enough even when the other has none', in: input([[H, H], [U, U]], any(2)), announce: true, route: 'up', reason: 'ready' },
  { name: 'any: none passing withdraws', in: input([[H, U], [U, U]], any(2)), announce: false, reason: 'belowMinHealthy' },
  { name: 'any: an unbound listener fails only itself', in: input([[H, H], [H, H]], any(1), 'withdraw', { bound: [false, true] }), announce: true, route: 'up', reason: 'ready' },
  { name: 'all: an unbound listener fails the VIP', in: input([[H, H], [H, H]], all(1), 'withdraw', { bound: [false, true] }), announce: false, reason: 'listenerNotBound' },
  { name: 'any: every listener unbound', in: input([[H], [H]], any(1), 'withdraw', { bound: [false, false] }), announce: false, reason: 'listenerNotBound' },
  // pessimize
  { name: 'pessimize: gate fails but every pool has a usable backend', in: input([[H, U, U]], all(2), 'pessimize'), announce: true, route: 'pessimized', reason: 'belowMinHealthy' },
  { name: 'pessimize: no healthy backend at all withdraws', in: input([[U, U, U]], all(2), 'pessimize'), announce: false, reason: 'noHealthyBackends' },
  { name: 'pessimize: the only healthy backend drained withdraws', in: input([[H, U, U]], all(2), 'pessimize', { drainedIdx: [[0]] }), announce: false, reason: 'noUsableBackends' },
  { name: 'pessimize: one listener pool empty withdraws (each listener needs one)', in: input([[H, H], [U, U]], all(2), 'pessimize'), announce: false, reason: 'noHealthyBackends' },
  { name: 'pessimize: both listeners below the gate but serving', in: input([[H, U], [H, U]], all(2), 'pessimize'), announce: true, route: 'pessimized', reason: 'belowMinHealthy' },
  { name: 'pessimize: any, none passing, but both serving', in: input([[H, U], [H, U]], any(2), 'pessimize'), announce: true, route: 'pessimized', reason: 'belowMinHealthy' },
  { name: 'pessimize: checks still running withdraw (never announced before rise)', in: input([['unknown', 'unknown', H]], all(2), 'pessimize'), announce: false, reason: 'starting' },
  { name: 'pessimize: an unbound listener withdraws', in: input([[H, U]], all(2), 'pessimize', { bound: [false] }), announce: false, reason: 'listenerNotBound' },
  { name: 'pessimize: a gate that passes is up', in: input([[H, H, U]], all(2), 'pessimize'), announce: true, route: 'up', reason: 'ready' },
  { name: 'pessimize: drained still withdraws', in: input([[H, U]], all(2), 'pessimize', { drained: true }), announce: false, reason: 'drained' },
  // draining (a drain's grace)
  { name: 'draining: a passing gate advertises the draining path', in: input([[H, H]], all(1), 'withdraw', { draining: true }), announce: true, route: 'draining', reason: 'draining' },
  { name: 'draining: a pessimized path drains too', in: input([[H, U]], all(2), 'pessimize', { draining: true }), announce: true, route: 'draining', reason: 'draining' },
  { name: 'draining: a failing gate still withdraws', in: input([[U, U]], all(1), 'withdraw', { draining: true }), announce: false, reason: 'noHealthyBackends' },
  { name: 'draining: past the grace (drained) withdraws', in: input([[H, H]], all(1), 'withdraw', { draining: true, drained: true }), announce: false, reason: 'drained' },
];

for (const c of cases) {
  test(`gate: ${c.name}`, () => {
    const d = decide(c.in);
    assert.equal(d.announce, c.announce, d.detail);
    assert.equal(d.reason, c.reason, d.detail);
    if (d.announce) assert.equal(d.route, c.route);
    assert.ok(d.detail.length > 0);
  });
}

test('gate: minHealthyBackends is the shorthand of gate {minHealthy: N, listeners: all}', () => {
  const short = input([[H, U, U]], all(2));
  const { gate: _, ...withoutGate } = short;
  assert.deepEqual(decide({ ...withoutGate, minHealthyBackends: 2 }), decide(short));
});

test('gate: the pessimized detail says why it was kept', () => {
  const d = decide(input([[H, U, U]], all(2), 'pessimize'));
  assert.equal(d.detail, '1/3 healthy in pool p0, need 2; pessimized: every listener still has a usable backend');
});
