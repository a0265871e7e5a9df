import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildTableCommands, type KernelTableState } from '../../src/dataplane/kernel/kernel-ruleset';
import { verifyTable, type Verification } from '../../src/dataplane/kernel/kernel-verify';
import { parseEndpoint } from '../../src/net/endpoint';

const be = (text: string) => ({ endpoint: parseEndpoint(text)!, weight: 1 });
const state: KernelTableState = {
  table: 'vipd',
  generation: 'n1.3',
  listeners: [
    { id: 'cp:2379', vipAddress: '198.19.0.10', port: 2379, pool: 'etcd', balance: 'round-robin', backends: [be('198.18.21.2:2379'), be('198.18.22.2:2379')], usable: new Set(['198.18.21.2:2379', '198.18.22.2:2379']) },
    { id: 'v6:2379', vipAddress: '2001:db8:100::10', port: 2379, pool: 'e6', balance: 'round-robin', backends: [be('[2001:db8:21::2]:2379')], usable: new Set(['[2001:db8:21::2]:2379']) },
  ],
};

/** What `nft -j list table` prints after the write: the objects added, with handles, nft's own address notation and counter values. */
function listed(s: KernelTableState): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }];
  let handle = 1;
  for (const c of buildTableCommands(s).slice(2)) {
    const add = c.add as Record<string, Record<string, unknown>> | undefined;
    if (!add) continue;
    const [kind, body] = Object.entries(add)[0]!;
    const object = { ...body, handle: handle++ } as Record<string, unknown>;
    if (kind === 'counter') Object.assign(object, { packets: 5, bytes: 300 });
    out.push({ [kind]: JSON.parse(JSON.stringify(object).replace(/"2001:db8:21::2"/g, '"2001:0db8:0021:0000:0000:0000:0000:0002"')) });
  }
  return out;
}

function check(v: Verification, ids: string[]): void {
  assert.deepEqual([...v.verified].sort(), ids.sort(), v.problems.join('\n'));
}

describe('kernel verify: the read-back decides what is bound', () => {
  it('everything as written (addresses in another notation): every listener verified, counters read', () => {
    const v = verifyTable(listed(state), state);
    check(v, ['cp:2379', 'v6:2379']);
    assert.deepEqual(v.problems, []);
    assert.deepEqual(v.counters.get('conn/cp:2379/198.18.21.2:2379'), { packets: 5, bytes: 300 });
  });

  it('no table: nothing verified', () => {
    const v = verifyTable(undefined, state);
    check(v, []);
    assert.match(v.problems[0]!, /table inet vipd is absent/);
  });

  it('a rule of an older generation (a write that did not land): that listener is not verified', () => {
    const older = listed({ ...state, generation: 'n1.2' });
    check(verifyTable(older, state), []);
  });

  it('a rule removed by someone else: only its listener is unverified', () => {
    const l = listed(state).filter((o) => !('rule' in o && (o.rule as { comment: string; chain: string }).chain === 'output' && (o.rule as { comment: string }).comment.includes('v6:2379')));
    const v = verifyTable(l, state);
    check(v, ['cp:2379']);
    assert.match(v.problems.join('\n'), /v6:2379: output: no rule "vipd dnat v6:2379 n1.3"/);
  });

  it('a rule changed under its comment (a backend swapped in the map): unverified', () => {
    const l = JSON.parse(JSON.stringify(listed(state)).replace('"198.18.22.2",2379', '"198.18.29.9",2379')) as Array<Record<string, unknown>>;
    const v = verifyTable(l, state);
    check(v, ['v6:2379']);
    assert.match(v.problems.join('\n'), /cp:2379: prerouting: rule "vipd dnat cp:2379 n1.3" differs/);
  });

  it('a chain missing or hooked elsewhere: nothing verified', () => {
    const noChain = listed(state).filter((o) => !('chain' in o && (o.chain as { name: string }).name === 'postrouting'));
    check(verifyTable(noChain, state), []);
    const moved = listed(state).map((o) => ('chain' in o && (o.chain as { name: string }).name === 'prerouting' ? { chain: { ...(o.chain as object), prio: 0 } } : o));
    assert.match(verifyTable(moved, state).problems.join('\n'), /chain prerouting is nat\/prerouting\/0/);
  });

  it('a counter missing: its listener unverified', () => {
    const l = listed(state).filter((o) => !('counter' in o && (o.counter as { name: string }).name === 'traffic/cp:2379/198.18.22.2:2379'));
    check(verifyTable(l, state), ['v6:2379']);
  });
});
