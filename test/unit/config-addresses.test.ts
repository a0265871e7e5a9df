import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { configIssue } from '../fakes/config-fixtures';

/**
 * Defect 7 of issue 9: addresses written in another notation slipped past the checks, so the proxy
 * could be pointed at itself. Every address is compared in canonical form (src/net/address.ts); these
 * tables try each notation on each check. `speaker: none`, so only the address rules are in play.
 */
function config(opts: { vip?: string; backends: string[]; nextHop?: string; extraVip?: string; port?: number }): string {
  const port = opts.port ?? 2379;
  return [
    'node: {name: lb1}',
    'speaker: {driver: none}',
    'vips:',
    `  - name: control-plane`,
    `    address: "${opts.vip ?? '198.19.0.10'}"`,
    ...(opts.nextHop === undefined ? [] : [`    nextHop: "${opts.nextHop}"`]),
    `    listeners: [{port: ${port}, pool: etcd}]`,
    ...(opts.extraVip === undefined ? [] : [`  - name: second`, `    address: "${opts.extraVip}"`, `    listeners: [{port: 6443, pool: etcd}]`]),
    'pools:',
    '  etcd:',
    '    backends:',
    ...opts.backends.map((b) => `      - "${b}"`),
    '',
  ].join('\n');
}

const V4_BACKENDS = ['198.18.21.2:2379', '198.18.22.2:2379'];
const V6_VIP = '2001:db8:100::10';
const V6_BACKENDS = ['[2001:db8:21::2]:2379', '[2001:db8:22::2]:2379'];

/** [case, yaml, key path that must be named, message that must be given] */
const refused: Array<[string, string, string, RegExp]> = [
  // A backend equal to the VIP: on a listener port it proxies to itself, on another it is still no server.
  ['backend = IPv6 VIP:port, non-canonical [2001:db8:100:0::10]', config({ vip: V6_VIP, backends: [...V6_BACKENDS, '[2001:db8:100:0::10]:2379'] }), 'pools.etcd.backends[2]', /backend \[2001:db8:100::10\]:2379 is a VIP listener of this node/],
  ['backend = IPv6 VIP:port, upper case and zeros [2001:DB8:0100::0010]', config({ vip: V6_VIP, backends: [...V6_BACKENDS, '[2001:DB8:0100::0010]:2379'] }), 'pools.etcd.backends[2]', /is a VIP listener of this node/],
  ['backend = IPv6 VIP on another port, non-canonical', config({ vip: V6_VIP, backends: [...V6_BACKENDS, '[2001:db8:100:0:0::10]:6443'] }), 'pools.etcd.backends[2]', /backend \[2001:db8:100::10\]:6443 is a VIP address/],
  ['backend = IPv6 VIP given non-canonical, backend canonical', config({ vip: '2001:db8:100:0::10', backends: [...V6_BACKENDS, '[2001:db8:100::10]:2379'] }), 'pools.etcd.backends[2]', /is a VIP listener of this node/],
  ['backend = IPv4 VIP:port, IPv4-mapped [::ffff:198.19.0.10]', config({ backends: [...V4_BACKENDS, '[::ffff:198.19.0.10]:2379'] }), 'pools.etcd.backends[2]', /backend 198\.19\.0\.10:2379 is a VIP listener of this node/],
  ['backend = IPv4 VIP, IPv4-mapped in hex [::ffff:c613:a]', config({ backends: [...V4_BACKENDS, '[::ffff:c613:a]:2379'] }), 'pools.etcd.backends[2]', /is a VIP listener of this node/],
  ['backend = IPv4 VIP on another port, IPv4-mapped', config({ backends: [...V4_BACKENDS, '[::ffff:198.19.0.10]:80'] }), 'pools.etcd.backends[2]', /backend 198\.19\.0\.10:80 is a VIP address/],
  ['backend = second VIP, another notation', config({ vip: V6_VIP, extraVip: '2001:db8:200::10', backends: [...V6_BACKENDS, '[2001:db8:200:0::10]:80'] }), 'pools.etcd.backends[2]', /is a VIP address/],
  // Loopback (or unspecified) on a listener port loops back into vipd.
  ['loopback on a listener port, IPv4-mapped [::ffff:127.0.0.1]', config({ backends: [...V4_BACKENDS, '[::ffff:127.0.0.1]:2379'] }), 'pools.etcd.backends[2]', /backend 127\.0\.0\.1:2379 is a local address on a listener port/],
  ['loopback on a listener port, [0:0:0:0:0:0:0:1]', config({ backends: [...V4_BACKENDS, '[0:0:0:0:0:0:0:1]:2379'] }), 'pools.etcd.backends[2]', /backend \[::1\]:2379 is a local address on a listener port/],
  ['loopback on a listener port, IPv4-mapped 127.1.2.3', config({ backends: [...V4_BACKENDS, '[::ffff:127.1.2.3]:2379'] }), 'pools.etcd.backends[2]', /is a local address on a listener port/],
  ['unspecified on a listener port, [0:0::0]', config({ backends: [...V4_BACKENDS, '[0:0::0]:2379'] }), 'pools.etcd.backends[2]', /backend \[::\]:2379 is a local address on a listener port/],
  ['unspecified on a listener port, IPv4-mapped [::ffff:0.0.0.0]', config({ backends: [...V4_BACKENDS, '[::ffff:0.0.0.0]:2379'] }), 'pools.etcd.backends[2]', /backend 0\.0\.0\.0:2379 is a local address on a listener port/],
  // One backend written twice.
  ['duplicate IPv6 backend in two notations', config({ vip: V6_VIP, backends: [...V6_BACKENDS, '[2001:DB8:21:0:0::2]:2379'] }), 'pools.etcd.backends[2]', /duplicate backend \[2001:db8:21::2\]:2379: same address and port as backends\[0\]/],
  ['duplicate IPv4 backend, once IPv4-mapped', config({ backends: [...V4_BACKENDS, '[::ffff:198.18.22.2]:2379'] }), 'pools.etcd.backends[2]', /duplicate backend 198\.18\.22\.2:2379: same address and port as backends\[1\]/],
  // VIPs.
  ['VIP written IPv4-mapped', config({ vip: '::ffff:198.19.0.10', backends: V4_BACKENDS }), 'vips[0].address', /IPv4-mapped IPv6 address; write the IPv4 address 198\.19\.0\.10/],
  ['VIP loopback in full notation', config({ vip: '0:0:0:0:0:0:0:1', backends: V4_BACKENDS }), 'vips[0].address', /loopback/],
  ['one VIP address twice, in two notations', config({ vip: V6_VIP, extraVip: '2001:DB8:100:0::10', backends: V6_BACKENDS }), 'vips[1].address', /VIP address 2001:db8:100::10 is already vips\[0\]/],
  ['next hop of another family than its VIP', config({ nextHop: '2001:db8::1', backends: V4_BACKENDS }), 'vips[0].nextHop', /next hop 2001:db8::1 is IPv6 but the VIP 198\.19\.0\.10 is IPv4/],
];

