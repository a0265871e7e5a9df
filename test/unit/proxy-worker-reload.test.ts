import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import type { Endpoint } from '../../src/net/endpoint';
import type { ListenerSpec, PoolSpec } from '../../src/proxy/proxy';
import { ProxyWorker } from '../../src/dataplane/workers/entry';
import { WorkerPool } from '../../src/dataplane/workers/worker-pool';
import type { FromWorker, ToWorker } from '../../src/dataplane/workers/protocol';
import { FakeHealth, testPoolSpec } from '../fakes/proxy-harness';
import { connectClient, echoOnce, snapshotOf, startEchoBackend, waitFor, type TestBackend } from '../fakes/proxy-backends';

/**
 * The reload messages of the worker protocol (addPool, updatePool, removePool, addListener,
 * updateListener), driven into a ProxyWorker in this process with real loopback sockets, and the
 * primary side's bookkeeping (what a worker forked later is given).
 */

const backends: TestBackend[] = [];
after(async () => {
  await Promise.all(backends.map((b) => b.close()));
});

async function echoBackend(): Promise<TestBackend> {
  const b = await startEchoBackend();
  backends.push(b);
  return b;
}

function pool(name: string, eps: readonly Endpoint[], overrides: Parameters<typeof testPoolSpec>[1] = {}): PoolSpec {
  return { ...testPoolSpec(eps, overrides), name };
}

function listenerSpec(id: string, p: PoolSpec, maxConnections?: number): ListenerSpec {
  return { id, vip: 'test', address: '127.0.0.1', port: 0, pool: p, ...(maxConnections === undefined ? {} : { maxConnections }) };
}

class WorkerUnderTest {
  readonly sent: FromWorker[] = [];
  readonly worker: ProxyWorker;
  constructor(pools: readonly PoolSpec[], listeners: readonly ListenerSpec[], healthy: ReadonlyMap<string, readonly Endpoint[]>) {
    this.worker = new ProxyWorker(
      {
        type: 'vipd:init',
        worker: 0,
        log: { level: 'silent', bindings: {} },
        reportIntervalMs: 50,
        limits: {},
        pools: pools.map((spec) => ({ spec, snapshot: snapshotOf(spec.name, healthy.get(spec.name) ?? []), drained: [] })),
        listeners: listeners.map((spec) => ({ spec, start: true })),
      },
      (message) => this.sent.push(message),
    );
  }
  handle(message: ToWorker): void {
    this.worker.handle(message);
  }
  async port(listener: string): Promise<number> {
    let port: number | undefined;
    await waitFor(() => {
      const bound = this.sent.find((m): m is Extract<FromWorker, { type: 'vipd:bound' }> => m.type === 'vipd:bound' && m.listener === listener && m.bound);
      port = bound?.port;
      return port !== undefined || this.sent.some((m) => m.type === 'vipd:bindFailed' && m.listener === listener);
    }, 2000, `${listener} bound`);
    assert.ok(port !== undefined, JSON.stringify(this.sent.filter((m) => m.type === 'vipd:bindFailed')));
    return port;
  }
  lastReport(): Extract<FromWorker, { type: 'vipd:report' }> | undefined {
    return this.sent.filter((m): m is Extract<FromWorker, { type: 'vipd:report' }> => m.type === 'vipd:report').at(-1);
  }
}

/** A client connection that stays open through the proxy; echoes `x` once to prove it is served. */
async function held(port: number): Promise<Socket> {
  const socket = await connectClient(port);
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('data', () => resolve());
    socket.once('close', () => reject(new Error('held session closed before its echo')));
    socket.write('x');
  });
  return socket;
}

async function stillEchoes(socket: Socket): Promise<boolean> {
  if (socket.destroyed) return false;
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 1000);
    socket.once('data', () => {
      clearTimeout(timer);
      resolve(true);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
    socket.write('y');
  });
}

