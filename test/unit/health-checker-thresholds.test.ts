import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyResult, initialMemory, type CheckOutcome } from '../../src/health/checker-thresholds';
import type { HealthState } from '../../src/health/health';

// results: o = pass, x = fail. states after each result: U unknown, H healthy, D unhealthy (down).
// outcomes: c changed, p changePending, u unchanged.
const cases: ReadonlyArray<{ name: string; rise: number; fall: number; results: string; states: string; outcomes: string }> = [
  { name: 'rise passes make a new backend healthy', rise: 2, fall: 2, results: 'oo', states: 'UH', outcomes: 'pc' },
  { name: 'fall failures make a new backend unhealthy without it ever being up', rise: 2, fall: 2, results: 'xx', states: 'UD', outcomes: 'pc' },
  { name: 'rise 1 and fall 1 follow every result', rise: 1, fall: 1, results: 'oxxo', states: 'HDDH', outcomes: 'ccuc' },
  { name: 'alternating results never settle an unknown backend', rise: 2, fall: 2, results: 'oxoxoxox', states: 'UUUUUUUU', outcomes: 'pppppppp' },
  { name: 'a failure resets the pass run of an unknown backend', rise: 2, fall: 2, results: 'oxoo', states: 'UUUH', outcomes: 'pppc' },
  { name: 'a pass resets the failure run of an unknown backend', rise: 2, fall: 2, results: 'xoxx', states: 'UUUD', outcomes: 'pppc' },
  { name: 'a single failure on a healthy backend is only pending', rise: 2, fall: 2, results: 'ooxoxxoo', states: 'UHHHHDDH', outcomes: 'pcpupcpc' },
  { name: 'a down backend needs a fresh run of rise passes', rise: 2, fall: 2, results: 'xxoxoo', states: 'UDDDDH', outcomes: 'pcpupc' },
  { name: 'rise 3 counts three passes', rise: 3, fall: 2, results: 'oooxo', states: 'UUHHH', outcomes: 'ppcpu' },
  { name: 'fall 3 tolerates two failures in a row', rise: 2, fall: 3, results: 'ooxxoxxx', states: 'UHHHHHHD', outcomes: 'pcppuppc' },
  { name: 'fall 1 marks down on the first failure', rise: 2, fall: 1, results: 'oox', states: 'UHD', outcomes: 'pcc' },
  { name: 'fall 3 from unknown', rise: 1, fall: 3, results: 'xxxo', states: 'UUDH', outcomes: 'ppcc' },
  { name: 'further failures after mark-down change nothing', rise: 2, fall: 2, results: 'ooxxxx', states: 'UHHDDD', outcomes: 'pcpcuu' },
];

const STATE: Record<string, HealthState> = { U: 'unknown', H: 'healthy', D: 'unhealthy' };
const OUTCOME: Record<string, CheckOutcome> = { c: 'changed', p: 'changePending', u: 'unchanged' };

describe('health thresholds (rise/fall case table)', () => {
  for (const c of cases) {
    it(`${c.name}: rise ${c.rise} fall ${c.fall} ${c.results}`, () => {
      let memory = initialMemory;
      const states: HealthState[] = [];
      const outcomes: CheckOutcome[] = [];
      for (const r of c.results) {
        const step = applyResult(memory, r === 'o', { rise: c.rise, fall: c.fall });
        memory = step.memory;
        states.push(memory.state);
        outcomes.push(step.outcome);
      }
      assert.deepEqual(states, [...c.states].map((s) => STATE[s]));
      assert.deepEqual(outcomes, [...c.outcomes].map((o) => OUTCOME[o]));
    });
  }

  it('is pure: the memory passed in is never modified', () => {
    const before = { ...initialMemory };
    const step = applyResult(initialMemory, true, { rise: 1, fall: 1 });
    assert.equal(step.memory.state, 'healthy');
    assert.deepEqual(initialMemory, before);
    assert.ok(Object.isFrozen(initialMemory));
  });

  it('a changed outcome always changes the state and the others never do', () => {
    for (const c of cases) {
      let memory = initialMemory;
      for (const r of c.results) {
        const step = applyResult(memory, r === 'o', { rise: c.rise, fall: c.fall });
        assert.equal(step.outcome === 'changed', step.memory.state !== memory.state, c.name);
        memory = step.memory;
      }
    }
  });
});
