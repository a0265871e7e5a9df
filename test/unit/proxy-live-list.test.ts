import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LiveList, type LiveListMember } from '../../src/proxy/live-list';

class Member implements LiveListMember<Member> {
  liveNext: Member | undefined;
  livePrev: Member | undefined;
  constructor(readonly name: string) {}
}

function names(list: LiveList<Member>): string[] {
  return [...list].map((m) => m.name);
}

describe('the listener list of open sessions', () => {
  it('keeps arrival order and its size through deletes at the head, middle and tail', () => {
    const list = new LiveList<Member>();
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => new Member(n)) as [Member, Member, Member, Member];
    for (const m of [a, b, c, d]) list.add(m);
    assert.deepEqual(names(list), ['a', 'b', 'c', 'd']);
    assert.equal(list.delete(b), true);
    assert.deepEqual(names(list), ['a', 'c', 'd']);
    assert.equal(list.delete(a), true);
    assert.equal(list.delete(d), true);
    assert.deepEqual(names(list), ['c']);
    assert.equal(list.size, 1);
    list.add(a);
    assert.deepEqual(names(list), ['c', 'a']);
    assert.equal(list.values().next().value, c);
  });

  it('refuses to delete a member twice or one it never had, and leaves the count alone', () => {
    const list = new LiveList<Member>();
    const a = new Member('a');
    const stranger = new Member('x');
    list.add(a);
    assert.equal(list.delete(stranger), false);
    assert.equal(list.delete(a), true);
    assert.equal(list.delete(a), false);
    assert.equal(list.size, 0);
    assert.deepEqual(names(list), []);
  });

  it('clears a removed member links, so a dead session holds no live one (the GC reason for the list)', () => {
    const list = new LiveList<Member>();
    const [a, b, c] = ['a', 'b', 'c'].map((n) => new Member(n)) as [Member, Member, Member];
    for (const m of [a, b, c]) list.add(m);
    list.delete(b);
    assert.equal(b.liveNext, undefined);
    assert.equal(b.livePrev, undefined);
    assert.equal(a.liveNext, c);
    assert.equal(c.livePrev, a);
  });

  it('lets a loop delete the member it is visiting, as a sweep that ends sessions does', () => {
    const list = new LiveList<Member>();
    const members = ['a', 'b', 'c', 'd', 'e'].map((n) => new Member(n));
    for (const m of members) list.add(m);
    const visited: string[] = [];
    for (const m of list) {
      visited.push(m.name);
      if (m.name !== 'c') list.delete(m);
    }
    assert.deepEqual(visited, ['a', 'b', 'c', 'd', 'e']);
    assert.deepEqual(names(list), ['c']);
    assert.equal(list.size, 1);
  });
});