function closedWithin(socket: Socket, ms: number): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe('worker reload messages', () => {
  it('updatePool: an added backend takes new connections once healthy, a removed one gets none and its sessions drain', async () => {
    const [a, b] = [await echoBackend(), await echoBackend()];
    const spec1 = pool('p', [a.endpoint]);
    const w = new WorkerUnderTest([spec1], [listenerSpec('t:1', spec1)], new Map([['p', [a.endpoint]]]));
    try {
      const port = await w.port('t:1');
      const onA = await held(port);
      assert.equal(a.accepted, 1);

      const spec2 = pool('p', [a.endpoint, b.endpoint]);
      w.handle({ type: 'vipd:snapshot', snapshot: snapshotOf('p', [a.endpoint, b.endpoint], [], 2) });
      w.handle({ type: 'vipd:updatePool', spec: spec2 });
      for (let i = 0; i < 6; i++) await echoOnce(port, Buffer.from('z'));
      console.log(`worker updatePool add: 6 new connections -> A ${a.accepted - 1}, B ${b.accepted}`);
      assert.ok(b.accepted >= 2, `the added backend took ${b.accepted} of 6`);
      assert.ok(await stillEchoes(onA), 'the established session to a kept backend was cut');

      // Removal: health drops it first (as PoolHealth.reconfigure does), then the pool spec.
      const aBefore = a.accepted;
      w.handle({ type: 'vipd:snapshot', snapshot: snapshotOf('p', [b.endpoint], [], 3) });
      w.handle({ type: 'vipd:updatePool', spec: pool('p', [b.endpoint]) });
      for (let i = 0; i < 4; i++) await echoOnce(port, Buffer.from('z'));
      console.log(`worker updatePool remove: 4 new connections -> A ${a.accepted - aBefore}, B total ${b.accepted}`);
      assert.equal(a.accepted, aBefore, 'the removed backend got new connections');
      assert.ok(await stillEchoes(onA), 'without closeOnBackendDown, the removed backend session must drain, not be cut');
      await waitFor(() => (w.lastReport()?.pools[0]?.backends.length ?? 0) === 1 && w.lastReport()!.pools[0]!.backends[0]!.key === b.endpoint.key, 2000, 'report without A');
      onA.destroy();
    } finally {
      await w.worker.stop();
    }
  });

  it('updatePool with closeOnBackendDown: the removed backend sessions are closed, the kept one stays', async () => {
    const [a, b] = [await echoBackend(), await echoBackend()];
    const spec1 = pool('p', [a.endpoint, b.endpoint], { closeOnBackendDown: true, balance: 'round-robin' });
    const w = new WorkerUnderTest([spec1], [listenerSpec('t:1', spec1)], new Map([['p', [a.endpoint, b.endpoint]]]));
    try {
      const port = await w.port('t:1');
      const s1 = await held(port);
      const s2 = await held(port);
      assert.equal(a.accepted, 1);
      assert.equal(b.accepted, 1);
      // Round-robin starts at A: s1 is A's session, s2 is B's.
      w.handle({ type: 'vipd:updatePool', spec: pool('p', [b.endpoint], { closeOnBackendDown: true }) });
      assert.ok(await closedWithin(s1, 2000), 'the removed backend session was not closed under closeOnBackendDown');
      assert.ok(await stillEchoes(s2), 'the session to the kept backend was cut');
      s2.destroy();
    } finally {
      await w.worker.stop();
    }
  });

  it('addPool + addListener serve a new listener; updateListener applies its cap; removePool after close', async () => {
    const a = await echoBackend();
    const base = pool('p', [a.endpoint]);
    const w = new WorkerUnderTest([base], [listenerSpec('t:1', base)], new Map([['p', [a.endpoint]]]));
    try {
      await w.port('t:1');
      const q = pool('q', [a.endpoint]);
      w.handle({ type: 'vipd:addPool', pool: { spec: q, snapshot: snapshotOf('q', [a.endpoint]), drained: [] } });
      w.handle({ type: 'vipd:addListener', listener: { spec: listenerSpec('t:2', q), start: false } });
      w.handle({ type: 'vipd:start', listener: 't:2' });
      const port = await w.port('t:2');
      assert.equal((await echoOnce(port, Buffer.from('hello'))).toString(), 'hello');

      w.handle({ type: 'vipd:updateListener', spec: listenerSpec('t:2', q, 1) });
      const first = await held(port);
      // Refused at accept: it may be reset before or after the connect completes.
      const second = connect(port, '127.0.0.1');
      second.on('error', () => undefined);
      assert.ok(await closedWithin(second, 2000), 'a listener cap of 1 set by updateListener let a second client in');
      first.destroy();

      w.handle({ type: 'vipd:close', listener: 't:2', graceMs: 0 });
      await waitFor(() => w.sent.some((m) => m.type === 'vipd:closed' && m.listener === 't:2'), 2000, 't:2 closed');
      w.handle({ type: 'vipd:removePool', pool: 'q' });
      await waitFor(() => {
        const r = w.lastReport();
        return r !== undefined && r.pools.every((p) => p.pool !== 'q') && r.listeners.every((l) => l.id !== 't:2');
      }, 2000, 'report without pool q and listener t:2');
      // An id freed by a close may be added again.
      w.handle({ type: 'vipd:addListener', listener: { spec: listenerSpec('t:2', base), start: true } });
      const again = w.sent.length;
      await waitFor(() => w.sent.slice(again).some((m) => m.type === 'vipd:bound' && m.listener === 't:2' && m.bound), 2000, 't:2 bound again');
    } finally {
      await w.worker.stop();
    }
  });

  it('ignores reload messages for pools and listeners it does not have', async () => {
    const a = await echoBackend();
    const base = pool('p', [a.endpoint]);
    const w = new WorkerUnderTest([base], [listenerSpec('t:1', base)], new Map([['p', [a.endpoint]]]));
    try {
      const port = await w.port('t:1');
      w.handle({ type: 'vipd:updatePool', spec: pool('nope', [a.endpoint]) });
      w.handle({ type: 'vipd:updateListener', spec: listenerSpec('t:9', base) });
      w.handle({ type: 'vipd:removePool', pool: 'nope' });
      w.handle({ type: 'vipd:addPool', pool: { spec: base, snapshot: snapshotOf('p', []), drained: [] } });
      w.handle({ type: 'vipd:addListener', listener: { spec: listenerSpec('t:3', pool('nope', [a.endpoint])), start: true } });
      assert.ok(w.sent.some((m) => m.type === 'vipd:bindFailed' && m.listener === 't:3'), 'a listener of an unknown pool is reported as failed');
      assert.equal((await echoOnce(port, Buffer.from('ok'))).toString(), 'ok', 'the existing listener still serves (addPool of an existing pool changed nothing)');
    } finally {
      await w.worker.stop();
    }
  });
});

