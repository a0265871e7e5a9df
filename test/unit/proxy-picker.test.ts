import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PoolSnapshot } from '../../src/health/health';
import { VipdError } from '../../src/lib/errors';
import { createPicker } from '../../src/proxy/picker';
import type { BalanceAlgorithm, PickRequest } from '../../src/proxy/proxy';
import { backend, clientAddresses, HeldConnections, nameOf, poolOf, requestOf, seededRandom, snapshotOf, T0 } from '../fakes/proxy-picker-request';

const algorithms: readonly BalanceAlgorithm[] = ['round-robin', 'least-conn', 'random-two', 'random', 'source-hash'];

/**
 * Letters picked over `count` picks, each from a different client address so source-hash varies too,
 * each opening a connection that stays open for a while so least-conn sees load move.
 */
function picksOf(algorithm: BalanceAlgorithm, snapshot: PoolSnapshot, fields: { skip?: string }, count: number): string {
  const picker = createPicker(poolOf(algorithm, 'abcde', { a: 3, b: 2 }), { random: seededRandom(7) });
  const load = new HeldConnections(20);
  return clientAddresses(count)
    .map((clientAddress) => {
      const picked = picker.pick(requestOf(snapshot, { skip: fields.skip, load, clientAddress }));
      if (picked !== undefined) load.opened(picked);
      return nameOf(picked);
    })
    .join('');
}

interface CommonCase {
  readonly name: string;
  readonly healthy: string;
  readonly down?: string;
  readonly skip?: string;
  /** Letters that must never be picked ('-' is "no backend"). */
  readonly never: string;
  /** Letters that must each be picked at least once. */
  readonly some: string;
}

const commonCases: readonly CommonCase[] = [
  { name: 'empty healthy set gives no backend', healthy: '', down: 'abcde', never: 'abcde', some: '-' },
  { name: 'every candidate skipped gives no backend', healthy: 'abc', down: 'de', skip: 'abc', never: 'abcde', some: '-' },
  { name: 'listed but unhealthy backends are never picked', healthy: 'ace', down: 'bd', never: 'bd-', some: 'ace' },
  { name: 'skipped backends are never picked', healthy: 'abcde', skip: 'ad', never: 'ad-', some: 'bce' },
  { name: 'skipping all but one leaves that one', healthy: 'abcde', skip: 'abde', never: 'abde-', some: 'c' },
  { name: 'skipping a backend that is not healthy changes nothing', healthy: 'ab', down: 'cde', skip: 'c', never: 'cde-', some: 'ab' },
];

