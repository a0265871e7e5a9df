import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { diffConfig, isEmpty, summarize, type ConfigChanges } from '../../src/config/diff';

const base = `node:
  name: lb1
admin:
  listen: 127.0.0.1:9180
speaker:
  driver: gobgp
  asn: 65001
  routerId: 198.18.1.2
  gobgp:
    manage: true
  peers:
    - address: 198.18.1.1
      asn: 65000
vips:
  - name: cp
    address: 198.19.0.10
    communities: ["65000:100"]
    listeners:
      - port: 2379
        pool: etcd
pools:
  etcd:
    backends: ["198.18.21.2:2379", "198.18.22.2:2379"]
    check:
      interval: 200ms
      timeout: 150ms
`;

function edit(from: string, to: string): string {
  assert.ok(base.includes(from), `test anchor not in base config: ${from}`);
  return base.replace(from, to);
}

const before = parseConfig(base, 'base.yaml');

type Expect = (c: ConfigChanges) => void;
const restart = (key: string): Expect => (c) => assert.deepEqual(c.restartNeeded.map((r) => r.key), [key]);
const onlyInPlace: Expect = (c) => assert.deepEqual(c.restartNeeded, []);

/** Each row: a change to the file, and what the diff must say about it. */
const cases: Array<{ name: string; after: string; expect: Expect[] }> = [
  { name: 'identical file', after: base, expect: [(c) => (assert.equal(c.unchanged, true), assert.equal(isEmpty(c), true)), (c) => assert.equal(summarize(c), 'nothing changed')] },
  { name: 'whitespace and comments only', after: `# a comment\n${base}\n\n`, expect: [(c) => assert.equal(isEmpty(c), true)] },
  { name: 'node.name', after: edit('name: lb1', 'name: lb2'), expect: [restart('node.name')] },
  { name: 'speaker.driver', after: edit('driver: gobgp\n  asn: 65001\n  routerId: 198.18.1.2\n  gobgp:\n    manage: true\n  peers:\n    - address: 198.18.1.1\n      asn: 65000', 'driver: none'), expect: [(c) => assert.ok(c.restartNeeded.some((r) => r.key === 'speaker.driver'))] },
  { name: 'speaker.asn', after: edit('asn: 65001', 'asn: 65002'), expect: [restart('speaker.asn')] },
  { name: 'speaker.routerId', after: edit('routerId: 198.18.1.2', 'routerId: 198.18.1.3'), expect: [restart('speaker.routerId')] },
  { name: 'speaker.gobgp.binary', after: edit('manage: true', 'manage: true\n    binary: /usr/local/bin/gobgpd'), expect: [restart('speaker.gobgp.binary')] },
  { name: 'stateDir', after: `stateDir: /tmp/vipd\n${base}`, expect: [restart('stateDir')] },
  { name: 'admin.listen', after: edit('listen: 127.0.0.1:9180', 'listen: 127.0.0.1:9181'), expect: [restart('admin.listen')] },
  { name: 'proxy.workers', after: `proxy:\n  workers: 2\n${base}`, expect: [restart('proxy.workers')] },
  { name: 'a VIP keeps its name but moves', after: edit('address: 198.19.0.10', 'address: 198.19.0.11'), expect: [restart('vips[0].address')] },
  {
    name: 'communities only',
    after: edit('communities: ["65000:100"]', 'communities: ["65000:200"]'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.vips.changed, [{ name: 'cp', keys: ['communities'], listeners: { added: [], removed: [], changed: [] }, attributesOnly: true }])],
  },
  {
    name: 'med added',
    after: edit('communities: ["65000:100"]', 'communities: ["65000:100"]\n    med: 10'),
    expect: [onlyInPlace, (c) => assert.equal(c.vips.changed[0]?.attributesOnly, true), (c) => assert.deepEqual(c.vips.changed[0]?.keys, ['med'])],
  },
  {
    name: 'a listener added',
    after: edit('      - port: 2379\n        pool: etcd', '      - port: 2379\n        pool: etcd\n      - port: 2380\n        pool: etcd'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.vips.changed[0]?.listeners, { added: ['cp:2380'], removed: [], changed: [] }), (c) => assert.equal(c.vips.changed[0]?.attributesOnly, false)],
  },
  {
    name: 'a VIP added and its pool added',
    after: `${base}  api:\n    backends: ["198.18.31.2:6443"]\n`.replace('pools:', '  - name: api\n    address: 198.19.0.20\n    listeners:\n      - port: 6443\n        pool: api\npools:'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.vips.added, ['api']), (c) => assert.deepEqual(c.pools.added, ['api']), (c) => assert.deepEqual(c.vips.changed, [])],
  },
  {
    name: 'a backend added',
    after: edit('"198.18.22.2:2379"]', '"198.18.22.2:2379", "198.18.23.2:2379"]'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.pools.changed, [{ name: 'etcd', backends: { added: ['198.18.23.2:2379'], removed: [], changed: [] }, checkChanged: false, settings: [] }])],
  },
  {
    name: 'a backend removed',
    after: edit('["198.18.21.2:2379", "198.18.22.2:2379"]', '["198.18.21.2:2379"]'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.pools.changed[0]?.backends, { added: [], removed: ['198.18.22.2:2379'], changed: [] })],
  },
  {
    name: 'a backend written another way is the same backend',
    after: edit('"198.18.22.2:2379"]', '{ address: "198.18.22.2:2379", weight: 1 }]'),
    expect: [(c) => assert.equal(isEmpty(c), true)],
  },
  {
    name: 'a backend weight',
    after: edit('"198.18.22.2:2379"]', '{ address: "198.18.22.2:2379", weight: 5 }]'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.pools.changed[0]?.backends.changed, ['198.18.22.2:2379'])],
  },
  {
    name: 'check settings',
    after: edit('interval: 200ms', 'interval: 300ms'),
    expect: [onlyInPlace, (c) => assert.equal(c.pools.changed[0]?.checkChanged, true), (c) => assert.deepEqual(c.pools.changed[0]?.settings, [])],
  },
  {
    name: 'pool settings',
    after: edit('  etcd:\n', '  etcd:\n    balance: least-conn\n    closeOnBackendDown: true\n'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.pools.changed[0]?.settings, ['balance', 'closeOnBackendDown'])],
  },
  {
    name: 'a peer added',
    after: edit('      asn: 65000', '      asn: 65000\n    - address: 198.18.2.1\n      asn: 65000'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.peers, { added: ['198.18.2.1'], removed: [], changed: [] })],
  },
  {
    name: 'a peer changed',
    after: edit('      asn: 65000', '      asn: 65000\n      holdTime: 9s'),
    expect: [onlyInPlace, (c) => assert.deepEqual(c.peers, { added: [], removed: [], changed: ['198.18.1.1'] })],
  },
  {
    name: 'announce.holdDown is a setting',
    after: `announce:\n  holdDown: 5s\n${base}`,
    expect: [onlyInPlace, (c) => assert.deepEqual(c.settings, ['announce.holdDown'])],
  },
  {
    name: 'several restart keys are all named',
    after: edit('name: lb1', 'name: lb2').replace('asn: 65001', 'asn: 65002'),
    expect: [(c) => assert.deepEqual(c.restartNeeded.map((r) => r.key).sort(), ['node.name', 'speaker.asn'])],
  },
];

for (const { name, after, expect } of cases) {
  test(`diffConfig: ${name}`, () => {
    const changes = diffConfig(before, parseConfig(after, 'after.yaml'));
    for (const check of expect) check(changes);
  });
}

test('diffConfig: a restart key carries its path for the line lookup, and a reason', () => {
  const [r] = diffConfig(before, parseConfig(edit('asn: 65001', 'asn: 65002'), 'a.yaml')).restartNeeded;
  assert.deepEqual(r?.path, ['speaker', 'asn']);
  assert.match(r!.reason, /session/);
});

test('summarize names what changed', () => {
  const after = edit('"198.18.22.2:2379"]', '"198.18.23.2:2379"]').replace('communities: ["65000:100"]', 'communities: []');
  assert.equal(summarize(diffConfig(before, parseConfig(after, 'a.yaml'))), 'vips ~cp(communities); pools ~etcd(+198.18.23.2:2379,-198.18.22.2:2379)');
});
