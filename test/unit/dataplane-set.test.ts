import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  BackendCounters,
  DataPath,
  DataPlane,
  DataPlaneContext,
  DataPlaneFactories,
  DataPlaneFeature,
  DataPlaneListener,
  DataPlanePool,
  ListenerSpec,
  MetricsJson,
  PoolSpec,
  SnapshotSource,
} from '../../src/dataplane/data-plane';
import { DataPlaneSet, refusedFeatures } from '../../src/dataplane/data-plane-set';
import { PROXY_FEATURES } from '../../src/dataplane/in-process';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { FakeClock } from '../fakes/fake-clock';
import { FakeHealth, testPoolSpec } from '../fakes/proxy-harness';

const a = endpoint('198.18.1.1', 2379);
const b = endpoint('198.18.1.2', 2379);

/** A data plane that records what it is asked; counters and ejections are set by the test. */
class RecordingPlane implements DataPlane {
  readonly calls: string[] = [];
  readonly pools = new Map<string, RecordingPool>();
  readonly listeners: ListenerSpec[] = [];
  external: MetricsJson[] = [];
  constructor(
    readonly kind: string,
    readonly features: ReadonlySet<DataPlaneFeature>,
  ) {}
  readonly metrics = {
    refresh: () => (this.calls.push('refresh'), Promise.resolve()),
    external: () => Promise.resolve(this.external),
  };
  addPool(spec: PoolSpec, _health: SnapshotSource): DataPlanePool {
    const pool = new RecordingPool(spec, this.calls);
    this.pools.set(spec.name, pool);
    return pool;
  }
  pool(name: string): DataPlanePool | undefined {
    return this.pools.get(name);
  }
  listener(spec: ListenerSpec): DataPlaneListener {
    this.listeners.push(spec);
    const pool = this.pools.get(spec.pool.name);
    assert.ok(pool, `listener ${spec.id} before its pool`);
    return {
      spec,
      pool,
      start: () => Promise.resolve(),
      bound: () => true,
      onBoundChange: () => () => undefined,
      stats: () => ({ accepted: 0, active: 0, refused: 0, errors: 0 }),
      reconfigure: () => undefined,
      close: () => Promise.resolve(),
      destroy: () => Promise.resolve(),
    };
  }
  start(): Promise<void> {
    this.calls.push('start');
    return Promise.resolve();
  }
  close(graceMs: number): Promise<void> {
    this.calls.push(`close ${graceMs}`);
    return Promise.resolve();
  }
  destroy(): Promise<void> {
    this.calls.push('destroy');
    return Promise.resolve();
  }
}

class RecordingPool implements DataPlanePool {
  readonly pool: string;
  counts = new Map<string, Partial<BackendCounters>>();
  ejected: string[] = [];
  drained = new Set<string>();
  private readonly listeners: Array<() => void> = [];
  constructor(
    public spec: PoolSpec,
    private readonly calls: string[],
  ) {
    this.pool = spec.name;
  }
  active(backend: { key: string }): number {
    return this.counters(backend.key).active;
  }
  counters(key: string): BackendCounters {
    const c = this.counts.get(key) ?? {};
    return { active: c.active ?? 0, total: c.total ?? 0, connectErrors: 0, queued: 0, drained: this.drained.has(key), ...(c.ejectedUntil !== undefined ? { ejectedUntil: c.ejectedUntil } : {}) };
  }
  outOfService() {
    return { drained: [...this.drained], ejected: this.ejected };
  }
  onServiceChange(listener: () => void): () => void {
    this.listeners.push(listener);
    return () => undefined;
  }
  changed(): void {
    for (const l of this.listeners) l();
  }
  drainBackend(key: string, drained: boolean): boolean {
    this.calls.push(`drain ${this.pool} ${key} ${drained}`);
    if (drained) this.drained.add(key);
    else this.drained.delete(key);
    return true;
  }
  reconfigure(spec: PoolSpec): readonly string[] {
    this.calls.push(`reconfigure ${spec.name}`);
    this.spec = spec;
    return [];
  }
  close(): void {
    this.calls.push(`closePool ${this.pool}`);
  }
}

