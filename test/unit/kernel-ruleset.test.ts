import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildTableCommands,
  listenerSlots,
  SOURCE_HASH_SEED,
  SOURCE_HASH_SLOTS,
  weightedSlots,
  type KernelListenerState,
  type KernelTableState,
} from '../../src/dataplane/kernel/kernel-ruleset';
import { parseEndpoint } from '../../src/net/endpoint';

const be = (text: string, weight = 1) => ({ endpoint: parseEndpoint(text)!, weight });
const B1 = '198.18.21.2:2379';
const B2 = '198.18.22.2:2379';
const B3 = '198.18.23.2:2379';

function listener(over: Partial<KernelListenerState> = {}): KernelListenerState {
  return {
    id: 'control-plane:2379',
    vipAddress: '198.19.0.10',
    port: 2379,
    pool: 'etcd',
    balance: 'round-robin',
    backends: [be(B1), be(B2), be(B3)],
    usable: new Set([B1, B2, B3]),
    ...over,
  };
}

function state(listeners: KernelListenerState[], over: Partial<KernelTableState> = {}): KernelTableState {
  return { table: 'vipd', generation: 'abc.7', listeners, ...over };
}

type Rule = { chain: string; comment: string; expr: Array<Record<string, unknown>> };
const rules = (s: KernelTableState): Rule[] =>
  buildTableCommands(s)
    .map((c) => (c.add as { rule?: Rule } | undefined)?.rule)
    .filter((r): r is Rule => r !== undefined);

