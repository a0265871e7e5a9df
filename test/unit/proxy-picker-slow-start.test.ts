import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createPicker } from '../../src/proxy/picker';
import { SLOW_START_FLOOR, slowStartFactor } from '../../src/proxy/picker-candidates';
import type { BalanceAlgorithm } from '../../src/proxy/proxy';
import { HeldConnections, nameOf, poolOf, requestOf, seededRandom, snapshotOf, T0 } from '../fakes/proxy-picker-request';

const SLOW_START_MS = 60_000;

const factors: ReadonlyArray<{ readonly name: string; readonly elapsedMs: number; readonly expect: number }> = [
  { name: 'just healthy: the floor', elapsedMs: 0, expect: SLOW_START_FLOOR },
  { name: 'below the floor: the floor', elapsedMs: 3_000, expect: SLOW_START_FLOOR },
  { name: 'a quarter of the way', elapsedMs: 15_000, expect: 0.25 },
  { name: 'half way', elapsedMs: 30_000, expect: 0.5 },
  { name: 'ramp done', elapsedMs: 60_000, expect: 1 },
  { name: 'healthy since long ago (e.g. since startup)', elapsedMs: 86_400_000, expect: 1 },
  { name: '`now` read just before `since`: just healthy', elapsedMs: -20, expect: SLOW_START_FLOOR },
  { name: 'wall clock stepped back by more than a ramp: not slowed', elapsedMs: -3_600_000, expect: 1 },
];

describe('slow start', () => {
  for (const { name, elapsedMs, expect } of factors) {
    it(`factor: ${name}`, () => assert.equal(slowStartFactor(elapsedMs, SLOW_START_MS), expect));
  }

  const figures: string[] = [];
  after(() => console.log(`slow start, share of c (weights 1,1,1) as it ramps over 60s:\n  ${figures.join('\n  ')}`));

  /**
   * Share of picks that go to `c`, which became healthy at T0, over 3,000 picks at `now`. Every pick
   * opens a connection held for 30 picks, so least-conn and random-two see a live load.
   */
  function shareOfNewcomer(algorithm: BalanceAlgorithm, now: number, slowStartMs = SLOW_START_MS): number {
    const picker = createPicker(poolOf(algorithm, 'abc', {}, slowStartMs), { random: seededRandom(3) });
    const snapshot = snapshotOf('abc', { since: { c: T0 } });
    const load = new HeldConnections(30);
    let toNewcomer = 0;
    for (let i = 0; i < 3_000; i++) {
      const picked = picker.pick(requestOf(snapshot, { load, now }))!;
      load.opened(picked);
      if (nameOf(picked) === 'c') toNewcomer++;
    }
    return toNewcomer / 3_000;
  }

  const ramp = [0, 15_000, 30_000, 45_000, 60_000, 600_000];
  for (const algorithm of ['round-robin', 'least-conn', 'random-two'] as const) {
    it(`${algorithm}: the newcomer's share grows with its weight over the ramp, then stays full`, () => {
      const shares = ramp.map((elapsed) => shareOfNewcomer(algorithm, T0 + elapsed));
      figures.push(`${algorithm}: ${ramp.map((elapsed, i) => `${elapsed / 1000}s ${shares[i]!.toFixed(3)}`).join(', ')}`);
      for (let i = 1; i < 5; i++) assert.ok(shares[i]! > shares[i - 1]!, `not growing: ${shares.join(' ')}`);
      for (const [i, elapsed] of ramp.entries()) {
        const factor = slowStartFactor(elapsed, SLOW_START_MS);
        // Two backends at full weight and the newcomer at `factor` of it.
        const expected = factor / (2 + factor);
        assert.ok(Math.abs(shares[i]! - expected) <= 0.03, `${elapsed}ms: share ${shares[i]}, expected ${expected.toFixed(3)}`);
      }
    });

    it(`${algorithm}: without slow start the newcomer gets its full share at once`, () => {
      assert.ok(Math.abs(shareOfNewcomer(algorithm, T0, 0) - 1 / 3) <= 0.03);
    });
  }

  it('a pool that came up together ramps together, so shares stay those of the weights', () => {
    for (const algorithm of ['round-robin', 'least-conn', 'random-two'] as const) {
      const picker = createPicker(poolOf(algorithm, 'abc', { a: 2 }, SLOW_START_MS), { random: seededRandom(9) });
      const snapshot = snapshotOf('abc', { since: { a: T0, b: T0, c: T0 + 500 } });
      const load = new HeldConnections(40);
      const counts: Record<string, number> = {};
      for (let i = 0; i < 4_000; i++) {
        const picked = picker.pick(requestOf(snapshot, { load, now: T0 + 10_000 }))!;
        load.opened(picked);
        counts[nameOf(picked)] = (counts[nameOf(picked)] ?? 0) + 1;
      }
      assert.ok(Math.abs(counts.a! / 4_000 - 0.5) <= 0.03, `${algorithm}: ${JSON.stringify(counts)}`);
    }
  });

  it('a single backend in its ramp is still picked: the floor never starves a pool', () => {
    for (const algorithm of ['round-robin', 'least-conn', 'random-two', 'source-hash'] as const) {
      const picker = createPicker(poolOf(algorithm, 'a', {}, SLOW_START_MS));
      assert.equal(nameOf(picker.pick(requestOf(snapshotOf('a', { since: { a: T0 } }), { now: T0 }))), 'a', algorithm);
    }
  });
});
