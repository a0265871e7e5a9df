import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closedPort, closeReason, connectClient, echoOnce, readToEnd, startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { FloodClient } from '../fakes/proxy-flood-client';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 60_000;
const MB = 1024 * 1024;

describe('first-byte timeout (T08)', () => {
  it('1,000 silent connections are closed at the first-byte timeout without an upstream, while 100 conn/s are all served', { timeout: TEST_TIMEOUT_MS }, async () => {
    const FIRST_BYTE_MS = 2_000;
    const SILENT = 1_000;
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { firstByteMs: FIRST_BYTE_MS } });
    const clients = new FloodClient();
    const rssBefore = process.memoryUsage.rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 50);
    try {
      const opened = await clients.send({ op: 'silent', port: proxy.port, count: SILENT, batch: 100 });
      assert.deepEqual(opened, { op: 'silent', connected: SILENT, failed: 0 });
      const legit = await clients.send({ op: 'legit', port: proxy.port, perSecond: 100, durationMs: 3_500 });
      const report = await clients.send({ op: 'silentReport', maxWaitMs: FIRST_BYTE_MS + 2_000 });
      clearInterval(sampler);
      const closed = [...report.closedAfterMs].sort((x, y) => x - y);
      const firstByteCloses = await metricValue(proxy.metrics.sessionsClosed, { reason: 'firstByteTimeout' });
      console.log(
        `T08: ${SILENT} silent connections closed after ${closed[0]!.toFixed(0)}..${closed.at(-1)!.toFixed(0)} ms ` +
          `(median ${closed[closed.length >> 1]!.toFixed(0)}; first-byte timeout ${FIRST_BYTE_MS} ms), how: ${JSON.stringify(report.reasons)}; ` +
          `legit ${legit.ok} ok / ${legit.failed} failed (p99 ${legit.p99Ms.toFixed(1)} ms); backend accepted ${backend.accepted}; ` +
          `RSS ${(rssBefore / MB).toFixed(1)} MB -> peak ${(rssPeak / MB).toFixed(1)} MB (growth ${((rssPeak - rssBefore) / MB).toFixed(1)} MB)`,
      );
      assert.equal(report.stillOpen, 0);
      assert.equal(closed.length, SILENT);
      assert.ok(closed[0]! >= FIRST_BYTE_MS - 1_000 && closed.at(-1)! <= FIRST_BYTE_MS + 1_000, 'a silent connection was not closed at the first-byte timeout ± 1 s');
      assert.equal(legit.failed, 0, JSON.stringify(legit.errors));
      assert.equal(legit.ok, 350);
      assert.equal(backend.accepted, legit.ok, 'an upstream was opened for a silent client');
      assert.equal(firstByteCloses, SILENT);
      assert.equal(proxy.listener.stats().refused, 0);
      assert.ok(rssPeak - rssBefore < 50 * MB, `RSS grew by ${rssPeak - rssBefore} B`);
      await waitFor(() => proxy.listener.stats().active === 0, 2_000, 'every session to end');
    } finally {
      clearInterval(sampler);
      await clients.close();
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('a client that speaks before the timeout is relayed intact; its first chunk crosses exactly once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { firstByteMs: 1_000 } });
    try {
      const client = await connectClient(proxy.port);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(backend.accepted, 0, 'dialled before the first byte');
      const payload = Buffer.alloc(2 * MB, 7);
      const reply = readToEnd(client);
      client.end(payload);
      const echoed = await reply;
      assert.equal(echoed.length, payload.length);
      assert.ok(echoed.equals(payload));
      await waitFor(() => proxy.ended.length === 1, 2_000, 'the session to end');
      assert.equal(proxy.ended[0]!.outcome, 'completed');
      assert.equal(proxy.ended[0]!.bytesFromClient, payload.length);
      assert.equal(backend.accepted, 1);
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('the held first chunk survives connect retries', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dead = await closedPort();
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [dead, backend.endpoint], timeouts: { firstByteMs: 1_000 }, maxConnectAttempts: 2 });
    try {
      for (let i = 0; i < 6; i++) {
        const payload = Buffer.from(`attempt ${i}: `.repeat(100));
        assert.deepEqual(await echoOnce(proxy.port, payload), payload);
      }
      assert.ok(proxy.load.counters(dead.key).connectErrors > 0, 'the dead backend was never tried');
      assert.equal(backend.accepted, 6);
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('a client that hangs up without a byte is closed without an upstream', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { firstByteMs: 5_000 } });
    try {
      const client = await connectClient(proxy.port);
      const ended = closeReason(client);
      client.end();
      assert.equal(await ended, 'end');
      await waitFor(() => proxy.ended.length === 1, 2_000, 'the session to end');
      assert.equal(proxy.ended[0]!.outcome, 'completed');
      assert.equal(proxy.ended[0]!.attempts, 0);
      assert.equal(backend.accepted, 0);
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('with the first-byte timeout off, the upstream is dialled at accept', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { firstByteMs: 0 } });
    try {
      const client = await connectClient(proxy.port);
      await waitFor(() => backend.accepted === 1, 2_000, 'the dial at accept');
      client.destroy();
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });
});
