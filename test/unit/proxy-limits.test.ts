import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openFileLimit } from '../../src/lib/process-fds';
import { createConnectionLimits, FD_HEADROOM, sessionsByDescriptors } from '../../src/proxy/limits';
import { startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { FloodClient, type ProbeResult } from '../fakes/proxy-flood-client';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 60_000;
/** T09: an excess connection is closed at once, never hung longer than this. */
const REFUSAL_BOUND_MS = 100;
/** Connections opened at once: well below the accept backlog, so the kernel never drops a SYN. */
const BATCH = 100;

function summary(probes: readonly ProbeResult[]): { served: number; refused: number; hung: number; maxRefusalMs: number; p99RefusalMs: number } {
  const refusals = probes.filter((p) => p.outcome === 'refused').map((p) => p.ms).sort((x, y) => x - y);
  return {
    served: probes.filter((p) => p.outcome === 'served').length,
    refused: refusals.length,
    hung: probes.filter((p) => p.outcome === 'hung').length,
    maxRefusalMs: refusals.at(-1) ?? 0,
    p99RefusalMs: refusals[Math.floor(refusals.length * 0.99)] ?? 0,
  };
}

function servedBySource(probes: readonly ProbeResult[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const p of probes) if (p.outcome === 'served') counts.set(p.source, (counts.get(p.source) ?? 0) + 1);
  return counts;
}

async function flood(clients: FloodClient, port: number, sources: readonly string[], perSource: number): Promise<ProbeResult[]> {
  return [...(await clients.send({ op: 'flood', port, sources, perSource, batch: BATCH })).probes];
}

/** Every served connection still relays after the flood: existing sessions were not disturbed. */
async function assertStillServed(clients: FloodClient, expected: number): Promise<void> {
  assert.deepEqual(await clients.send({ op: 'echo' }), { op: 'echo', ok: expected, failed: 0 });
}

const TWELVE_SOURCES = Array.from({ length: 12 }, (_, i) => `127.0.0.${i + 1}`);

describe('connection limits (unit)', () => {
  it('admits up to the per-source and global caps, exactly, and frees on release', () => {
    const limits = createConnectionLimits({ maxConnections: 5, maxConnectionsPerSource: 3 });
    const results = ['a', 'a', 'a', 'a', 'b', 'b', 'c', 'c'].map((source) => limits.admit(source) ?? 'ok');
    assert.deepEqual(results, ['ok', 'ok', 'ok', 'sourceLimit', 'ok', 'ok', 'globalLimit', 'globalLimit']);
    assert.equal(limits.active, 5);
    assert.equal(limits.activeFrom('a'), 3);
    limits.release('a');
    assert.equal(limits.admit('c'), undefined);
    limits.release('c');
    limits.release('b');
    limits.release('b');
    limits.release('a');
    limits.release('a');
    assert.equal(limits.active, 0);
    assert.equal(limits.activeFrom('a'), 0);
    limits.release('a');
    assert.equal(limits.active, 0, 'a release without a slot changes nothing');
  });

  it('update() changes the caps for new clients and keeps the slots already held', () => {
    const limits = createConnectionLimits({});
    for (let i = 0; i < 4; i++) assert.equal(limits.admit('a'), undefined);
    limits.update({ maxConnectionsPerSource: 2 });
    assert.equal(limits.admit('a'), 'sourceLimit');
    assert.equal(limits.activeFrom('a'), 4);
    limits.release('a');
    limits.release('a');
    assert.equal(limits.admit('a'), 'sourceLimit');
    limits.release('a');
    assert.equal(limits.admit('a'), undefined);
  });
});

describe('fd budget (unit)', () => {
  it('reads the soft open-files limit from /proc/self/limits text', () => {
    const limits = (soft: string, hard: string): string =>
      `Limit                     Soft Limit           Hard Limit           Units     \nMax processes             95602                95602                processes \nMax open files            ${soft.padEnd(21)}${hard.padEnd(21)}files     \nMax locked memory         8388608              8388608              bytes     \n`;
    assert.equal(openFileLimit(limits('1024', '524288')), 1024);
    assert.equal(openFileLimit(limits('20000', '20000')), 20000);
    assert.equal(openFileLimit(limits('unlimited', 'unlimited')), undefined);
    assert.equal(openFileLimit('Limit Soft Hard\n'), undefined);
    assert.ok((openFileLimit() ?? Infinity) > 0, 'this process has a readable limit');
  });

  it('two descriptors per session after those in use and the headroom; never negative; unlimited without a limit', () => {
    assert.equal(sessionsByDescriptors(20_000, 36), Math.floor((20_000 - 36 - FD_HEADROOM) / 2));
    assert.equal(sessionsByDescriptors(256, 20), 54, '256 - 20 in use - 128 (64 for probes + 64 for admin connections), two per session');
    assert.equal(sessionsByDescriptors(257, 20), 54);
    assert.equal(sessionsByDescriptors(64, 20), 0);
    assert.equal(sessionsByDescriptors(undefined, 20), Infinity);
  });

  it('a session capacity refuses with fdLimit beyond it, after the configured global cap', () => {
    const limits = createConnectionLimits({ maxConnections: 3 }, 2);
    assert.deepEqual(['a', 'b', 'c'].map((source) => limits.admit(source) ?? 'ok'), ['ok', 'ok', 'fdLimit']);
    limits.release('a');
    assert.equal(limits.admit('c'), undefined);
    const underGlobal = createConnectionLimits({ maxConnections: 1 }, 2);
    assert.deepEqual(['a', 'b'].map((source) => underGlobal.admit(source) ?? 'ok'), ['ok', 'globalLimit']);
  });
});

describe('connection caps (T09)', () => {
  it('1,200 connections from one source with a per-source cap of 100: exactly 100 served, the rest reset at once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const limits = createConnectionLimits({ maxConnectionsPerSource: 100 });
    const proxy = await startProxy({ healthy: [backend.endpoint], limits });
    const clients = new FloodClient();
    try {
      const probes = await flood(clients, proxy.port, ['127.0.0.1'], 1_200);
      const s = summary(probes);
      console.log(
        `T09 one source: 1200 connections, served ${s.served}, refused ${s.refused}, hung ${s.hung}; refusal time p99 ${s.p99RefusalMs.toFixed(1)} ms, max ${s.maxRefusalMs.toFixed(1)} ms; backend accepted ${backend.accepted}`,
      );
      assert.equal(s.served, 100);
      assert.equal(s.refused, 1_100);
      assert.ok(s.maxRefusalMs < REFUSAL_BOUND_MS, `a refused connection took ${s.maxRefusalMs} ms`);
      assert.equal(limits.activeFrom('127.0.0.1'), 100);
      assert.equal(backend.accepted, 100, 'a refused client was dialled upstream');
      assert.equal(await metricValue(proxy.metrics.listenerRefused, { reason: 'sourceLimit' }), 1_100);
      assert.equal(proxy.listener.stats().refused, 1_100);
      assert.equal(proxy.listener.stats().active, 100);
      await assertStillServed(clients, 100);
      // Slots come back when sessions end: the source may connect again, up to the cap.
      await clients.send({ op: 'close', count: 30 });
      await waitFor(() => limits.activeFrom('127.0.0.1') === 70, 2_000, 'per-source slots to be given back');
      const again = summary(await flood(clients, proxy.port, ['127.0.0.1'], 40));
      assert.equal(again.served, 30);
      assert.equal(again.refused, 10);
    } finally {
      await clients.close();
      proxy.listener.destroy();
      await backend.close();
    }
    await waitFor(() => limits.active === 0, 2_000, 'every slot to be given back');
  });

  it('1,200 connections from 12 sources with a per-source cap of 60: exactly 60 per source', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const limits = createConnectionLimits({ maxConnectionsPerSource: 60 });
    const proxy = await startProxy({ healthy: [backend.endpoint], limits });
    const clients = new FloodClient();
    try {
      const probes = await flood(clients, proxy.port, TWELVE_SOURCES, 100);
      const s = summary(probes);
      const perSource = servedBySource(probes);
      console.log(
        `T09 12 sources: 1200 connections, served ${s.served}, refused ${s.refused}, hung ${s.hung}; refusal time p99 ${s.p99RefusalMs.toFixed(1)} ms, max ${s.maxRefusalMs.toFixed(1)} ms; served per source ${[...perSource.values()].join(' ')}`,
      );
      assert.deepEqual([...perSource.entries()].sort(), TWELVE_SOURCES.map((source) => [source, 60]).sort());
      assert.equal(s.refused, 480);
      assert.ok(s.maxRefusalMs < REFUSAL_BOUND_MS, `a refused connection took ${s.maxRefusalMs} ms`);
      await assertStillServed(clients, 720);
    } finally {
      await clients.close();
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('a process-wide cap holds across two listeners; a listener cap holds on its own', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const limits = createConnectionLimits({ maxConnections: 500, maxConnectionsPerSource: 60 });
    const first = await startProxy({ healthy: [backend.endpoint], limits });
    const second = await startProxy({ healthy: [backend.endpoint], limits, sharePoolWith: first, maxConnections: 150 });
    const clients = new FloodClient();
    try {
      const viaSecond = summary(await flood(clients, second.port, TWELVE_SOURCES, 20));
      assert.equal(viaSecond.served, 150, 'listener cap');
      assert.equal(await metricValue(first.metrics.listenerRefused, { listener: 'test:1', reason: 'listenerLimit' }), 90);
      const viaFirst = summary(await flood(clients, first.port, TWELVE_SOURCES, 60));
      console.log(
        `T09 global cap 500 over two listeners: second listener (cap 150) served ${viaSecond.served}, first served ${viaFirst.served}, refused ${viaFirst.refused} ` +
          `(max ${viaFirst.maxRefusalMs.toFixed(1)} ms); per-source slots held ${TWELVE_SOURCES.map((source) => limits.activeFrom(source)).join(' ')}`,
      );
      assert.equal(limits.active, 500);
      assert.equal(viaSecond.served + viaFirst.served, 500);
      assert.ok(TWELVE_SOURCES.every((source) => limits.activeFrom(source) <= 60), 'a source went past its cap');
      assert.ok(viaFirst.maxRefusalMs < REFUSAL_BOUND_MS, `a refused connection took ${viaFirst.maxRefusalMs} ms`);
      assert.ok((await metricValue(first.metrics.listenerRefused, { reason: 'globalLimit' })) > 0);
      await assertStillServed(clients, 500);
    } finally {
      await clients.close();
      second.listener.destroy();
      first.listener.destroy();
      await backend.close();
    }
  });
});