describe('pickers: what every algorithm promises', () => {
  for (const algorithm of algorithms) {
    for (const testCase of commonCases) {
      it(`${algorithm}: ${testCase.name}`, () => {
        const snapshot = snapshotOf(testCase.healthy, { down: testCase.down });
        const picks = picksOf(algorithm, snapshot, testCase, 500);
        for (const letter of testCase.never) assert.ok(!picks.includes(letter), `picked ${letter}: ${picks.slice(0, 60)}`);
        for (const letter of testCase.some) assert.ok(picks.includes(letter), `never picked ${letter}: ${picks.slice(0, 60)}`);
      });
    }
  }

  it('refuses an unknown algorithm with a config error naming the pool', () => {
    assert.throws(
      () => createPicker(poolOf('weighted-coin' as BalanceAlgorithm, 'ab')),
      (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CONFIG' && err.message.includes('control-plane'),
    );
  });

  it('every algorithm follows the healthy set from one snapshot version to the next', () => {
    for (const algorithm of algorithms) {
      const picker = createPicker(poolOf(algorithm, 'abc'), { random: seededRandom(1) });
      const pickAll = (snapshot: PoolSnapshot): string =>
        clientAddresses(300)
          .map((clientAddress) => nameOf(picker.pick(requestOf(snapshot, { clientAddress }))))
          .join('');
      const before = pickAll(snapshotOf('abc', { version: 1 }));
      const after = pickAll(snapshotOf('ac', { down: 'b', version: 2 }));
      const back = pickAll(snapshotOf('abc', { version: 3 }));
      assert.ok(before.includes('b') && !after.includes('b') && back.includes('b'), `${algorithm}: ${before.slice(0, 20)} / ${after.slice(0, 20)} / ${back.slice(0, 20)}`);
    }
  });

  it('a same-version snapshot with a different healthy set (restarted health) is not mistaken for the cached one', () => {
    for (const algorithm of algorithms) {
      const picker = createPicker(poolOf(algorithm, 'abc'), { random: seededRandom(1) });
      for (const clientAddress of clientAddresses(50)) picker.pick(requestOf(snapshotOf('ab', { version: 4 }), { clientAddress }));
      const picks = clientAddresses(300).map((clientAddress) => nameOf(picker.pick(requestOf(snapshotOf('c', { down: 'ab', version: 4 }), { clientAddress }))));
      assert.deepEqual(new Set(picks), new Set(['c']), algorithm);
    }
  });

  it('measures ns per pick over 1e6 picks, with a new snapshot object (same version) every 1000 picks', () => {
    const names = 'abcde';
    // (active + 1) / weight is 2 for every backend: least-conn has real ties to rotate through.
    const active = new Map(Object.entries({ a: 9, b: 5, c: 3, d: 1, e: 1 }).map(([name, count]) => [backend(name).key, count]));
    const load = { active: (target: { key: string }) => active.get(target.key) ?? 0 };
    const addresses = clientAddresses(1024);
    const figures: string[] = [];
    for (const algorithm of algorithms) {
      for (const ramping of [false, true]) {
        if (ramping && algorithm === 'source-hash') continue;
        const picker = createPicker(poolOf(algorithm, names, { a: 5, b: 3, c: 2 }, ramping ? 60_000 : 0));
        // `since` T0 for e: it is half-way through its ramp at T0 + 30s.
        const snapshots = [0, 1].map(() => snapshotOf(names, { version: 9, since: { e: T0 } }));
        const request: { -readonly [K in keyof PickRequest]: PickRequest[K] } = {
          snapshot: snapshots[0]!,
          load,
          skip: () => false,
          clientAddress: addresses[0]!,
          now: T0 + 30_000,
        };
        const picks = 1_000_000;
        const counts = new Map<string, number>();
        const started = process.hrtime.bigint();
        for (let i = 0; i < picks; i++) {
          if ((i & 1023) === 0) request.snapshot = snapshots[(i >>> 10) & 1]!;
          request.clientAddress = addresses[i & 1023]!;
          const picked = picker.pick(request)!;
          if (i % 997 === 0) counts.set(picked.key, (counts.get(picked.key) ?? 0) + 1);
        }
        const nsPerPick = Number(process.hrtime.bigint() - started) / picks;
        figures.push(`${algorithm}${ramping ? ' (slow start ramping)' : ''}: ${nsPerPick.toFixed(0)} ns/pick`);
        assert.ok(counts.size >= 2, `${algorithm} kept picking one backend: ${[...counts.keys()].join(',')}`);
        // A rebuild per snapshot object (a Maglev table is ~1ms) or per pick would blow far past this.
        assert.ok(nsPerPick < 5_000, `${algorithm}: ${nsPerPick} ns per pick`);
      }
    }
    console.log(`pick cost, 5 backends weights 5,3,2,1,1:\n  ${figures.join('\n  ')}`);
  });
});

describe('random picker: one weighted draw, no look at load', () => {
  it('shares follow the weights (a:3 b:2 c..e:1 over 8,000 picks, within 15 %)', () => {
    const picker = createPicker(poolOf('random', 'abcde', { a: 3, b: 2 }), { random: seededRandom(11) });
    const snapshot = snapshotOf('abcde');
    const counts = new Map<string, number>();
    const load = new HeldConnections(0);
    for (const clientAddress of clientAddresses(8000)) {
      const name = nameOf(picker.pick(requestOf(snapshot, { load, clientAddress })));
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    const expected: Record<string, number> = { a: 3 / 8, b: 2 / 8, c: 1 / 8, d: 1 / 8, e: 1 / 8 };
    for (const [name, share] of Object.entries(expected)) {
      const got = (counts.get(name) ?? 0) / 8000;
      assert.ok(Math.abs(got - share) / share < 0.15, `${name}: ${got.toFixed(3)} of picks, weight share ${share.toFixed(3)}`);
    }
  });
});
