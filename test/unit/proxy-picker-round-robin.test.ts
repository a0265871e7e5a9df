import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPicker } from '../../src/proxy/picker';
import { nameOf, poolOf, requestOf, snapshotOf } from '../fakes/proxy-picker-request';

interface SequenceCase {
  readonly name: string;
  readonly configured: string;
  readonly weights?: Record<string, number>;
  readonly healthy: string;
  readonly skip?: string;
  /** One letter per pick, '-' for no backend. */
  readonly expect: string;
}

const sequences: readonly SequenceCase[] = [
  { name: 'weights 5,1,1 interleave as nginx SWRR does', configured: 'abc', weights: { a: 5 }, healthy: 'abc', expect: 'aabacaa'.repeat(3) },
  { name: 'equal weights rotate in configured order', configured: 'abc', healthy: 'abc', expect: 'abcabcabc' },
  { name: 'weights 2,1', configured: 'ab', weights: { a: 2 }, healthy: 'ab', expect: 'abaaba' },
  { name: 'weights 1,3 favour the heavier without a burst', configured: 'ab', weights: { b: 3 }, healthy: 'ab', expect: 'babbbabb' },
  { name: 'weights 3,2 interleave', configured: 'ab', weights: { a: 3, b: 2 }, healthy: 'ab', expect: 'ababaabab' },
  { name: 'one backend', configured: 'abc', healthy: 'b', expect: 'bbb' },
  { name: 'unhealthy backends leave the rotation', configured: 'abc', healthy: 'ac', expect: 'acac' },
  { name: 'a skipped backend takes no part: 5,1 over a and c', configured: 'abc', weights: { a: 5 }, healthy: 'abc', skip: 'b', expect: 'aaacaa'.repeat(2) },
  { name: 'everything skipped', configured: 'ab', healthy: 'ab', skip: 'ab', expect: '--' },
  { name: 'empty healthy set', configured: 'ab', healthy: '', expect: '--' },
];

describe('round-robin picker (smooth weighted)', () => {
  for (const testCase of sequences) {
    it(testCase.name, () => {
      const picker = createPicker(poolOf('round-robin', testCase.configured, testCase.weights));
      const snapshot = snapshotOf(testCase.healthy);
      const picks = [...testCase.expect].map(() => nameOf(picker.pick(requestOf(snapshot, { skip: testCase.skip })))).join('');
      assert.equal(picks, testCase.expect);
    });
  }

  const distributions: ReadonlyArray<{ readonly weights: Record<string, number> }> = [
    { weights: { a: 5, b: 1, c: 1 } },
    { weights: { a: 3, b: 2, c: 1 } },
    { weights: { a: 1, b: 1, c: 1, d: 1 } },
    { weights: { a: 1000, b: 1, c: 7 } },
  ];
  for (const { weights } of distributions) {
    it(`10,000 picks split exactly by weights ${Object.values(weights).join(',')}`, () => {
      const names = Object.keys(weights).join('');
      const picker = createPicker(poolOf('round-robin', names, weights));
      const snapshot = snapshotOf(names);
      const counts: Record<string, number> = {};
      for (let i = 0; i < 10_000; i++) {
        const name = nameOf(picker.pick(requestOf(snapshot)));
        counts[name] = (counts[name] ?? 0) + 1;
      }
      const total = Object.values(weights).reduce((sum, weight) => sum + weight, 0);
      for (const [name, weight] of Object.entries(weights)) {
        // SWRR is exact over each period of `total` picks: off by at most one period's rounding.
        assert.ok(Math.abs((counts[name] ?? 0) - (10_000 * weight) / total) <= 1, `${name}: ${counts[name]} of 10000 for weight ${weight}/${total}`);
      }
    });
  }

  it('keeps its place when the healthy set shrinks instead of restarting at the first backend', () => {
    const picker = createPicker(poolOf('round-robin', 'abc'));
    const first = [1, 2].map(() => nameOf(picker.pick(requestOf(snapshotOf('abc', { version: 1 }))))).join('');
    assert.equal(first, 'ab');
    const shrunk = snapshotOf('ac', { down: 'b', version: 2 });
    assert.equal(nameOf(picker.pick(requestOf(shrunk))), 'c');
  });

  it('a backend that returns shares evenly at once, without a burst of banked turns', () => {
    const picker = createPicker(poolOf('round-robin', 'abc'));
    for (let i = 0; i < 100; i++) picker.pick(requestOf(snapshotOf('ac', { down: 'b', version: 1 })));
    const back = snapshotOf('abc', { version: 2 });
    const picks = Array.from({ length: 30 }, () => nameOf(picker.pick(requestOf(back)))).join('');
    for (const name of 'abc') assert.equal(picks.split(name).length - 1, 10, picks);
    assert.ok(!picks.includes('bb'), picks);
  });

  it('a backend skipped for a while (ejected, full) gets no burst when it is pickable again', () => {
    const picker = createPicker(poolOf('round-robin', 'abc'));
    const snapshot = snapshotOf('abc');
    for (let i = 0; i < 100; i++) picker.pick(requestOf(snapshot, { skip: 'b' }));
    const picks = Array.from({ length: 30 }, () => nameOf(picker.pick(requestOf(snapshot)))).join('');
    for (const name of 'abc') assert.equal(picks.split(name).length - 1, 10, picks);
  });
});
