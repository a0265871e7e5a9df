import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPicker } from '../../src/proxy/picker';
import { HeldConnections, loadOf, nameOf, poolOf, requestOf, snapshotOf } from '../fakes/proxy-picker-request';

interface PickCase {
  readonly name: string;
  readonly weights?: Record<string, number>;
  readonly healthy: string;
  readonly active?: Record<string, number>;
  readonly skip?: string;
  /** One letter per pick with the load held still, '-' for no backend. */
  readonly expect: string;
}

const cases: readonly PickCase[] = [
  { name: 'picks the least loaded', healthy: 'abc', active: { a: 5, b: 1, c: 3 }, expect: 'bbbb' },
  { name: 'rotates through ties', healthy: 'abc', expect: 'abcabc' },
  { name: 'rotates only among the least loaded', healthy: 'abc', active: { a: 1, b: 4, c: 1 }, expect: 'acaca' },
  { name: 'weight 4 with 2 active beats weight 1 idle: 3/4 < 1/1', weights: { a: 4 }, healthy: 'ab', active: { a: 2 }, expect: 'aaa' },
  { name: 'weight 4 with 4 active loses to weight 1 idle: 5/4 > 1/1', weights: { a: 4 }, healthy: 'ab', active: { a: 4 }, expect: 'bbb' },
  { name: 'weight 4 with 3 active ties weight 1 idle and they alternate', weights: { a: 4 }, healthy: 'ab', active: { a: 3 }, expect: 'abab' },
  { name: 'an idle pool starts on the heaviest backend', weights: { c: 2 }, healthy: 'abc', expect: 'ccc' },
  { name: 'skips the least loaded when it is refused', healthy: 'abc', active: { a: 0, b: 2, c: 7 }, skip: 'a', expect: 'bb' },
  { name: 'unhealthy backends are not candidates however idle', healthy: 'bc', active: { b: 3, c: 4 }, expect: 'bb' },
  { name: 'everything skipped', healthy: 'abc', skip: 'abc', expect: '-' },
  { name: 'empty healthy set', healthy: '', expect: '-' },
];

describe('least-conn picker (weighted)', () => {
  for (const testCase of cases) {
    it(testCase.name, () => {
      const picker = createPicker(poolOf('least-conn', 'abc', testCase.weights));
      const snapshot = snapshotOf(testCase.healthy);
      const load = loadOf(testCase.active ?? {});
      const picks = [...testCase.expect].map(() => nameOf(picker.pick(requestOf(snapshot, { load, skip: testCase.skip })))).join('');
      assert.equal(picks, testCase.expect);
    });
  }

  it('spreads connections that stay open evenly and in turn', () => {
    const picker = createPicker(poolOf('least-conn', 'abc'));
    const snapshot = snapshotOf('abc');
    const load = new HeldConnections(Infinity);
    const picks: string[] = [];
    for (let i = 0; i < 9; i++) {
      const picked = picker.pick(requestOf(snapshot, { load }))!;
      load.opened(picked);
      picks.push(nameOf(picked));
    }
    assert.equal(picks.join(''), 'abcabcabc');
  });

  const distributions: ReadonlyArray<{ readonly weights: Record<string, number>; readonly lifetime: number }> = [
    { weights: { a: 5, b: 1, c: 1 }, lifetime: 70 },
    { weights: { a: 3, b: 2, c: 1 }, lifetime: 60 },
    { weights: { a: 1, b: 1, c: 1, d: 1 }, lifetime: 40 },
    { weights: { a: 10, b: 1 }, lifetime: 22 },
  ];
  for (const { weights, lifetime } of distributions) {
    it(`10,000 picks with connections held for ${lifetime} picks split by weights ${Object.values(weights).join(',')} (±5%)`, () => {
      const names = Object.keys(weights).join('');
      const picker = createPicker(poolOf('least-conn', names, weights));
      const snapshot = snapshotOf(names);
      const load = new HeldConnections(lifetime);
      const counts: Record<string, number> = {};
      for (let i = 0; i < 10_000; i++) {
        const picked = picker.pick(requestOf(snapshot, { load }))!;
        load.opened(picked);
        counts[nameOf(picked)] = (counts[nameOf(picked)] ?? 0) + 1;
      }
      const total = Object.values(weights).reduce((sum, weight) => sum + weight, 0);
      for (const [name, weight] of Object.entries(weights)) {
        const expected = (10_000 * weight) / total;
        assert.ok(Math.abs((counts[name] ?? 0) - expected) <= expected * 0.05, `${name}: ${counts[name]} of 10000, expected ${expected.toFixed(0)}`);
      }
      // What least-conn actually balances: open connections, to within a connection or two of each share.
      for (const [index, endpoint] of snapshot.healthy.entries()) {
        const share = (lifetime * weights[names[index]!]!) / total;
        assert.ok(Math.abs(load.active(endpoint) - share) <= 2, `${names[index]}: ${load.active(endpoint)} open, share ${share.toFixed(1)}`);
      }
    });
  }
});
