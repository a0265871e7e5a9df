import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpoint } from '../../src/net/endpoint';
import type { ListenerSpec, PoolSpec } from '../../src/proxy/proxy';
import { perWorkerLimits, perWorkerPoolSpec, perWorkerSpec, share } from '../../src/dataplane/workers/shares';
import { isProtocolMessage } from '../../src/dataplane/workers/protocol';
import { testPoolSpec } from '../fakes/proxy-harness';

const a = endpoint('10.0.0.1', 6443);
const b = endpoint('10.0.0.2', 6443);

describe('worker shares of the caps', () => {
  const pool = testPoolSpec([{ endpoint: a, weight: 1, maxConnections: 101 }, { endpoint: b, weight: 3 }], { queue: { size: 5, timeoutMs: 700 } });
  const sum = (values: readonly number[]): number => values.reduce((x, y) => x + y, 0);
  const shares = (workers: number): PoolSpec[] => Array.from({ length: workers }, (_, index) => perWorkerPoolSpec(pool, workers, index));

  it('divides per-backend caps and the queue among the workers so that the shares add up to the total', () => {
    const cases: Array<[workers: number, capA: number[], queue: number[]]> = [
      [1, [101], [5]],
      [2, [51, 50], [3, 2]],
      [4, [26, 25, 25, 25], [2, 1, 1, 1]],
    ];
    for (const [workers, capA, queue] of cases) {
      const specs = shares(workers);
      assert.deepEqual(specs.map((s) => s.backends[0]!.maxConnections), capA, `${workers} workers`);
      assert.equal(sum(capA), 101);
      assert.deepEqual(specs.map((s) => s.queue.size), queue, `${workers} workers`);
      for (const share of specs) {
        assert.equal(share.backends[1]!.maxConnections, undefined, 'no cap stays no cap');
        assert.equal(share.queue.timeoutMs, 700);
        assert.deepEqual(share.backends.map((x) => x.weight), [1, 3]);
      }
    }
  });

  it('gives every worker at least 1 of a cap smaller than the number of workers', () => {
    const specs = shares(64);
    assert.equal(sum(specs.map((s) => s.backends[0]!.maxConnections!)), 101, '37 workers with 2, 27 with 1');
    assert.deepEqual(new Set(specs.map((s) => s.queue.size)), new Set([1]), 'a queue of 5 over 64 workers: 1 each');
    assert.equal(share(0, 4, 0), 0);
    assert.equal(share(3, 4, 3), 1);
  });

  it('keeps a queue that is off, off', () => {
    assert.equal(perWorkerPoolSpec(testPoolSpec([a]), 4, 0).queue.size, 0);
  });

  it('divides the listener cap and hands the listener its pool share', () => {
    const spec: ListenerSpec = { id: 'cp:6443', vip: 'cp', address: '198.18.0.10', port: 6443, pool, maxConnections: 1000 };
    const specs = [0, 1, 2].map((index) => perWorkerSpec(spec, 3, index));
    assert.deepEqual(specs.map((s) => s.maxConnections), [334, 333, 333]);
    assert.deepEqual(specs.map((s) => s.pool.backends[0]!.maxConnections), [34, 34, 33]);
    assert.equal(perWorkerSpec({ ...spec, maxConnections: undefined }, 3, 0).maxConnections, undefined);
    assert.equal(spec.maxConnections, 1000, 'the original spec is untouched');
  });

  it('divides the global cap but not the per-source cap', () => {
    assert.deepEqual(perWorkerLimits({ maxConnections: 10_001, maxConnectionsPerSource: 10 }, 2, 0), { maxConnections: 5001, maxConnectionsPerSource: 10 });
    assert.deepEqual(perWorkerLimits({ maxConnections: 10_001, maxConnectionsPerSource: 10 }, 2, 1), { maxConnections: 5000, maxConnectionsPerSource: 10 });
    assert.deepEqual(perWorkerLimits({}, 2, 0), {});
  });
});

describe('worker protocol', () => {
  it("takes only vipd's messages from the shared channel", () => {
    const cases: Array<[unknown, boolean]> = [
      [{ type: 'vipd:ready' }, true],
      [{ type: 'vipd:report', listeners: [], pools: [] }, true],
      // node:cluster and prom-client talk on the same channel.
      [{ cmd: 'NODE_CLUSTER', act: 'online' }, false],
      [{ type: 'prom-client:getMetricsReq', requestId: 1 }, false],
      ['vipd:ready', false],
      [null, false],
    ];
    for (const [message, ours] of cases) assert.equal(isProtocolMessage(message), ours, JSON.stringify(message));
  });
});
