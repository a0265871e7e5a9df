import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPicker } from '../../src/proxy/picker';
import type { BackendLoad } from '../../src/proxy/proxy';
import { HeldConnections, loadOf, nameOf, poolOf, requestOf, seededRandom, snapshotOf } from '../fakes/proxy-picker-request';

/** Hands out `values` in order and fails the test if the picker draws more than the case scripted. */
function scriptedRandom(values: readonly number[]): () => number {
  let next = 0;
  return () => {
    if (next >= values.length) assert.fail(`picker drew random number #${next + 1}; the case scripted ${values.length}`);
    return values[next++]!;
  };
}

interface ScriptedCase {
  readonly name: string;
  readonly weights?: Record<string, number>;
  readonly active?: Record<string, number>;
  readonly skip?: string;
  readonly random: readonly number[];
  readonly expect: string;
}

// Backends a, b, c. The first draw falls on offset random × total; the second, over the total
// without the first one's range, steps over that range.
const scripted: readonly ScriptedCase[] = [
  { name: 'draws a then c and takes the idler c', active: { a: 3, b: 1, c: 0 }, random: [0.1, 0.9], expect: 'c' },
  { name: 'draws b then a and takes the idler a', active: { a: 0, b: 5, c: 1 }, random: [0.5, 0.0], expect: 'a' },
  { name: 'a tie keeps the first drawn', active: { a: 2, b: 2, c: 2 }, random: [0.9, 0.0], expect: 'c' },
  { name: 'the busiest of the pool is not picked even when drawn first', active: { a: 1, b: 9, c: 1 }, random: [0.5, 0.99], expect: 'c' },
  { name: 'draws by weight: 8,1,1 with 0.5 and 0.5 draws a and c', weights: { a: 8 }, active: { a: 8, c: 2 }, random: [0.5, 0.5], expect: 'a' },
  { name: 'compares per unit of weight: a 7/8 beats c 1/1', weights: { a: 8 }, active: { a: 7, c: 1 }, random: [0.95, 0.0], expect: 'a' },
  { name: 'a refused draw redraws among the pickable', active: { b: 3, c: 1 }, skip: 'a', random: [0.1, 0.2, 0.0], expect: 'c' },
  { name: 'one pickable left is taken without a second draw', skip: 'ab', random: [0.1], expect: 'c' },
  { name: 'nothing pickable', skip: 'abc', random: [0.1], expect: '-' },
];

function shares(counts: Record<string, number>, picks: number): string {
  return Object.entries(counts)
    .sort()
    .map(([name, count]) => `${name}=${(count / picks).toFixed(3)}`)
    .join(' ');
}

describe('random-two picker (power of two choices)', () => {
  for (const testCase of scripted) {
    it(testCase.name, () => {
      const picker = createPicker(poolOf('random-two', 'abc', testCase.weights), { random: scriptedRandom(testCase.random) });
      const picked = picker.pick(requestOf(snapshotOf('abc'), { load: loadOf(testCase.active ?? {}), skip: testCase.skip }));
      assert.equal(nameOf(picked), testCase.expect);
    });
  }

  it('repeats itself with the same seed and not with another', () => {
    const run = (seed: number): string => {
      const picker = createPicker(poolOf('random-two', 'abcde'), { random: seededRandom(seed) });
      const load = new HeldConnections(10);
      return Array.from({ length: 200 }, () => {
        const picked = picker.pick(requestOf(snapshotOf('abcde'), { load }))!;
        load.opened(picked);
        return nameOf(picked);
      }).join('');
    };
    assert.equal(run(42), run(42));
    assert.notEqual(run(42), run(43));
  });

  it('never picks the backend with the most connections per weight while another is pickable', () => {
    const picker = createPicker(poolOf('random-two', 'abcd', { b: 4 }), { random: seededRandom(5) });
    // Per weight: a 6, b 5/4, c 2, d 0.
    const load = loadOf({ a: 6, b: 5, c: 2, d: 0 });
    const picks = new Set(Array.from({ length: 10_000 }, () => nameOf(picker.pick(requestOf(snapshotOf('abcd'), { load })))));
    assert.deepEqual([...picks].sort(), ['b', 'c', 'd']);
  });

  const distributions: ReadonlyArray<{ readonly weights: Record<string, number>; readonly held: boolean }> = [
    { weights: { a: 5, b: 1, c: 1 }, held: false },
    { weights: { a: 3, b: 2, c: 1 }, held: false },
    { weights: { a: 1, b: 1, c: 1, d: 1 }, held: false },
    { weights: { a: 5, b: 1, c: 1 }, held: true },
    { weights: { a: 3, b: 2, c: 1 }, held: true },
    { weights: { a: 1, b: 1, c: 1, d: 1 }, held: true },
  ];
  for (const { weights, held } of distributions) {
    const names = Object.keys(weights).join('');
    it(`10,000 picks ${held ? 'with connections held for 50 picks' : 'on an idle pool'} split by weights ${Object.values(weights).join(',')} (±0.015 of each share)`, () => {
      const picker = createPicker(poolOf('random-two', names, weights), { random: seededRandom(11) });
      const snapshot = snapshotOf(names);
      const heldConnections = new HeldConnections(50);
      const load: BackendLoad = held ? heldConnections : loadOf({});
      const counts: Record<string, number> = {};
      for (let i = 0; i < 10_000; i++) {
        const picked = picker.pick(requestOf(snapshot, { load }))!;
        heldConnections.opened(picked);
        counts[nameOf(picked)] = (counts[nameOf(picked)] ?? 0) + 1;
      }
      const total = Object.values(weights).reduce((sum, weight) => sum + weight, 0);
      for (const [name, weight] of Object.entries(weights)) {
        // Binomial spread of a 1/7 share over 10,000 picks is 0.0035: 0.015 is four of them. With held
        // connections P2C also pulls a little toward the light backends (5,1,1 gives a about 0.70, not 0.714).
        assert.ok(Math.abs((counts[name] ?? 0) / 10_000 - weight / total) <= 0.015, `${name}: ${shares(counts, 10_000)}`);
      }
    });
  }
});