function setUp(): { set: DataPlaneSet; planes: Map<DataPath, RecordingPlane> } {
  const planes = new Map<DataPath, RecordingPlane>();
  const factories: DataPlaneFactories = {
    proxy: () => {
      const p = new RecordingPlane('in-process', PROXY_FEATURES);
      planes.set('proxy', p);
      return p;
    },
    kernel: () => {
      const p = new RecordingPlane('kernel', new Set());
      planes.set('kernel', p);
      return p;
    },
  };
  const context: DataPlaneContext = { logger: silentLogger(), metrics: createMetrics(), clock: new FakeClock(), config: {} as DataPlaneContext['config'] };
  return { set: new DataPlaneSet(factories, context), planes };
}

const kernelPool = (): PoolSpec => ({ ...testPoolSpec([a, b]), name: 'etcd', retryBeforeReply: 'off', maxConnectAttempts: 1, timeouts: { firstByteMs: 0, idleMs: 0, maxConnectionAgeMs: 0, maxConnectionAgeJitterMs: 0 } });
const spec = (id: string, pool: PoolSpec): ListenerSpec => ({ id, vip: 'cp', address: '198.18.0.10', port: Number(id.split(':')[1]), pool });

describe('DataPlaneSet: several data planes behind one face', () => {
  it('routes each listener to the plane of its path, builds a plane only when a path is used, and adds every pool to it', async () => {
    const { set, planes } = setUp();
    const pool = kernelPool();
    set.plane('proxy');
    set.addPool(pool, new FakeHealth([a, b]));
    assert.deepEqual([...planes.keys()], ['proxy'], 'no kernel plane while no listener uses it');
    await set.start();
    set.listener('proxy', spec('cp:6443', pool));
    // A plane a reload brings in gets every pool and is started at once.
    set.listener('kernel', spec('cp:2379', pool));
    assert.deepEqual([...planes.keys()], ['proxy', 'kernel']);
    assert.deepEqual(planes.get('proxy')!.listeners.map((l) => l.id), ['cp:6443']);
    assert.deepEqual(planes.get('kernel')!.listeners.map((l) => l.id), ['cp:2379']);
    assert.ok(planes.get('kernel')!.pools.has('etcd'));
    assert.deepEqual(planes.get('kernel')!.calls, ['start']);
    await set.close(1000);
    assert.deepEqual(planes.get('proxy')!.calls.slice(-1), ['close 1000']);
    assert.deepEqual(planes.get('kernel')!.calls.slice(-1), ['close 1000']);
    assert.throws(() => set.listener('kernel', spec('cp:2380', pool)), /closed/);
  });

  it("sums counters over the planes, drains in every plane, and lets each listener's gate read its own plane", () => {
    const { set, planes } = setUp();
    const pool = kernelPool();
    set.plane('proxy');
    set.plane('kernel');
    const view = set.addPool(pool, new FakeHealth([a, b]));
    const proxyListener = set.listener('proxy', spec('cp:6443', pool));
    const kernelListener = set.listener('kernel', spec('cp:2379', pool));
    const proxyPool = planes.get('proxy')!.pools.get('etcd')!;
    const kernelPoolView = planes.get('kernel')!.pools.get('etcd')!;
    proxyPool.counts.set(a.key, { active: 3, total: 10, ejectedUntil: 5000 });
    kernelPoolView.counts.set(a.key, { active: 4, total: 20 });
    proxyPool.ejected = [a.key];
    assert.deepEqual(view.counters(a.key), { active: 7, total: 30, connectErrors: 0, queued: 0, drained: false, ejectedUntil: 5000 });
    assert.equal(view.active(a), 7);
    assert.deepEqual(proxyListener.pool.outOfService().ejected, [a.key], 'the proxy listener sees its own ejection');
    assert.deepEqual(kernelListener.pool.outOfService().ejected, [], 'the kernel listener is not gated by the proxy plane');
    assert.deepEqual(view.outOfService().ejected, [a.key], 'status shows an ejection anywhere');

    let told = 0;
    view.onServiceChange(() => told++);
    assert.equal(view.drainBackend(b.key, true), true);
    assert.deepEqual(planes.get('proxy')!.calls.filter((c) => c.startsWith('drain')), [`drain etcd ${b.key} true`]);
    assert.deepEqual(planes.get('kernel')!.calls.filter((c) => c.startsWith('drain')), [`drain etcd ${b.key} true`]);
    assert.equal(view.drainBackend('198.18.9.9:2379', true), false, 'a backend not in the pool');
    kernelPoolView.changed();
    assert.equal(told, 1, "a plane's service change reaches the daemon's view");

    const removed = view.reconfigure({ ...pool, backends: pool.backends.filter((x) => x.endpoint.key === a.key) });
    assert.deepEqual(removed, [b.key]);
    assert.ok(planes.get('kernel')!.calls.includes('reconfigure etcd'));
    view.close();
    assert.equal(set.pool('etcd'), undefined);
    assert.ok(planes.get('proxy')!.calls.includes('closePool etcd'));
  });

  it('refuses, by setting, a listener whose pool asks for what its plane cannot do', () => {
    const { set } = setUp();
    const queued = { ...kernelPool(), queue: { size: 8, timeoutMs: 1000 } };
    set.addPool(queued, new FakeHealth([a]));
    assert.throws(() => set.listener('kernel', spec('cp:2379', queued)), /the kernel data path \(kernel\) cannot serve a queue of 8/);
    assert.doesNotThrow(() => set.listener('proxy', spec('cp:6443', queued)));
  });

  it('renders the daemon registry alone when no plane holds another process, and merges when one does', async () => {
    const { set, planes } = setUp();
    set.plane('proxy');
    const registry = createMetrics().registry;
    const alone = await set.metricsText(registry);
    assert.equal(alone, await registry.metrics());
    assert.deepEqual(planes.get('proxy')!.calls, ['refresh']);
    const worker = createMetrics();
    worker.listenerAccepted.inc({ listener: 'cp:6443' }, 5);
    worker.listenerBound.set({ listener: 'cp:6443' }, 1);
    const own = createMetrics();
    own.listenerAccepted.inc({ listener: 'cp:6443' }, 2);
    planes.get('proxy')!.external = [await worker.registry.getMetricsAsJSON()];
    const merged = await set.metricsText(own.registry);
    assert.match(merged, /vipd_proxy_listener_accepted_total\{listener="cp:6443"\} 7/);
  });
});

