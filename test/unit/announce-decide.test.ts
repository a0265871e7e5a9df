import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide, isHealthReason, type VipInput } from '../../src/announce/decide';
import type { BackendStatus, HealthState, PoolSnapshot } from '../../src/health/health';
import { endpoint } from '../../src/net/endpoint';

function pool(name: string, states: HealthState[]): PoolSnapshot {
  const backends: BackendStatus[] = states.map((state, i) => ({ backend: endpoint(`198.18.2${i + 1}.2`, 2379), state, since: 0 }));
  return {
    pool: name,
    version: 1,
    backends,
    healthy: backends.filter((b) => b.state === 'healthy').map((b) => b.backend),
    settled: states.every((s) => s !== 'unknown'),
  };
}

/** Backend i of any pool is `198.18.2{i+1}.2:2379`; `drained`/`ejected` list backend indexes per listener. */
const key = (i: number): string => endpoint(`198.18.2${i + 1}.2`, 2379).key;

function input(
  over: Partial<VipInput> & { pools?: HealthState[][]; bound?: boolean[]; drainedIdx?: number[][]; ejectedIdx?: number[][] } = {},
): VipInput {
  const pools = over.pools ?? [['healthy', 'healthy', 'healthy']];
  const { drainedIdx, ejectedIdx, ...rest } = over;
  return {
    vip: '198.19.0.10',
    shuttingDown: false,
    drained: false,
    vipBound: true,
    minHealthyBackends: 1,
    listeners: pools.map((states, i) => ({
      id: `cp:${2379 + i}`,
      bound: over.bound?.[i] ?? true,
      pool: pool(`p${i}`, states),
      ...(drainedIdx ? { drained: (drainedIdx[i] ?? []).map(key) } : {}),
      ...(ejectedIdx ? { ejected: (ejectedIdx[i] ?? []).map(key) } : {}),
    })),
    ...rest,
  };
}

