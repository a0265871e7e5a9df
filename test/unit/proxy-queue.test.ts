import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { closeReason, connectClient, dialAndAwaitEnd, startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

/** Resolves with the first data the socket receives. */
function firstData(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk.toString()));
    socket.once('error', reject);
  });
}

/** Sends `text` on an open client and waits for its echo. */
async function roundTrip(socket: Socket, text: string): Promise<void> {
  const reply = firstData(socket);
  socket.write(text);
  assert.equal(await reply, text);
}

describe('per-backend maxConnections and the pool queue', () => {
  it('a client over the cap waits (no upstream) and is served as soon as a slot frees', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [backend.endpoint],
      backends: [{ endpoint: backend.endpoint, weight: 1, maxConnections: 2 }],
      queue: { size: 5, timeoutMs: 5_000 },
    });
    try {
      const held = [await connectClient(proxy.port), await connectClient(proxy.port)];
      await Promise.all(held.map((c, i) => roundTrip(c, `held ${i}`)));
      const waiting = await connectClient(proxy.port);
      const reply = firstData(waiting);
      waiting.write('queued');
      await waitFor(() => proxy.load.queued() === 1, 2_000, 'the client to be queued');
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(backend.accepted, 2, 'a queued client was dialled');
      assert.equal(proxy.load.counters(backend.endpoint.key).queued, 1);
      assert.equal(await metricValue(proxy.metrics.backendQueued, { backend: backend.endpoint.key }), 1);
      assert.equal([...proxy.listener.sessions()].filter((s) => s.state === 'queued').length, 1);
      const freedAt = performance.now();
      held[0]!.destroy();
      assert.equal(await reply, 'queued');
      const servedAfter = performance.now() - freedAt;
      console.log(`queue: served ${servedAfter.toFixed(1)} ms after a slot freed`);
      assert.ok(servedAfter < 500);
      assert.equal(backend.accepted, 3);
      assert.equal(proxy.load.queued(), 0);
      assert.equal(await metricValue(proxy.metrics.backendQueued, {}), 0);
      assert.ok(proxy.load.active(backend.endpoint) <= 2);
      held[1]!.destroy();
      waiting.destroy();
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('a waiter is reset at the queue timeout and counted', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [backend.endpoint],
      backends: [{ endpoint: backend.endpoint, weight: 1, maxConnections: 1 }],
      queue: { size: 5, timeoutMs: 300 },
    });
    try {
      const held = await connectClient(proxy.port);
      await roundTrip(held, 'held');
      const started = performance.now();
      assert.equal(await dialAndAwaitEnd(proxy.port, 'waits in vain'), 'ECONNRESET');
      const waited = performance.now() - started;
      console.log(`queue timeout 300 ms: reset after ${waited.toFixed(0)} ms`);
      assert.ok(waited >= 290 && waited < 800, `waited ${waited} ms`);
      await waitFor(() => proxy.ended.length === 1, 2_000, 'the refused session to end');
      assert.equal(proxy.ended[0]!.outcome, 'queueTimeout');
      assert.equal(await metricValue(proxy.metrics.listenerRefused, { reason: 'queueTimeout' }), 1);
      assert.equal(backend.accepted, 1);
      // The held session never noticed.
      await roundTrip(held, 'still here');
      held.destroy();
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  for (const [size, reason] of [
    [0, 'backendsFull'],
    [1, 'queueFull'],
  ] as const) {
    it(`queue size ${size}: a client that cannot wait is reset at once (${reason})`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const backend = await startEchoBackend();
      const proxy = await startProxy({
        healthy: [backend.endpoint],
        backends: [{ endpoint: backend.endpoint, weight: 1, maxConnections: 1 }],
        queue: { size, timeoutMs: 10_000 },
      });
      const open: Socket[] = [];
      try {
        open.push(await connectClient(proxy.port));
        await roundTrip(open[0]!, 'held');
        if (size === 1) {
          open.push(await connectClient(proxy.port));
          open[1]!.write('waiting');
          await waitFor(() => proxy.load.queued() === 1, 2_000, 'the first waiter');
        }
        const started = performance.now();
        assert.equal(await dialAndAwaitEnd(proxy.port, 'one too many'), 'ECONNRESET');
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 100, `took ${elapsed} ms`);
        await waitFor(() => proxy.ended.length === 1, 2_000, 'the refused session to end');
        assert.equal(proxy.ended[0]!.outcome, reason);
        assert.equal(await metricValue(proxy.metrics.listenerRefused, { reason }), 1);
      } finally {
        for (const socket of open) socket.destroy();
        proxy.listener.destroy();
        await backend.close();
      }
    });
  }

  it('a backend with room is used before anyone queues; waiters go to whichever backend frees first', { timeout: TEST_TIMEOUT_MS }, async () => {
    const first = await startEchoBackend();
    const second = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [first.endpoint, second.endpoint],
      backends: [
        { endpoint: first.endpoint, weight: 1, maxConnections: 1 },
        { endpoint: second.endpoint, weight: 1, maxConnections: 2 },
      ],
      balance: 'least-conn',
      queue: { size: 10, timeoutMs: 5_000 },
    });
    const clients: Socket[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        clients.push(await connectClient(proxy.port));
        await roundTrip(clients[i]!, `client ${i}`);
      }
      assert.equal(proxy.load.queued(), 0, 'queued although a backend had room');
      assert.deepEqual([first.accepted, second.accepted], [1, 2]);
      const waiter = await connectClient(proxy.port);
      const reply = firstData(waiter);
      waiter.write('waiter');
      await waitFor(() => proxy.load.queued() === 1, 2_000, 'the waiter to queue');
      // The session on `first` ends: the waiter goes there, whatever backend it was attributed to.
      const onFirst = [...proxy.listener.sessions()].findIndex((s) => s.backend?.key === first.endpoint.key);
      clients[onFirst]!.destroy();
      assert.equal(await reply, 'waiter');
      assert.equal(first.accepted, 2);
      waiter.destroy();
    } finally {
      for (const socket of clients) socket.destroy();
      proxy.listener.destroy();
      await first.close();
      await second.close();
    }
  });

  it('destroying the listener refuses its waiters and leaves no queue behind', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [backend.endpoint],
      backends: [{ endpoint: backend.endpoint, weight: 1, maxConnections: 1 }],
      queue: { size: 5, timeoutMs: 10_000 },
    });
    try {
      const held = await connectClient(proxy.port);
      await roundTrip(held, 'held');
      const waiters = await Promise.all([connectClient(proxy.port), connectClient(proxy.port)]);
      for (const w of waiters) w.write('waiting');
      await waitFor(() => proxy.load.queued() === 2, 2_000, 'two waiters');
      const ends = Promise.all(waiters.map(closeReason));
      proxy.listener.destroy();
      assert.deepEqual(await ends, ['ECONNRESET', 'ECONNRESET']);
      assert.equal(proxy.load.queued(), 0);
      await waitFor(() => proxy.listener.stats().active === 0, 2_000, 'every session to end');
      held.destroy();
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });
});
