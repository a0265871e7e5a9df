import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KernelDataPlane, VERIFY_INTERVAL_MS } from '../../src/dataplane/kernel/kernel-data-plane';
import type { NftCommand } from '../../src/dataplane/kernel/kernel-ruleset';
import type { NftRunner } from '../../src/dataplane/kernel/nft';
import type { ConntrackTool } from '../../src/dataplane/kernel/conntrack';
import type { PoolSnapshot } from '../../src/health/health';
import { VipdError } from '../../src/lib/errors';
import { createLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { parseEndpoint, type Endpoint } from '../../src/net/endpoint';
import type { PoolSpec } from '../../src/proxy/proxy';
import { FakeClock } from '../fakes/fake-clock';

const B1 = parseEndpoint('198.18.21.2:2379')!;
const B2 = parseEndpoint('198.18.22.2:2379')!;

/** nftables as a list of tables; apply() commits a whole batch or nothing, as the kernel does. */
class FakeNft implements NftRunner {
  tables = new Map<string, NftCommand[]>();
  applied: NftCommand[][] = [];
  probeError: Error | undefined;
  failNextApply = false;
  async probe() {
    if (this.probeError) throw this.probeError;
  }
  async apply(commands: readonly NftCommand[]) {
    if (this.failNextApply) {
      this.failNextApply = false;
      throw new VipdError('VIPD_ERR_KERNEL', 'nftables refused the table: nft exited 1: injected');
    }
    this.applied.push([...commands]);
    const next = new Map(this.tables);
    for (const c of commands) {
      const [op, body] = Object.entries(c)[0]! as [string, Record<string, Record<string, unknown>>];
      const [kind, object] = Object.entries(body)[0]!;
      const table = String(kind === 'table' ? object.name : object.table);
      if (kind === 'table') {
        if (op === 'delete') next.delete(table);
        else if (!next.has(table)) next.set(table, [{ table: { family: 'inet', name: table } }]);
      } else next.get(table)!.push({ [kind]: { ...object, ...(kind === 'counter' ? { packets: 0, bytes: 0 } : {}) } });
    }
    this.tables = next;
  }
  async listTable(table: string) {
    return this.tables.get(table);
  }
  close() {}
}

const noConntrack: ConntrackTool = { list: async () => '', deleteFlows: async () => 0 };

function pool(closeOnBackendDown = false): PoolSpec {
  return {
    name: 'etcd',
    balance: 'round-robin',
    backends: [{ endpoint: B1, weight: 1 }, { endpoint: B2, weight: 1 }],
    slowStartMs: 0,
    connectTimeoutMs: 1000,
    maxConnectAttempts: 1,
    retryBeforeReply: 'off',
    queue: { size: 0, timeoutMs: 1000 },
    timeouts: { firstByteMs: 0, idleMs: 0, maxConnectionAgeMs: 0, maxConnectionAgeJitterMs: 0 },
    tcpKeepaliveMs: 10_000,
    outlier: { consecutiveConnectFailures: 0, baseEjectionMs: 1000, maxEjectionMs: 1000 },
    closeOnBackendDown,
  };
}

class FakeHealth {
  private listeners: Array<(s: PoolSnapshot) => void> = [];
  current: PoolSnapshot = snapshot([B1, B2]);
  snapshot() {
    return this.current;
  }
  onChange(l: (s: PoolSnapshot) => void) {
    this.listeners.push(l);
    return () => undefined;
  }
  set(healthy: Endpoint[]) {
    this.current = snapshot(healthy);
    for (const l of this.listeners) l(this.current);
  }
}

function snapshot(healthy: Endpoint[]): PoolSnapshot {
  return { pool: 'etcd', version: 1, backends: [], healthy, settled: true };
}

function setup(options: { sysctls?: Record<string, string>; closeOnBackendDown?: boolean; conntrack?: ConntrackTool } = {}) {
  const clock = new FakeClock();
  const nft = new FakeNft();
  const values = options.sysctls ?? { 'net.ipv4.ip_forward': '1', 'net.netfilter.nf_conntrack_max': '262144' };
  const plane = new KernelDataPlane({
    table: 'vipd',
    logger: createLogger('silent'),
    metrics: createMetrics(),
    clock,
    nft,
    conntrack: options.conntrack ?? noConntrack,
    readSysctls: async (keys) => new Map(keys.map((k) => [k, values[k]])),
  });
  const health = new FakeHealth();
  const spec = pool(options.closeOnBackendDown);
  const p = plane.addPool(spec, health);
  const listener = plane.listener({ id: 'cp:2379', vip: 'cp', address: '198.19.0.10', port: 2379, pool: spec });
  return { clock, nft, plane, health, pool: p, listener };
}

const mapped = (nft: FakeNft) => JSON.stringify(nft.tables.get('vipd')?.filter((o) => 'rule' in o && (o.rule as { chain: string }).chain === 'prerouting'));

describe('kernel data plane (fake nftables)', () => {
  it('bound only once the write is read back; one transaction per change', async () => {
    const { nft, plane, listener } = setup();
    assert.equal(listener.bound(), false);
    await plane.start();
    assert.equal(nft.applied.length, 0, 'start writes nothing: a table left by an earlier vipd serves until replaced');
    await listener.start();
    assert.equal(listener.bound(), true);
    assert.equal(nft.applied.length, 1);
    assert.ok(mapped(nft).includes('198.18.21.2') && mapped(nft).includes('198.18.22.2'));
    await plane.destroy();
  });

  it('a backend down or drained leaves the map in the next transaction; the pool view shows the drain', async () => {
    const { nft, plane, listener, health, pool: p } = setup();
    await plane.start();
    await listener.start();
    health.set([B1]);
    await plane.writeNow();
    assert.ok(!mapped(nft).includes('198.18.22.2'));
    health.set([B1, B2]);
    assert.equal(p.drainBackend(B1.key, true), true);
    await plane.writeNow();
    assert.ok(!mapped(nft).includes('198.18.21.2') && mapped(nft).includes('198.18.22.2'));
    assert.deepEqual(p.outOfService(), { drained: [B1.key], ejected: [] });
    assert.equal(p.counters(B1.key).drained, true);
    await plane.destroy();
  });

  it('someone else deletes the table: unbound at the next read-back, rewritten, bound again', async () => {
    const { nft, plane, listener, clock } = setup();
    await plane.start();
    await listener.start();
    const changes: boolean[] = [];
    listener.onBoundChange((b) => changes.push(b));
    nft.tables.delete('vipd');
    await clock.advance(VERIFY_INTERVAL_MS);
    await clock.advance(1000);
    await plane.writeNow();
    assert.deepEqual(changes, [false, true]);
    assert.ok(nft.tables.has('vipd'));
    await plane.destroy();
  });

  it('a refused write: nothing is bound, and it is retried', async () => {
    const { nft, plane, listener, clock } = setup();
    await plane.start();
    nft.failNextApply = true;
    await assert.rejects(listener.start(), /injected/);
    assert.equal(listener.bound(), false);
    await clock.advance(1000);
    await plane.writeNow();
    assert.equal(listener.bound(), true);
    await plane.destroy();
  });

  it('nft missing or no CAP_NET_ADMIN: start fails with the reason, the listener is never bound', async () => {
    const { nft, plane, listener } = setup();
    nft.probeError = new VipdError('VIPD_ERR_KERNEL', 'nftables is not usable: nftables refused this process (Operation not permitted): the kernel data path needs CAP_NET_ADMIN');
    await assert.rejects(plane.start(), /CAP_NET_ADMIN/);
    await assert.rejects(listener.start(), /CAP_NET_ADMIN/);
    assert.equal(listener.bound(), false);
    assert.equal(nft.applied.length, 0);
  });

  it('a sysctl off: start fails naming it and its value', async () => {
    const { plane, listener } = setup({ sysctls: { 'net.ipv4.ip_forward': '0', 'net.netfilter.nf_conntrack_max': '262144' } });
    await assert.rejects(plane.start(), /sysctl net\.ipv4\.ip_forward is 0, it must be 1/);
    assert.equal(listener.bound(), false);
    const small = setup({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.netfilter.nf_conntrack_max': '1024' } });
    await assert.rejects(small.plane.start(), /sysctl net\.netfilter\.nf_conntrack_max is 1024, it must be >= 32768/);
  });

  it('closeOnBackendDown: conntrack entries of the backend go after the write that took it out of the map', async () => {
    const deleted: string[] = [];
    const conntrack: ConntrackTool = { list: async () => '', deleteFlows: async (vip, port, b) => (deleted.push(`${vip}:${port}->${b.key}`), 3) };
    const { plane, listener, health, pool: p } = setup({ closeOnBackendDown: true, conntrack });
    await plane.start();
    await listener.start();
    health.set([B1]);
    await plane.writeNow();
    assert.deepEqual(deleted, ['198.19.0.10:2379->198.18.22.2:2379']);
    p.drainBackend(B1.key, true);
    await plane.writeNow();
    assert.equal(deleted.length, 1, 'a drain never cuts established connections');
    await plane.destroy();
  });

  it('close: the rewrite goes first, then the table; destroy leaves the table', async () => {
    const a = setup();
    await a.plane.start();
    await a.listener.start();
    await a.plane.close(0);
    assert.equal(a.nft.tables.has('vipd'), false);
    assert.equal(a.listener.bound(), false);
    const b = setup();
    await b.plane.start();
    await b.listener.start();
    await b.plane.destroy();
    assert.equal(b.nft.tables.has('vipd'), true, 'as when vipd dies: established connections keep flowing');
  });
});
