import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { PoolSnapshot } from '../../src/health/health';
import { createPicker } from '../../src/proxy/picker';
import { hash32, hashClientAddress } from '../../src/proxy/picker-hash';
import { buildMaglevTable, MAGLEV_TABLE_SIZE } from '../../src/proxy/picker-source-hash';
import type { Picker } from '../../src/proxy/proxy';
import { backend, clientAddresses, nameOf, poolOf, requestOf, snapshotOf, T0 } from '../fakes/proxy-picker-request';

const CLIENTS = clientAddresses(10_000);

function assign(picker: Picker, snapshot: PoolSnapshot, clients: readonly string[] = CLIENTS, skip?: string): string[] {
  return clients.map((clientAddress) => nameOf(picker.pick(requestOf(snapshot, { clientAddress, skip }))));
}

function totalWeight(names: string, weights: Record<string, number>): number {
  return [...names].reduce((sum, name) => sum + (weights[name] ?? 1), 0);
}

interface ChangeCase {
  readonly name: string;
  readonly configured: string;
  readonly weights?: Record<string, number>;
  readonly before: string;
  readonly after: string;
}

const changes: readonly ChangeCase[] = [
  { name: 'removing one of 5', configured: 'abcde', before: 'abcde', after: 'abde' },
  { name: 'adding a sixth', configured: 'abcdef', before: 'abcde', after: 'abcdef' },
  { name: 'removing one of 3', configured: 'abc', before: 'abc', after: 'ac' },
  { name: 'removing one of 10', configured: 'abcdefghij', before: 'abcdefghij', after: 'abcdefgij' },
  { name: 'removing the heaviest of 3,2,1,1,1', configured: 'abcde', weights: { a: 3, b: 2 }, before: 'abcde', after: 'bcde' },
  { name: 'adding a weight-3 backend to 1,1,1,1', configured: 'abcde', weights: { e: 3 }, before: 'abcd', after: 'abcde' },
];