describe('kernel ruleset: the JSON for a pool state', () => {
  it('opens with add, delete, add of the table: one transaction replaces it whole (no window, nothing left over)', () => {
    const commands = buildTableCommands(state([listener()]));
    assert.deepEqual(commands.slice(0, 3), [
      { add: { table: { family: 'inet', name: 'vipd' } } },
      { delete: { table: { family: 'inet', name: 'vipd' } } },
      { add: { table: { family: 'inet', name: 'vipd' } } },
    ]);
    // Nothing outside its own table is ever named.
    for (const c of commands) {
      const body = Object.values(c)[0] as Record<string, { table?: string; name?: string }>;
      const object = Object.values(body)[0]!;
      assert.equal(object.table ?? object.name, 'vipd', JSON.stringify(c));
    }
  });

  it('a table name from the config is the only one used', () => {
    assert.ok(JSON.stringify(buildTableCommands(state([listener()], { table: 'lb_kernel' }))).includes('"lb_kernel"'));
    assert.ok(!JSON.stringify(buildTableCommands(state([listener()], { table: 'lb_kernel' }))).includes('"vipd"'));
  });

  it('round-robin: numgen inc over a map with one slot per usable backend, in prerouting and output', () => {
    const dnat = rules(state([listener()])).filter((r) => r.chain === 'prerouting' || r.chain === 'output');
    assert.equal(dnat.length, 2);
    for (const r of dnat) {
      assert.equal(r.comment, 'vipd dnat control-plane:2379 abc.7');
      assert.deepEqual(r.expr, [
        { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '198.19.0.10' } },
        { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 2379 } },
        {
          dnat: {
            family: 'ip',
            addr: {
              map: {
                key: { numgen: { mode: 'inc', mod: 3, offset: 0 } },
                data: { set: [[0, { concat: ['198.18.21.2', 2379] }], [1, { concat: ['198.18.22.2', 2379] }], [2, { concat: ['198.18.23.2', 2379] }]] },
              },
            },
          },
        },
      ]);
    }
  });

  it('a backend that is down or drained leaves the map; its counters and source rewrite stay (its flows keep being translated)', () => {
    const s = state([listener({ usable: new Set([B1, B3]) })]);
    const pre = rules(s).find((r) => r.chain === 'prerouting')!;
    assert.ok(!JSON.stringify(pre.expr).includes('198.18.22.2'));
    assert.equal(rules(s).filter((r) => r.chain === 'postrouting').length, 3);
    assert.equal(rules(s).filter((r) => r.chain === 'forward').length, 3);
  });

  it('no usable backend: the rule stays without a rewrite (the node answers with a reset), and a closing listener has none either', () => {
    for (const l of [listener({ usable: new Set() }), listener({ closing: true })]) {
      const pre = rules(state([l])).find((r) => r.chain === 'prerouting')!;
      assert.equal(pre.expr.length, 2);
      assert.ok(!JSON.stringify(pre.expr).includes('dnat'));
    }
  });

  it('weights go through the map: smooth weighted order over gcd-reduced shares', () => {
    const keys = weightedSlots([be(B1, 50), be(B2, 10), be(B3, 10)]).map((e) => e.key);
    assert.deepEqual(keys, [B1, B1, B2, B1, B3, B1, B1]);
    assert.equal(weightedSlots([be(B1, 1000), be(B2, 1)]).length <= 512, true, 'large weight sums are scaled to MAX_WEIGHTED_SLOTS');
  });

  it('source-hash: jhash of the source address, fixed seed, Maglev map of 1021 slots built in key order', () => {
    const l = listener({ balance: 'source-hash' });
    const dnat = rules(state([l])).find((r) => r.chain === 'prerouting')!.expr[2] as { dnat: { addr: { map: { key: unknown; data: { set: unknown[] } } } } };
    assert.deepEqual(dnat.dnat.addr.map.key, { jhash: { mod: SOURCE_HASH_SLOTS, seed: SOURCE_HASH_SEED, expr: { payload: { protocol: 'ip', field: 'saddr' } } } });
    assert.equal(dnat.dnat.addr.map.data.set.length, SOURCE_HASH_SLOTS);
    // Another balancer listing the backends in another order builds the same map.
    const reordered = listenerSlots({ ...l, backends: [be(B3), be(B1), be(B2)] }).map((e) => e.key);
    assert.deepEqual(reordered, listenerSlots(l).map((e) => e.key));
  });

  it('source-hash: when one of three backends leaves, its own slots move and few others (printed)', () => {
    const all = listenerSlots(listener({ balance: 'source-hash' })).map((e) => e.key);
    const without = listenerSlots(listener({ balance: 'source-hash', usable: new Set([B1, B3]) })).map((e) => e.key);
    const own = all.filter((k) => k === B2).length;
    const moved = all.filter((k, i) => k !== without[i]).length;
    const others = moved - own;
    console.log(`kernel source-hash: backend leaving 1 of 3: ${moved}/${SOURCE_HASH_SLOTS} slots move (${((100 * moved) / SOURCE_HASH_SLOTS).toFixed(1)} % of clients), of which ${others} belonged to the backends that stayed`);
    assert.ok(others / SOURCE_HASH_SLOTS < 0.1, `${others} slots of staying backends moved`);
    const back = listenerSlots(listener({ balance: 'source-hash' })).map((e) => e.key);
    assert.deepEqual(back, all, 'when it comes back, the map is the one before');
  });

  it('random: numgen random over the same weighted map', () => {
    const pre = rules(state([listener({ balance: 'random' })])).find((r) => r.chain === 'prerouting')!;
    assert.deepEqual((pre.expr[2] as { dnat: { addr: { map: { key: unknown } } } }).dnat.addr.map.key, { numgen: { mode: 'random', mod: 3, offset: 0 } });
  });

  it('IPv6 VIP: ip6 matches, dnat ip6, ct ip6 addresses; SNAT to a configured address when given', () => {
    const l = listener({ id: 'v6:2379', vipAddress: '2001:db8:100::10', backends: [be('[2001:db8:21::2]:2379')], usable: new Set(['[2001:db8:21::2]:2379']) });
    const rs = rules(state([l], { snatIpv6: '2001:db8:1:1::2' }));
    const text = JSON.stringify(rs);
    assert.ok(text.includes('"protocol":"ip6"') && text.includes('"family":"ip6"') && text.includes('"ip6 daddr"'));
    const post = rs.find((r) => r.chain === 'postrouting')!;
    assert.deepEqual(post.expr.at(-1), { snat: { family: 'ip6', addr: '2001:db8:1:1::2' } });
  });

  it('SNAT: masquerade by default, counted per backend in postrouting (connections) and forward (packets, bytes)', () => {
    const rs = rules(state([listener()]));
    const post = rs.filter((r) => r.chain === 'postrouting');
    assert.deepEqual(post[0]!.expr.slice(-2), [{ counter: 'conn/control-plane:2379/198.18.21.2:2379' }, { masquerade: null }]);
    const fwd = rs.filter((r) => r.chain === 'forward');
    assert.deepEqual(fwd[0]!.expr.at(-1), { counter: 'traffic/control-plane:2379/198.18.21.2:2379' });
    assert.deepEqual(post[0]!.expr.slice(0, 5), [
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { match: { op: '==', left: { ct: { key: 'ip daddr', dir: 'original' } }, right: '198.19.0.10' } },
      { match: { op: '==', left: { ct: { key: 'proto-dst', dir: 'original' } }, right: 2379 } },
      { match: { op: '==', left: { ct: { key: 'ip saddr', dir: 'reply' } }, right: '198.18.21.2' } },
      { match: { op: '==', left: { ct: { key: 'proto-src', dir: 'reply' } }, right: 2379 } },
    ]);
  });
});
