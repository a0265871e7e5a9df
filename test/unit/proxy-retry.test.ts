import assert from 'node:assert/strict';
import { connect as netConnect, Socket } from 'node:net';
import { describe, it } from 'node:test';
import { createConnector } from '../../src/proxy/connector';
import { closedPort, dialAndAwaitEnd, echoOnce, startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

/** Runs `total` echo round trips through the proxy, `concurrency` at a time; returns the failures. */
async function echoMany(port: number, total: number, concurrency: number): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const n = next++;
      const payload = Buffer.from(`hello ${n}\n`);
      try {
        const reply = await echoOnce(port, payload);
        if (!reply.equals(payload)) failures.push(`#${n}: echo mismatch (${reply.length} bytes)`);
      } catch (err) {
        failures.push(`#${n}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return failures;
}

describe('connect retry (T01)', () => {
  for (const balance of ['round-robin', 'least-conn'] as const) {
    it(`${balance}: a refusing backend is retried on another, 0 client-visible failures in 200 connections`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const dead = await closedPort();
      const live = await startEchoBackend();
      // The dead backend is still "healthy": health has not noticed the crash yet.
      const proxy = await startProxy({ healthy: [dead, live.endpoint], balance, maxConnectAttempts: 2 });
      try {
        const started = performance.now();
        const failures = await echoMany(proxy.port, 200, 20);
        const elapsed = performance.now() - started;
        const retries = await metricValue(proxy.metrics.connectRetries, {});
        const refusedDials = await metricValue(proxy.metrics.backendConnectErrors, { backend: dead.key, kind: 'refused' });
        console.log(
          `${balance}: 200 connections in ${elapsed.toFixed(0)} ms, client failures ${failures.length}, ` +
            `retries ${retries}, refused dials ${refusedDials}, served by live backend ${live.accepted}`,
        );
        assert.deepEqual(failures, []);
        assert.equal(live.accepted, 200);
        assert.ok(retries > 0, 'the dead backend was never picked: the test proved nothing');
        assert.equal(retries, refusedDials);
        assert.equal(proxy.load.counters(dead.key).connectErrors, refusedDials);
        assert.equal(proxy.load.counters(dead.key).active, 0);
        assert.equal(proxy.load.counters(live.endpoint.key).total, 200);
        assert.deepEqual(proxy.listener.stats(), { accepted: 200, active: 0, refused: 0, errors: 0 });
      } finally {
        await proxy.listener.close(0);
        await live.close();
      }
    });
  }

  it("a dial that fails for want of an fd (EMFILE) is this node's shortage: no retry, no blame on the backend, the client refused", { timeout: TEST_TIMEOUT_MS }, async () => {
    const first = await startEchoBackend();
    const second = await startEchoBackend();
    let shortage = true;
    let dials = 0;
    const connect = createConnector({
      dial: (options) => {
        dials++;
        if (!shortage) return netConnect(options);
        // What net.connect does when socket(2) fails: the socket is destroyed with the errno.
        const socket = new Socket();
        process.nextTick(() => socket.destroy(Object.assign(new Error('connect EMFILE'), { code: 'EMFILE', errno: -24, syscall: 'connect' })));
        return socket;
      },
    });
    // Passive health on at its lowest threshold: one blamed failure would eject a backend.
    const proxy = await startProxy({ healthy: [first.endpoint, second.endpoint], connect, maxConnectAttempts: 3, outlier: { consecutiveConnectFailures: 1 } });
    try {
      const reasons: string[] = [];
      for (let i = 0; i < 10; i++) reasons.push(await dialAndAwaitEnd(proxy.port, `client ${i}`));
      // The client sees its reset before the listener has counted the session's end.
      await waitFor(() => proxy.ended.length === 10, 2_000, 'the 10 sessions to end');
      const refused = await metricValue(proxy.metrics.listenerRefused, { reason: 'localResources' });
      console.log(`10 clients during an fd shortage: ${dials} dials, closed with ${[...new Set(reasons)].join(', ')}, ${refused} refused for localResources`);
      assert.deepEqual(new Set(reasons), new Set(['ECONNRESET']));
      assert.equal(dials, 10, 'a local failure was retried on another backend');
      assert.equal(refused, 10);
      for (const backend of [first, second]) {
        const counters = proxy.load.counters(backend.endpoint.key);
        assert.equal(counters.connectErrors, 0, `${backend.endpoint.key} was blamed for this node's shortage`);
        assert.equal(counters.active, 0);
        assert.equal(await metricValue(proxy.metrics.backendEjections, { backend: backend.endpoint.key }), 0);
      }
      shortage = false;
      for (let i = 0; i < 4; i++) assert.deepEqual(await echoOnce(proxy.port, Buffer.from(`after ${i}`)), Buffer.from(`after ${i}`));
      assert.equal(first.accepted + second.accepted, 4);
      assert.ok(first.accepted > 0 && second.accepted > 0, 'a backend was kept out after the shortage');
    } finally {
      await proxy.listener.close(0);
      await first.close();
      await second.close();
    }
  });

  it('a dial that hangs is timed out and retried on another backend', { timeout: TEST_TIMEOUT_MS }, async () => {
    const hangingTarget = await closedPort();
    const live = await startEchoBackend();
    let hungDials = 0;
    const connect = createConnector({
      dial: (options) => {
        if (options.port !== hangingTarget.port) return netConnect(options);
        hungDials++;
        return new Socket();
      },
    });
    const proxy = await startProxy({ healthy: [hangingTarget, live.endpoint], connect, connectTimeoutMs: 100 });
    try {
      const timings: number[] = [];
      for (let i = 0; i < 6; i++) {
        const started = performance.now();
        const payload = Buffer.from(`slow path ${i}`);
        assert.deepEqual(await echoOnce(proxy.port, payload), payload);
        timings.push(performance.now() - started);
      }
      const timeouts = await metricValue(proxy.metrics.backendConnectErrors, { backend: hangingTarget.key, kind: 'timeout' });
      console.log(`hanging backend: ${hungDials} dials timed out (100 ms), round trips ms: ${timings.map((t) => t.toFixed(0)).join(' ')}`);
      // Each connection that was sent to the hanging backend first pays exactly one connect timeout:
      // slow, but never a failure; the others are served at once.
      const slow = timings.filter((t) => t >= 95).length;
      assert.ok(hungDials >= 1, 'the hanging backend was never picked: the test proved nothing');
      assert.equal(timeouts, hungDials);
      assert.equal(slow, hungDials);
      assert.ok(timings.every((t) => t < 100 + 500), 'a connection waited for more than one connect timeout');
      assert.equal(live.accepted, 6);
    } finally {
      await proxy.listener.close(0);
      await live.close();
    }
  });

  it('tries at most maxConnectAttempts distinct backends, then resets the client', { timeout: TEST_TIMEOUT_MS }, async () => {
    const dead = [await closedPort(), await closedPort(), await closedPort()];
    const proxy = await startProxy({ healthy: dead, maxConnectAttempts: 2 });
    try {
      assert.equal(await dialAndAwaitEnd(proxy.port, 'anyone there?'), 'ECONNRESET');
      await proxy.listener.close(1_000);
      const dials = dead.map((d) => proxy.load.counters(d.key).connectErrors);
      assert.equal(dials.reduce((x, y) => x + y, 0), 2);
      assert.ok(dials.every((n) => n <= 1), 'a backend was dialled twice for one client');
      assert.equal(proxy.ended[0]!.outcome, 'connectFailed');
      assert.deepEqual(proxy.listener.stats(), { accepted: 1, active: 0, refused: 1, errors: 0 });
      assert.equal(await metricValue(proxy.metrics.listenerRefused, { reason: 'connectFailed' }), 1);
    } finally {
      proxy.listener.destroy();
    }
  });

  it('with no healthy backend the client is reset and nothing is dialled', { timeout: TEST_TIMEOUT_MS }, async () => {
    const live = await startEchoBackend();
    const proxy = await startProxy({ healthy: [], unhealthy: [live.endpoint] });
    try {
      assert.equal(await dialAndAwaitEnd(proxy.port), 'ECONNRESET');
      await proxy.listener.close(1_000);
      assert.equal(live.accepted, 0);
      assert.equal(proxy.ended[0]!.outcome, 'noHealthyBackend');
      assert.equal(proxy.ended[0]!.attempts, 0);
    } finally {
      proxy.listener.destroy();
      await live.close();
    }
  });

  it('a backend that leaves the healthy set gets no new connection', { timeout: TEST_TIMEOUT_MS }, async () => {
    const first = await startEchoBackend();
    const second = await startEchoBackend();
    const proxy = await startProxy({ healthy: [first.endpoint, second.endpoint], balance: 'least-conn' });
    try {
      assert.deepEqual(await echoMany(proxy.port, 20, 4), []);
      const secondBefore = second.accepted;
      assert.ok(secondBefore > 0);
      proxy.setHealthy([first.endpoint], [second.endpoint]);
      assert.deepEqual(await echoMany(proxy.port, 50, 10), []);
      assert.equal(second.accepted, secondBefore);
      assert.equal(first.accepted, 70 - secondBefore);
    } finally {
      await proxy.listener.close(0);
      await first.close();
      await second.close();
    }
  });
});