for (const [name, text, path, message] of refused) {
  test(`config refuses: ${name}`, () => {
    const { issue, error } = configIssue(text, path);
    assert.match(issue.message, message);
    assert.match(error.message, new RegExp(`^bad\\.yaml:${issue.line}:\\d+: ${path.replace(/[[\].]/g, '\\$&')}: `, 'm'));
  });
}

test('config normalises every notation to the canonical form it compares', () => {
  const c = parseConfig(
    config({ vip: '2001:DB8:100:0::10', nextHop: '2001:db8:0:0::1', backends: ['[2001:DB8:21:0::2]:2379', '[::ffff:198.18.22.2]:2379', '[::ffff:c612:1702]:2380'] }),
  );
  assert.equal(c.vips[0]!.address, '2001:db8:100::10');
  assert.equal(c.vips[0]!.nextHop, '2001:db8::1');
  assert.deepEqual(
    c.pools.etcd!.backends.map((b) => [b.endpoint.host, b.endpoint.key]),
    [
      ['2001:db8:21::2', '[2001:db8:21::2]:2379'],
      ['198.18.22.2', '198.18.22.2:2379'],
      ['198.18.23.2', '198.18.23.2:2380'],
    ],
  );
  const v4 = parseConfig(config({ vip: '198.19.0.10/32', backends: V4_BACKENDS }));
  assert.equal(v4.vips[0]!.address, '198.19.0.10');
});

test('config: peer addresses are canonical, so gobgpd\'s own spelling of them matches', () => {
  const text = [
    'node: {name: lb1}',
    'speaker:',
    '  driver: gobgp',
    '  asn: 65001',
    '  routerId: 198.18.1.2',
    '  gobgp: {manage: false, api: "unix:/run/gobgpd/api.sock"}',
    '  peers:',
    '    - {address: "2001:DB8:1:0::1", asn: 65000}',
    '    - {address: "::ffff:198.18.1.1", asn: 65000}',
    'vips: [{name: cp, address: 198.19.0.10, listeners: [{port: 2379, pool: etcd}]}]',
    'pools: {etcd: {backends: ["198.18.21.2:2379"]}}',
    '',
  ].join('\n');
  const c = parseConfig(text);
  assert.deepEqual(
    c.speaker.peers.map((p) => p.address),
    ['2001:db8:1::1', '198.18.1.1'],
  );
});
