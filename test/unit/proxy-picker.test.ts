import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VipdError } from '../../src/lib/errors';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import { createPicker } from '../../src/proxy/picker';
import type { BackendLoad, BalanceAlgorithm } from '../../src/proxy/proxy';
import { snapshotOf } from '../fakes/proxy-backends';

const a = endpoint('127.0.0.1', 7001);
const b = endpoint('127.0.0.1', 7002);
const c = endpoint('127.0.0.1', 7003);
const byName = new Map<string, Endpoint>([
  ['a', a],
  ['b', b],
  ['c', c],
]);
const nameOf = (e: Endpoint | undefined): string => (e === undefined ? '-' : [...byName].find(([, v]) => v === e)![0]);

function loadOf(active: Record<string, number>): BackendLoad {
  return { active: (backend) => active[nameOf(backend)] ?? 0 };
}

interface PickCase {
  readonly name: string;
  readonly algorithm: BalanceAlgorithm;
  readonly healthy: string;
  readonly load?: Record<string, number>;
  readonly exclude?: string;
  /** One letter per pick, '-' for undefined. */
  readonly expect: string;
}

const cases: readonly PickCase[] = [
  { name: 'round-robin cycles in configured order', algorithm: 'round-robin', healthy: 'abc', expect: 'abcabca' },
  { name: 'round-robin with one backend', algorithm: 'round-robin', healthy: 'b', expect: 'bbb' },
  { name: 'round-robin ignores load', algorithm: 'round-robin', healthy: 'abc', load: { a: 9, b: 0, c: 0 }, expect: 'abcabc' },
  { name: 'round-robin skips excluded', algorithm: 'round-robin', healthy: 'abc', exclude: 'b', expect: 'acaca' },
  { name: 'round-robin all excluded', algorithm: 'round-robin', healthy: 'ab', exclude: 'ab', expect: '--' },
  { name: 'round-robin empty healthy', algorithm: 'round-robin', healthy: '', expect: '--' },
  { name: 'least-conn picks the minimum', algorithm: 'least-conn', healthy: 'abc', load: { a: 5, b: 1, c: 3 }, expect: 'bbbb' },
  { name: 'least-conn rotates ties', algorithm: 'least-conn', healthy: 'abc', expect: 'abcabc' },
  { name: 'least-conn rotates ties among the minimum only', algorithm: 'least-conn', healthy: 'abc', load: { a: 1, b: 4, c: 1 }, expect: 'acaca' },
  { name: 'least-conn skips excluded minimum', algorithm: 'least-conn', healthy: 'abc', load: { a: 0, b: 2, c: 7 }, exclude: 'a', expect: 'bb' },
  { name: 'least-conn all excluded', algorithm: 'least-conn', healthy: 'abc', exclude: 'abc', expect: '-' },
  { name: 'least-conn empty healthy', algorithm: 'least-conn', healthy: '', expect: '-' },
];

describe('pickers', () => {
  for (const testCase of cases) {
    it(testCase.name, () => {
      const picker = createPicker(testCase.algorithm);
      const snapshot = snapshotOf('p', [...testCase.healthy].map((n) => byName.get(n)!));
      const exclude = new Set([...(testCase.exclude ?? '')].map((n) => byName.get(n)!.key));
      const load = loadOf(testCase.load ?? {});
      const picks = [...testCase.expect].map(() => nameOf(picker.pick(snapshot, load, exclude))).join('');
      assert.equal(picks, testCase.expect);
    });
  }

  it('never picks a backend that is listed but not healthy', () => {
    for (const algorithm of ['round-robin', 'least-conn'] as const) {
      const picker = createPicker(algorithm);
      const snapshot = snapshotOf('p', [a, c], [b]);
      const load = loadOf({ a: 3, b: 0, c: 3 });
      const picks = Array.from({ length: 30 }, () => nameOf(picker.pick(snapshot, load, new Set())));
      assert.ok(!picks.includes('b'), `${algorithm} picked the unhealthy backend: ${picks.join('')}`);
    }
  });

  it('least-conn follows live load as it changes', () => {
    const picker = createPicker('least-conn');
    const snapshot = snapshotOf('p', [a, b, c]);
    const active: Record<string, number> = { a: 0, b: 0, c: 0 };
    const picks: string[] = [];
    // Each pick opens a connection that stays open: least-conn must spread them evenly.
    for (let i = 0; i < 9; i++) {
      const name = nameOf(picker.pick(snapshot, loadOf(active), new Set()));
      picks.push(name);
      active[name]!++;
    }
    assert.deepEqual(active, { a: 3, b: 3, c: 3 });
    assert.equal(picks.join(''), 'abcabcabc');
  });

  it('round-robin keeps rotating when the healthy set shrinks', () => {
    const picker = createPicker('round-robin');
    const load = loadOf({});
    assert.equal(nameOf(picker.pick(snapshotOf('p', [a, b, c]), load, new Set())), 'a');
    assert.equal(nameOf(picker.pick(snapshotOf('p', [a, b, c]), load, new Set())), 'b');
    const shrunk = snapshotOf('p', [a, c], [b]);
    const picks = Array.from({ length: 4 }, () => nameOf(picker.pick(shrunk, load, new Set()))).join('');
    assert.equal(picks, 'acac');
  });

  it('rejects an unknown algorithm with a config error', () => {
    assert.throws(
      () => createPicker('random' as BalanceAlgorithm),
      (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CONFIG',
    );
  });
});