describe('refusedFeatures', () => {
  it('names each setting a featureless plane cannot serve', () => {
    const none = new Set<DataPlaneFeature>();
    const base = kernelPool();
    const cases: Array<[string, PoolSpec, { maxConnectionsPerSource?: number }, string[]]> = [
      ['plain round-robin', base, {}, []],
      ['least-conn', { ...base, balance: 'least-conn' }, {}, ['leastConn']],
      ['random-two', { ...base, balance: 'random-two' }, {}, ['leastConn']],
      ['retry before reply', { ...base, retryBeforeReply: 'tls', maxConnectAttempts: 3 }, {}, ['retryBeforeReply']],
      ['queue', { ...base, queue: { size: 4, timeoutMs: 100 } }, {}, ['queue']],
      ['first byte', { ...base, timeouts: { ...base.timeouts, firstByteMs: 10_000 } }, {}, ['sessions']],
      ['per-source cap', base, { maxConnectionsPerSource: 10 }, ['perSourceLimits']],
    ];
    for (const [name, pool, limits, expected] of cases) {
      assert.deepEqual(refusedFeatures(spec('cp:2379', pool), limits, none).map((r) => r.feature), expected, name);
      assert.deepEqual(refusedFeatures(spec('cp:2379', pool), limits, PROXY_FEATURES), [], `${name}: the proxy serves it`);
    }
  });
});
