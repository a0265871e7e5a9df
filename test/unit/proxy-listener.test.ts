import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { VipdError } from '../../src/lib/errors';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import { createListener } from '../../src/proxy/listener';
import type { ListenerSpec } from '../../src/proxy/proxy';
import { closeReason, connectClient, dialAndAwaitEnd, startEchoBackend } from '../fakes/proxy-backends';
import { FakeHealth, metricValue, startProxy, testPoolSpec } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

function specOn(port: number): ListenerSpec {
  return {
    id: `test:${port}`,
    vip: '127.0.0.1',
    address: '127.0.0.1',
    port,
    pool: testPoolSpec([], { connectTimeoutMs: 500, maxConnectAttempts: 2 }),
  };
}

function emptyPool(spec: ListenerSpec, metrics: Metrics): BackendLoadTracker {
  return new BackendLoadTracker({ spec: spec.pool, health: new FakeHealth([]), metrics });
}

function bareListener(port: number) {
  const metrics = createMetrics();
  const spec = specOn(port);
  const listener = createListener({ spec, load: emptyPool(spec, metrics), logger: silentLogger(), metrics });
  return { listener, metrics };
}

/** Sends `text` on an open client and waits for its echo. */
async function roundTrip(client: import('node:net').Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (chunk: Buffer): void => {
      got += chunk.toString();
      if (got.length >= text.length) {
        client.removeListener('data', onData);
        resolve(got);
      }
    };
    client.on('data', onData);
    client.once('error', reject);
    client.write(text);
  });
}

describe('listener', () => {
  it('binds, reports bound through bound(), onBoundChange and the gauge, and unbinds on close', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { listener, metrics } = bareListener(0);
    const changes: boolean[] = [];
    listener.onBoundChange((bound) => changes.push(bound));
    assert.equal(listener.bound(), false);
    await listener.start();
    await listener.start();
    assert.equal(listener.bound(), true);
    assert.ok(listener.address()!.port > 0);
    assert.equal(await metricValue(metrics.listenerBound, { listener: 'test:0' }), 1);
    await listener.close(100);
    await listener.close(100);
    listener.destroy();
    assert.equal(listener.bound(), false);
    assert.deepEqual(changes, [true, false]);
    assert.equal(await metricValue(metrics.listenerBound, { listener: 'test:0' }), 0);
    await assert.rejects(listener.start(), (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CLOSED');
  });

  it('start() rejects with the bind error and can be retried once the address is free', { timeout: TEST_TIMEOUT_MS }, async () => {
    const first = bareListener(0);
    await first.listener.start();
    const port = first.listener.address()!.port;
    const second = bareListener(port);
    const changes: boolean[] = [];
    second.listener.onBoundChange((bound) => changes.push(bound));
    try {
      await assert.rejects(second.listener.start(), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
      assert.equal(second.listener.bound(), false);
      await first.listener.close(0);
      await second.listener.start();
      assert.equal(second.listener.bound(), true);
      assert.equal(second.listener.address()!.port, port);
      assert.deepEqual(changes, [true]);
    } finally {
      first.listener.destroy();
      await second.listener.close(0);
    }
  });

  it('logs with component, vip and listener once each, even under a parent that already binds some', async () => {
    const lines: string[] = [];
    const parent = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }).child({ component: 'proxy', vip: 'cp' });
    const metrics = createMetrics();
    const spec = { ...specOn(0), vip: 'cp' };
    const listener = createListener({ spec, load: emptyPool(spec, metrics), logger: parent, metrics });
    await listener.start();
    await listener.close(0);
    const bound = lines.find((line) => line.includes('"listenerBound"'));
    assert.ok(bound !== undefined, `no listenerBound line in ${lines.join('')}`);
    for (const key of ['component', 'vip', 'listener']) {
      assert.equal(bound.split(`"${key}":`).length - 1, 1, `"${key}" appears more than once: ${bound}`);
    }
  });

  it('close() while start() is pending rejects the start', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { listener } = bareListener(0);
    const starting = listener.start();
    const closing = listener.close(0);
    await assert.rejects(starting, (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CLOSED');
    await closing;
    assert.equal(listener.bound(), false);
  });

  it('close(grace) stops accepting at once and lets a live session finish', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const client = await connectClient(proxy.port);
      assert.equal(await roundTrip(client, 'before close'), 'before close');
      const started = performance.now();
      const closing = proxy.listener.close(5_000);
      assert.equal(proxy.listener.bound(), false);
      assert.equal(await dialAndAwaitEnd(proxy.port), 'ECONNREFUSED');
      // The session keeps working during the grace period.
      assert.equal(await roundTrip(client, 'during grace'), 'during grace');
      const ended = closeReason(client);
      client.end();
      assert.equal(await ended, 'end');
      await closing;
      const elapsed = performance.now() - started;
      console.log(`close(5000) with one live session that then ended cleanly resolved after ${elapsed.toFixed(0)} ms`);
      assert.ok(elapsed < 2_000, `close waited ${elapsed} ms although the session had ended`);
      assert.equal(proxy.ended[0]!.outcome, 'completed');
      assert.equal(proxy.listener.stats().active, 0);
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('close(grace) resets sessions still open when the grace period ends', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const client = await connectClient(proxy.port);
      assert.equal(await roundTrip(client, 'idle after this'), 'idle after this');
      const ended = closeReason(client);
      const started = performance.now();
      await proxy.listener.close(300);
      const elapsed = performance.now() - started;
      console.log(`close(300) with one idle session resolved after ${elapsed.toFixed(0)} ms`);
      assert.equal(await ended, 'ECONNRESET');
      assert.ok(elapsed >= 290 && elapsed < 1_500, `elapsed ${elapsed}`);
      assert.equal(proxy.ended[0]!.outcome, 'destroyed');
      assert.equal(proxy.listener.stats().active, 0);
      assert.equal(proxy.load.counters(backend.endpoint.key).active, 0);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(backend.sockets.size, 0, 'the upstream leg outlived its session');
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('destroy() resets every session at once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const clients = await Promise.all(Array.from({ length: 5 }, () => connectClient(proxy.port)));
      await Promise.all(clients.map((c, i) => roundTrip(c, `client ${i}`)));
      assert.equal(proxy.listener.stats().active, 5);
      const reasons = Promise.all(clients.map(closeReason));
      proxy.listener.destroy();
      proxy.listener.destroy();
      assert.deepEqual(await reasons, new Array(5).fill('ECONNRESET'));
      assert.equal(proxy.listener.stats().active, 0);
      assert.equal(await metricValue(proxy.metrics.sessionsActive, {}), 0);
      assert.deepEqual(
        proxy.ended.map((s) => s.outcome),
        new Array(5).fill('destroyed'),
      );
    } finally {
      await backend.close();
    }
  });
});
