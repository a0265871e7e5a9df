import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { silentLogger, type Logger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import { createListener } from '../../src/proxy/listener';
import { closeReason, connectClient, echoOnce, startEchoBackend } from '../fakes/proxy-backends';
import { FakeHealth, startProxy, testPoolSpec } from '../fakes/proxy-harness';

/** Issue 9, "one life cycle": close() graceful, destroy() at once, both awaitable and idempotent, both refusing new work. */

test('listener: destroy() resets open sessions at once, resolves when they are gone, and is idempotent', async () => {
  const backend = await startEchoBackend();
  const proxy = await startProxy({ healthy: [backend.endpoint] });
  try {
    const client = await connectClient(proxy.port);
    client.write('hello');
    await new Promise<void>((resolve) => client.once('data', () => resolve()));
    const ended = closeReason(client);
    const first = proxy.listener.destroy();
    assert.equal(proxy.listener.destroy(), first, 'a second destroy() is the same operation');
    assert.equal(proxy.listener.close(10_000), first, 'close() after destroy() waits for the same end, not for a grace period');
    await first;
    assert.equal(proxy.listener.stats().active, 0, 'no session left once destroy() resolves');
    assert.equal(proxy.listener.bound(), false);
    assert.equal(await ended, 'ECONNRESET');
    await assert.rejects(proxy.listener.start(), /is closed/, 'a destroyed listener never starts again');
  } finally {
    await backend.close();
  }
});

test('listener: destroy() during a graceful close() ends it at once', async () => {
  const backend = await startEchoBackend();
  const proxy = await startProxy({ healthy: [backend.endpoint] });
  try {
    const client = await connectClient(proxy.port);
    client.write('x');
    await new Promise<void>((resolve) => client.once('data', () => resolve()));
    client.on('error', () => {});
    const started = performance.now();
    const closing = proxy.listener.close(60_000);
    await proxy.listener.destroy();
    await closing;
    assert.ok(performance.now() - started < 5_000, 'the 60 s grace was cut short');
    assert.equal(proxy.listener.stats().active, 0);
  } finally {
    await backend.close();
  }
});

test('listener: a throwing bound listener neither stops the others nor the listener', async () => {
  const backend = await startEchoBackend();
  const metrics = createMetrics();
  const health = new FakeHealth([backend.endpoint]);
  const pool = testPoolSpec([backend.endpoint]);
  const load = new BackendLoadTracker({ spec: pool, health, metrics });
  const listener = createListener({ spec: { id: 'lc:0', vip: '127.0.0.1', address: '127.0.0.1', port: 0, pool }, load, logger: silentLogger(), metrics });
  const heard: boolean[] = [];
  listener.onBoundChange(() => {
    throw new Error('bad subscriber');
  });
  listener.onBoundChange((bound) => heard.push(bound));
  try {
    await listener.start();
    assert.deepEqual(heard, [true]);
    await listener.close(0);
    assert.deepEqual(heard, [true, false]);
  } finally {
    await load.close();
    await backend.close();
  }
});

test('backend load tracker: close() and destroy() are awaitable and idempotent; no client is queued afterwards', async () => {
  const metrics = createMetrics();
  const backend = endpoint('127.0.0.1', 1);
  const load = new BackendLoadTracker({ spec: testPoolSpec([backend], { queue: { size: 10 } }), health: new FakeHealth([backend]), metrics });
  await load.close();
  await load.destroy();
  await load.close();
  const entry = load.entry(backend.key)!;
  const waiter = { queueNext: undefined, queuePrev: undefined, queueDeadline: 0, queuedFor: undefined, hasTried: () => false, onSlotReserved: () => {}, onQueueTimeout: () => {} };
  assert.equal(load.enqueue(waiter, entry), false, 'a closed tracker queues nobody');
});

/** A debug logger whose lines the test reads. */
function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

async function sessionEdges(firstByteMs: number): Promise<string[]> {
  const backend = await startEchoBackend();
  const metrics = createMetrics();
  const health = new FakeHealth([backend.endpoint]);
  const pool = testPoolSpec([backend.endpoint], { timeouts: { firstByteMs } });
  const load = new BackendLoadTracker({ spec: pool, health, metrics });
  const { logger, lines } = capturingLogger();
  const listener = createListener({ spec: { id: 'lc:0', vip: '127.0.0.1', address: '127.0.0.1', port: 0, pool }, load, logger, metrics });
  try {
    await listener.start();
    const ended = new Promise<void>((resolve) => listener.onSessionEnd(() => resolve()));
    assert.deepEqual([...(await echoOnce(listener.address()!.port, Buffer.from('ping')))], [...Buffer.from('ping')]);
    await ended;
    await listener.close(0);
    const edges = lines.filter((l) => l.event === 'state' && l.machine === 'session').map((l) => `${String(l.from)}->${String(l.to)}`);
    const listenerEdges = lines.filter((l) => l.event === 'state' && l.machine === 'listener').map((l) => `${String(l.from)}->${String(l.to)}`);
    assert.deepEqual(listenerEdges, ['idle->starting', 'starting->listening', 'listening->stopped']);
    return edges;
  } finally {
    await load.close();
    await backend.close();
  }
}

test('session: every state change is one guarded, logged edge (debug)', async () => {
  assert.deepEqual(await sessionEdges(0), ['connecting->relaying', 'relaying->closed']);
  assert.deepEqual(await sessionEdges(5000), ['connecting->waiting', 'waiting->connecting', 'connecting->relaying', 'relaying->closed']);
});