describe('source-hash picker (Maglev)', () => {
  const figures: string[] = [];

  for (const testCase of changes) {
    it(`${testCase.name} moves about that backend's share of 10,000 clients and leaves the others`, () => {
      const weights = testCase.weights ?? {};
      const picker = createPicker(poolOf('source-hash', testCase.configured, weights));
      const before = assign(picker, snapshotOf(testCase.before, { version: 1 }));
      const after = assign(picker, snapshotOf(testCase.after, { version: 2 }));
      const [larger, smaller] = testCase.after.length > testCase.before.length ? [testCase.after, testCase.before] : [testCase.before, testCase.after];
      const changed = [...larger].find((name) => !smaller.includes(name))!;
      const changedShare = (weights[changed] ?? 1) / totalWeight(larger, weights);

      let moved = 0;
      let movedBetweenOthers = 0;
      for (let i = 0; i < CLIENTS.length; i++) {
        if (before[i] === after[i]) continue;
        moved++;
        if (before[i] !== changed && after[i] !== changed) movedBetweenOthers++;
      }
      const movedFraction = moved / CLIENTS.length;
      const othersFraction = movedBetweenOthers / CLIENTS.length;
      figures.push(
        `${testCase.name}: ${(movedFraction * 100).toFixed(1)}% of clients moved (its share ${(changedShare * 100).toFixed(1)}%), ` +
          `${(othersFraction * 100).toFixed(2)}% between unchanged backends`,
      );
      assert.ok(movedFraction < changedShare + 0.03, `moved ${movedFraction}, share ${changedShare}`);
      assert.ok(othersFraction < 0.03, `moved between unchanged backends: ${othersFraction}`);
      // Every client of a removed backend must have moved; an added backend must have taken some.
      assert.ok(after.includes(changed) === (testCase.after.length > testCase.before.length));
      assert.ok(movedFraction > changedShare - 0.03, `moved ${movedFraction}, share ${changedShare}`);
    });
  }

  const distributions: ReadonlyArray<Record<string, number>> = [
    { a: 1, b: 1, c: 1 },
    { a: 5, b: 1, c: 1 },
    { a: 3, b: 2, c: 1, d: 1 },
    { a: 100, b: 10, c: 1 },
  ];
  for (const weights of distributions) {
    it(`table slots and 10,000 clients split by weights ${Object.values(weights).join(',')} (±5%)`, () => {
      const names = Object.keys(weights).join('');
      const total = totalWeight(names, weights);
      const table = buildMaglevTable(
        [...names].map((name) => backend(name).key),
        [...names].map((name) => weights[name]!),
      );
      const clients = assign(createPicker(poolOf('source-hash', names, weights)), snapshotOf(names));
      for (const [index, name] of [...names].entries()) {
        const expected = weights[name]! / total;
        const slotShare = table.filter((entry) => entry === index).length / MAGLEV_TABLE_SIZE;
        // The table itself is all but exact; clients are a sample of it.
        assert.ok(Math.abs(slotShare - expected) <= expected * 0.01, `${name}: ${slotShare} of the slots, expected ${expected}`);
        const clientShare = clients.filter((picked) => picked === name).length / CLIENTS.length;
        assert.ok(Math.abs(clientShare - expected) <= expected * 0.05 + 0.002, `${name}: ${clientShare} of the clients, expected ${expected}`);
      }
    });
  }

  it('is deterministic: same client, same backend, in any picker, whatever the configured or healthy order', () => {
    const first = assign(createPicker(poolOf('source-hash', 'abcde', { b: 3 })), snapshotOf('abcde'));
    const again = assign(createPicker(poolOf('source-hash', 'abcde', { b: 3 })), snapshotOf('abcde'));
    const reordered = assign(createPicker(poolOf('source-hash', 'ecadb', { b: 3 })), snapshotOf('dbeca'));
    assert.deepEqual(again, first);
    assert.deepEqual(reordered, first);
    const picker = createPicker(poolOf('source-hash', 'abcde'));
    const sticky = new Set(Array.from({ length: 50 }, () => nameOf(picker.pick(requestOf(snapshotOf('abcde'), { clientAddress: '203.0.113.9' })))));
    assert.equal(sticky.size, 1);
  });

  it('an IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d) goes where its IPv4 address goes', () => {
    const picker = createPicker(poolOf('source-hash', 'abcde'));
    const snapshot = snapshotOf('abcde');
    const clients = CLIENTS.slice(0, 2000);
    assert.deepEqual(
      assign(picker, snapshot, clients.map((address) => `::ffff:${address}`)),
      assign(picker, snapshot, clients),
    );
  });

  it('spreads IPv6 clients too', () => {
    const picker = createPicker(poolOf('source-hash', 'abcd'));
    const clients = Array.from({ length: 4000 }, (_, i) => `2001:db8:${(i >>> 8).toString(16)}::${(i & 255).toString(16)}`);
    const picks = assign(picker, snapshotOf('abcd'), clients);
    for (const name of 'abcd') {
      const share = picks.filter((picked) => picked === name).length / clients.length;
      assert.ok(Math.abs(share - 0.25) < 0.03, `${name}: ${share}`);
    }
  });

  it('a refused backend\'s clients fall back deterministically, spread over the others; nobody else moves', () => {
    const picker = createPicker(poolOf('source-hash', 'abcde'));
    const snapshot = snapshotOf('abcde');
    const normal = assign(picker, snapshot);
    const fallback = assign(picker, snapshot, CLIENTS, 'a');
    assert.deepEqual(assign(picker, snapshot, CLIENTS, 'a'), fallback);
    const fallbackCounts: Record<string, number> = {};
    for (let i = 0; i < CLIENTS.length; i++) {
      if (normal[i] !== 'a') {
        assert.equal(fallback[i], normal[i], CLIENTS[i]);
        continue;
      }
      fallbackCounts[fallback[i]!] = (fallbackCounts[fallback[i]!] ?? 0) + 1;
    }
    const ofA = normal.filter((picked) => picked === 'a').length;
    for (const name of 'bcde') {
      const share = (fallbackCounts[name] ?? 0) / ofA;
      assert.ok(share > 0.15 && share < 0.35, `${name} took ${share} of a's clients: ${JSON.stringify(fallbackCounts)}`);
    }
  });

  it('a retry refusing the first two choices lands on a third, the same one each time', () => {
    const picker = createPicker(poolOf('source-hash', 'abcde'));
    const snapshot = snapshotOf('abcde');
    for (const clientAddress of CLIENTS.slice(0, 500)) {
      const first = nameOf(picker.pick(requestOf(snapshot, { clientAddress })));
      const second = nameOf(picker.pick(requestOf(snapshot, { clientAddress, skip: first })));
      const third = nameOf(picker.pick(requestOf(snapshot, { clientAddress, skip: first + second })));
      assert.equal(new Set([first, second, third]).size, 3, `${clientAddress}: ${first} ${second} ${third}`);
      assert.equal(nameOf(picker.pick(requestOf(snapshot, { clientAddress, skip: first + second }))), third);
    }
  });

  it('finds the one pickable backend even when every nearby slot is refused', () => {
    const picker = createPicker(poolOf('source-hash', 'abcdefghij', { j: 1 }));
    const picks = new Set(assign(picker, snapshotOf('abcdefghij'), CLIENTS.slice(0, 2000), 'abcdefghi'));
    assert.deepEqual([...picks], ['j']);
  });

  it('slow start does not apply: a backend that just came up gets its full share at once', () => {
    const picker = createPicker(poolOf('source-hash', 'abc', {}, 60_000));
    const picks = assign(picker, snapshotOf('abc', { since: { c: T0 } }));
    const share = picks.filter((picked) => picked === 'c').length / CLIENTS.length;
    assert.ok(Math.abs(share - 1 / 3) < 0.02, `c: ${share}`);
  });

  it('builds its table once per healthy set, not once per snapshot object', () => {
    const keys = [...'abcde'].map((name) => backend(name).key);
    const buildStarted = process.hrtime.bigint();
    const builds = 5;
    for (let i = 0; i < builds; i++) buildMaglevTable(keys, [1, 1, 1, 1, 1]);
    const buildNs = Number(process.hrtime.bigint() - buildStarted) / builds;

    const picker = createPicker(poolOf('source-hash', 'abcde'));
    // Health hands out a new object for every probe result; only a state change bumps the version.
    const snapshots = Array.from({ length: 2000 }, () => snapshotOf('abcde', { version: 7 }));
    const picksStarted = process.hrtime.bigint();
    snapshots.forEach((snapshot, i) => picker.pick(requestOf(snapshot, { clientAddress: CLIENTS[i]! })));
    const picksNs = Number(process.hrtime.bigint() - picksStarted);
    figures.push(`table build (5 backends, ${MAGLEV_TABLE_SIZE} slots): ${(buildNs / 1e6).toFixed(2)} ms`);
    assert.ok(picksNs < buildNs * 100, `2000 picks over new snapshot objects took ${picksNs / 1e6} ms, one build ${buildNs / 1e6} ms`);
  });

  it('hash32 is FNV-1a with murmur3 finalisation: fixed values, and seeds give independent hashes', () => {
    // Pinned (checked against an independent Python implementation) so that every vipd node, whatever
    // its version, sends a client to the same backend.
    assert.equal(hash32(''), 0xab3e7c0b);
    assert.equal(hash32('10.0.0.1:6443'), 0xac3f937a);
    assert.equal(hash32('192.0.2.7'), 0xa670313e);
    assert.notEqual(hash32('10.0.0.1:6443', 0, 1), hash32('10.0.0.1:6443', 0, 2));
    assert.equal(hashClientAddress('::ffff:192.0.2.7'), hashClientAddress('192.0.2.7'));
    assert.notEqual(hashClientAddress('::ffff:c000:207'), hashClientAddress('c000:207'));
  });

  after(() => console.log(`source-hash (Maglev):\n  ${figures.join('\n  ')}`));
});
