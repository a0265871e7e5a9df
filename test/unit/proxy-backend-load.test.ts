import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import { metricValue } from '../fakes/proxy-harness';

const a = endpoint('127.0.0.1', 7001);
const b = endpoint('127.0.0.1', 7002);

describe('backend load', () => {
  it('counts dials, connections and failures per backend, and mirrors them in metrics', async () => {
    const metrics = createMetrics();
    const load = new BackendLoadTracker('cp', metrics);
    assert.deepEqual(load.counters(a.key), { active: 0, total: 0, connectErrors: 0 });

    const first = load.dialStarted(a);
    const second = load.dialStarted(a);
    const third = load.dialStarted(b);
    // A dial in progress already counts: least-conn must not send a burst to one backend.
    assert.equal(load.active(a), 2);
    load.established(first);
    load.dialFailed(second, 'refused');
    load.established(third);
    assert.deepEqual(load.counters(a.key), { active: 1, total: 1, connectErrors: 1 });
    assert.deepEqual(load.counters(b.key), { active: 1, total: 1, connectErrors: 0 });
    load.release(first);
    load.release(third);
    assert.equal(load.active(a), 0);
    assert.equal(load.active(b), 0);

    assert.equal(await metricValue(metrics.backendActive, { backend: a.key }), 0);
    assert.equal(await metricValue(metrics.backendConnections, { pool: 'cp', backend: a.key }), 1);
    assert.equal(await metricValue(metrics.backendConnectErrors, { backend: a.key, kind: 'refused' }), 1);
  });

  it('pushes relayed bytes to the byte counter on flush, once', async () => {
    const metrics = createMetrics();
    const load = new BackendLoadTracker('cp', metrics);
    const entry = load.dialStarted(a);
    entry.unflushedBytesIn += 1_000;
    entry.unflushedBytesOut += 24;
    assert.equal(await metricValue(metrics.backendBytes, { backend: a.key }), 0);
    load.flushMetrics();
    load.flushMetrics();
    assert.equal(await metricValue(metrics.backendBytes, { backend: a.key, direction: 'in' }), 1_000);
    assert.equal(await metricValue(metrics.backendBytes, { backend: a.key, direction: 'out' }), 24);
  });
});