describe('worker pool reload bookkeeping (primary side)', () => {
  it('a pool reconfigure returns the removed backends, drops their drain, and hands the listeners the new pool spec', () => {
    const a = { key: '10.0.0.1:6443', host: '10.0.0.1', port: 6443 } as unknown as Endpoint;
    const b = { key: '10.0.0.2:6443', host: '10.0.0.2', port: 6443 } as unknown as Endpoint;
    const spec1 = pool('p', [a, b]);
    const health = new FakeHealth([a, b]);
    const wp = new WorkerPool({ workers: 2, pools: [{ spec: spec1, health }], logger: silentLogger(), metrics: createMetrics() });
    const listener = wp.listener(listenerSpec('t:1', spec1));
    const load = wp.load('p');
    assert.equal(load.drainBackend(b.key, true), true);
    const removed = load.reconfigure(pool('p', [a]));
    assert.deepEqual(removed, [b.key]);
    assert.deepEqual(load.outOfService().drained, [], 'the removed backend drain went with it');
    assert.equal(load.drainBackend(b.key, true), false, 'a removed backend is no longer in the pool');
    assert.deepEqual(listener.spec.pool.backends.map((x) => x.endpoint.key), [a.key], 'a worker forked later gets the reloaded pool');

    listener.reconfigure({ ...listener.spec, maxConnections: 10 });
    assert.equal(listener.spec.maxConnections, 10);
    assert.throws(() => listener.reconfigure({ ...listener.spec, pool: pool('other', [a]) }), /may not change its id or pool/);

    const q = pool('q', [b]);
    const qLoad = wp.addPool(q, new FakeHealth([b]));
    assert.equal(wp.load('q'), qLoad);
    assert.throws(() => wp.addPool(q, new FakeHealth([b])), /exists already/);
    const l2 = wp.listener(listenerSpec('t:2', q));
    assert.equal(l2.spec.pool.name, 'q');
    assert.throws(() => wp.listener(listenerSpec('t:2', q)), /exists already/);
    qLoad.close();
    assert.throws(() => wp.load('q'), /was not given/);
  });
});
