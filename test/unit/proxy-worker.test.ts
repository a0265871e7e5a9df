import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpoint } from '../../src/net/endpoint';
import type { ListenerSpec } from '../../src/proxy/proxy';
import { perWorkerLimits, perWorkerPoolSpec, perWorkerSpec } from '../../src/proxy/worker-pool';
import { isProtocolMessage } from '../../src/proxy/worker-protocol';
import { testPoolSpec } from '../fakes/proxy-harness';

const a = endpoint('10.0.0.1', 6443);
const b = endpoint('10.0.0.2', 6443);

describe('worker shares of the caps', () => {
  const pool = testPoolSpec([{ endpoint: a, weight: 1, maxConnections: 101 }, { endpoint: b, weight: 3 }], { queue: { size: 5, timeoutMs: 700 } });

  it('divides per-backend caps and the queue among the workers, rounding up', () => {
    const cases: Array<[workers: number, capA: number, queue: number]> = [
      [1, 101, 5],
      [2, 51, 3],
      [4, 26, 2],
      [64, 2, 1],
    ];
    for (const [workers, capA, queue] of cases) {
      const share = perWorkerPoolSpec(pool, workers);
      assert.equal(share.backends[0]!.maxConnections, capA, `${workers} workers`);
      assert.equal(share.backends[1]!.maxConnections, undefined, 'no cap stays no cap');
      assert.equal(share.queue.size, queue, `${workers} workers`);
      assert.equal(share.queue.timeoutMs, 700);
      assert.deepEqual(share.backends.map((x) => x.weight), [1, 3]);
    }
  });

  it('keeps a queue that is off, off', () => {
    assert.equal(perWorkerPoolSpec(testPoolSpec([a]), 4).queue.size, 0);
  });

  it('divides the listener cap and hands the listener its pool share', () => {
    const spec: ListenerSpec = { id: 'cp:6443', vip: 'cp', address: '198.18.0.10', port: 6443, pool, maxConnections: 1000 };
    const share = perWorkerSpec(spec, 3);
    assert.equal(share.maxConnections, 334);
    assert.equal(share.pool.backends[0]!.maxConnections, 34);
    assert.equal(perWorkerSpec({ ...spec, maxConnections: undefined }, 3).maxConnections, undefined);
    assert.equal(spec.maxConnections, 1000, 'the original spec is untouched');
  });

  it('divides the global cap but not the per-source cap', () => {
    assert.deepEqual(perWorkerLimits({ maxConnections: 10_001, maxConnectionsPerSource: 10 }, 2), { maxConnections: 5001, maxConnectionsPerSource: 10 });
    assert.deepEqual(perWorkerLimits({}, 2), {});
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