const cases: Array<{ name: string; in: VipInput; announce: boolean; reason: string }> = [
  { name: 'all healthy', in: input(), announce: true, reason: 'ready' },
  { name: 'one healthy is enough by default', in: input({ pools: [['healthy', 'unhealthy', 'unhealthy']] }), announce: true, reason: 'ready' },
  { name: 'all unknown at start', in: input({ pools: [['unknown', 'unknown', 'unknown']] }), announce: false, reason: 'starting' },
  { name: 'one healthy while others unknown is enough', in: input({ pools: [['healthy', 'unknown', 'unknown']] }), announce: true, reason: 'ready' },
  { name: 'unknown never counts as healthy', in: input({ pools: [['unknown', 'unhealthy', 'unhealthy']] }), announce: false, reason: 'starting' },
  { name: 'all unhealthy', in: input({ pools: [['unhealthy', 'unhealthy', 'unhealthy']] }), announce: false, reason: 'noHealthyBackends' },
  { name: 'below minHealthy', in: input({ minHealthyBackends: 2, pools: [['healthy', 'unhealthy', 'unhealthy']] }), announce: false, reason: 'belowMinHealthy' },
  { name: 'minHealthy met', in: input({ minHealthyBackends: 2, pools: [['healthy', 'healthy', 'unhealthy']] }), announce: true, reason: 'ready' },
  { name: 'every listener pool must pass', in: input({ pools: [['healthy'], ['unhealthy']] }), announce: false, reason: 'noHealthyBackends' },
  { name: 'listener not bound', in: input({ bound: [false] }), announce: false, reason: 'listenerNotBound' },
  { name: 'vip not on the node', in: input({ vipBound: false }), announce: false, reason: 'vipNotBound' },
  { name: 'drained beats healthy', in: input({ drained: true }), announce: false, reason: 'drained' },
  { name: 'shutting down beats drained', in: input({ drained: true, shuttingDown: true }), announce: false, reason: 'shuttingDown' },
  { name: 'drained beats unbound', in: input({ drained: true, vipBound: false }), announce: false, reason: 'drained' },
  { name: 'unbound listener beats unhealthy pool', in: input({ bound: [false], pools: [['unhealthy']] }), announce: false, reason: 'listenerNotBound' },
  // Issue 9 defect 4 (T32): a pool whose backends are all drained or ejected cannot serve.
  { name: 'every backend drained', in: input({ drainedIdx: [[0, 1, 2]] }), announce: false, reason: 'noUsableBackends' },
  { name: 'every backend ejected', in: input({ ejectedIdx: [[0, 1, 2]] }), announce: false, reason: 'noUsableBackends' },
  { name: 'drained and ejected together empty the pool', in: input({ drainedIdx: [[0, 1]], ejectedIdx: [[2]] }), announce: false, reason: 'noUsableBackends' },
  { name: 'the only healthy backend drained', in: input({ pools: [['healthy', 'unhealthy', 'unhealthy']], drainedIdx: [[0]] }), announce: false, reason: 'noUsableBackends' },
  { name: 'draining unhealthy backends changes nothing', in: input({ pools: [['healthy', 'unhealthy', 'unhealthy']], drainedIdx: [[1, 2]] }), announce: true, reason: 'ready' },
  { name: 'one usable backend is enough by default', in: input({ drainedIdx: [[0]], ejectedIdx: [[1]] }), announce: true, reason: 'ready' },
  { name: 'a backend both drained and ejected counts once', in: input({ drainedIdx: [[0]], ejectedIdx: [[0]] }), announce: true, reason: 'ready' },
  { name: 'minHealthy counts usable, not healthy', in: input({ minHealthyBackends: 2, drainedIdx: [[0, 1]] }), announce: false, reason: 'belowMinHealthy' },
  { name: 'minHealthy met by usable backends', in: input({ minHealthyBackends: 2, drainedIdx: [[0]] }), announce: true, reason: 'ready' },
  { name: 'no healthy backend beats no usable backend', in: input({ pools: [['unhealthy', 'unhealthy']], drainedIdx: [[0, 1]] }), announce: false, reason: 'noHealthyBackends' },
  { name: 'checks still running beat drains', in: input({ pools: [['unknown', 'unknown']], drainedIdx: [[0, 1]] }), announce: false, reason: 'starting' },
  { name: 'every listener pool must have a usable backend', in: input({ pools: [['healthy'], ['healthy']], drainedIdx: [[], [0]] }), announce: false, reason: 'noUsableBackends' },
  { name: 'node drain beats backend drains', in: input({ drained: true, drainedIdx: [[0, 1, 2]] }), announce: false, reason: 'drained' },
  { name: 'a drained key of another pool does not count here', in: input({ pools: [['healthy']], drainedIdx: [[1]] }), announce: true, reason: 'ready' },
];

for (const c of cases) {
  test(`decide: ${c.name}`, () => {
    const d = decide(c.in);
    assert.equal(d.announce, c.announce);
    assert.equal(d.reason, c.reason);
    assert.ok(d.detail.length > 0, 'every decision explains itself');
  });
}

test('decide is pure: same input, same output, input untouched', () => {
  const i = input({ pools: [['healthy', 'unhealthy']] });
  const before = JSON.stringify(i);
  assert.deepEqual(decide(i), decide(i));
  assert.equal(JSON.stringify(i), before);
});

test('decide: noUsableBackends explains the counts', () => {
  const d = decide(input({ drainedIdx: [[0, 1]], ejectedIdx: [[2]] }));
  assert.equal(d.reason, 'noUsableBackends');
  assert.equal(d.detail, '0/3 usable in pool p0 (3 healthy, of which 2 drained and 1 ejected), need 1');
});

test('isHealthReason: noUsableBackends is not held down (drains undo at once, ejections damp themselves)', () => {
  assert.equal(isHealthReason('noUsableBackends'), false);
  assert.equal(isHealthReason('noHealthyBackends'), true);
  assert.equal(isHealthReason('belowMinHealthy'), true);
});
