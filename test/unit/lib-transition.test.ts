import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ListenerSet } from '../../src/lib/listener-set';
import { StateMachine, type StateChange } from '../../src/lib/transition';

type S = 'idle' | 'running' | 'closed';

test('transition moves only from an allowed state and tells listeners once per change', () => {
  const m = new StateMachine<S>('idle', { machine: 'test' });
  const seen: StateChange<S>[] = [];
  m.onChange((c) => seen.push(c));
  assert.equal(m.transition(['closed'], 'running', 'not allowed from idle'), false);
  assert.equal(m.state, 'idle');
  assert.equal(m.transition(['idle'], 'running', 'start'), true);
  assert.equal(m.transition(['idle', 'running'], 'running', 'same state'), false);
  assert.equal(m.transition(['running'], 'closed', 'stop'), true);
  assert.deepEqual(seen, [
    { from: 'idle', to: 'running', reason: 'start' },
    { from: 'running', to: 'closed', reason: 'stop' },
  ]);
  assert.ok(m.is('closed'));
});

test('a throwing listener neither stops the others nor the transition', () => {
  const errors: unknown[] = [];
  const set = new ListenerSet<number>((err) => errors.push(err));
  const got: number[] = [];
  set.add(() => {
    throw new Error('boom');
  });
  const off = set.add((v) => got.push(v));
  set.emit(1);
  off();
  off();
  set.emit(2);
  assert.deepEqual(got, [1]);
  assert.equal(errors.length, 2);
  assert.equal(set.size, 1);

  const m = new StateMachine<S>('idle', { machine: 'test' });
  m.onChange(() => {
    throw new Error('listener bug');
  });
  assert.equal(m.transition(['idle'], 'running', 'start'), true);
  assert.equal(m.state, 'running');
});

test('the same function subscribed twice is told twice and unsubscribes per subscription', () => {
  const set = new ListenerSet<string>();
  const got: string[] = [];
  const f = (v: string) => got.push(v);
  const offA = set.add(f);
  set.add(f);
  set.emit('a');
  offA();
  set.emit('b');
  assert.deepEqual(got, ['a', 'a', 'b']);
});
