import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { assertConfigRefused } from '../fakes/config-fixtures';

/**
 * Issue 11's peer options, speaker.gobgp.listen and speaker.gracefulRestart: what loads, and the bad
 * input refused at load with the key and its line named.
 */

/** A managed speaker with one peer; `speaker` and `peers` are spliced in as YAML lines. */
function config(o: { gobgp?: string[]; speaker?: string[]; peers?: string[]; vips?: string } = {}): string {
  return [
    'node:',
    '  name: lb1',
    'speaker:',
    '  driver: gobgp',
    '  asn: 65001',
    '  routerId: 198.18.1.2',
    '  gobgp:',
    ...(o.gobgp ?? ['    manage: true']),
    ...(o.speaker ?? []),
    '  peers:',
    ...(o.peers ?? ['    - address: 198.18.1.1', '      asn: 65000']),
    'vips:',
    `  - {name: cp, address: ${o.vips ?? '198.19.0.10'}, listeners: [{port: 2379, pool: etcd}]}`,
    'pools:',
    '  etcd: {backends: ["198.18.21.2:2379"]}',
    '',
  ].join('\n');
}

describe('speaker.peers[] options', () => {
  test('defaults: active, directly connected, no GTSM; gobgpd dials out; graceful restart off', () => {
    const c = parseConfig(config());
    const p = c.speaker.peers[0]!;
    assert.equal(p.passive, false);
    assert.equal(p.multihop, undefined);
    assert.equal(p.ttlSecurity, undefined);
    assert.equal(c.speaker.gobgp.listen, undefined);
    assert.deepEqual(c.speaker.gracefulRestart, { enabled: false, restartTime: 30_000 });
  });

  test('passive, multihop, GTSM (true is one hop), MD5, listen and graceful restart load', () => {
    const c = parseConfig(
      config({
        gobgp: ['    listen: {addresses: [198.18.1.2, "2001:db8:1:1::2"]}'],
        speaker: ['  gracefulRestart: {enabled: true, restartTime: 2m}'],
        peers: [
          '    - {address: 198.18.1.1, asn: 65000, passive: true, ttlSecurity: true, password: s3cret}',
          '    - {address: 198.18.9.1, asn: 65000, multihop: 2}',
          '    - {address: 198.18.9.5, asn: 65000, ttlSecurity: {hops: 2}}',
        ],
      }),
    );
    const [a, b, d] = c.speaker.peers;
    assert.deepEqual([a!.passive, a!.ttlSecurity, a!.password], [true, { hops: 1 }, 's3cret']);
    assert.equal(b!.multihop, 2);
    assert.deepEqual(d!.ttlSecurity, { hops: 2 });
    assert.deepEqual(c.speaker.gobgp.listen, { addresses: ['198.18.1.2', '2001:db8:1:1::2'], port: 179 });
    assert.deepEqual(c.speaker.gracefulRestart, { enabled: true, restartTime: 120_000 });
  });

  test('external gobgpd: holdTime and families stay (what vipd expects), session options are refused', () => {
    const text = config({ gobgp: ['    manage: false', '    api: 127.0.0.1:50051'], peers: ['    - {address: 198.18.1.1, asn: 65000, families: [ipv4-unicast]}'] });
    assert.deepEqual(parseConfig(text).speaker.peers[0]!.families, ['ipv4-unicast']);
  });

  // [name, text, key, line, message]
  const external = ['    manage: false', '    api: 127.0.0.1:50051'];
  const bad: Array<[string, string, string, number, RegExp]> = [
    ['invalid peer address', config({ peers: ['    - {address: 198.18.1.300, asn: 65000}'] }), 'speaker.peers[0].address', 10, /IP address/],
    ['peer listed twice (other notation)', config({ peers: ['    - {address: "2001:db8::1", asn: 65000}', '    - {address: "2001:db8:0::0:1", asn: 65000}'] }), 'speaker.peers[1].address', 11, /listed twice \(also peers\[0\]\)/],
    ['ttlSecurity with multihop', config({ peers: ['    - {address: 198.18.1.1, asn: 65000, multihop: 2, ttlSecurity: true}'] }), 'speaker.peers[0].ttlSecurity', 10, /not both/],
    ['multihop 0', config({ peers: ['    - {address: 198.18.1.1, asn: 65000, multihop: 0}'] }), 'speaker.peers[0].multihop', 10, /greater than or equal to 1/],
    ['ttlSecurity hops 255', config({ peers: ['    - {address: 198.18.1.1, asn: 65000, ttlSecurity: {hops: 255}}'] }), 'speaker.peers[0].ttlSecurity.hops', 10, /less than or equal to 254/],
    ['password with manage: false', config({ gobgp: external, peers: ['    - {address: 198.18.1.1, asn: 65000, password: x}'] }), 'speaker.peers[0].password', 11, /not vipd's to change/],
    ['passive with manage: false', config({ gobgp: external, peers: ['    - {address: 198.18.1.1, asn: 65000, passive: true}'] }), 'speaker.peers[0].passive', 11, /not vipd's to change/],
    ['multihop with manage: false', config({ gobgp: external, peers: ['    - {address: 198.18.1.1, asn: 65000, multihop: 3}'] }), 'speaker.peers[0].multihop', 11, /not vipd's to change/],
    ['ttlSecurity with manage: false', config({ gobgp: external, peers: ['    - {address: 198.18.1.1, asn: 65000, ttlSecurity: true}'] }), 'speaker.peers[0].ttlSecurity', 11, /not vipd's to change/],
    ['listen with manage: false', config({ gobgp: [...external, '    listen: {addresses: [198.18.1.2]}'] }), 'speaker.gobgp.listen', 10, /only for the managed gobgpd/],
    ['graceful restart with manage: false', config({ gobgp: external, speaker: ['  gracefulRestart: {enabled: true}'] }), 'speaker.gracefulRestart.enabled', 10, /only for the managed gobgpd/],
    ['passive without listen', config({ peers: ['    - {address: 198.18.1.1, asn: 65000, passive: true}'] }), 'speaker.peers[0].passive', 10, /speaker\.gobgp\.listen/],
    ['passive IPv6 peer, IPv4-only listen', config({ gobgp: ['    listen: {addresses: [198.18.1.2]}'], peers: ['    - {address: "2001:db8::1", asn: 65000, passive: true}'] , vips: '"2001:db8:100::10"' }), 'speaker.peers[0].passive', 10, /no IPv6 address/],
    ['listen on every address', config({ gobgp: ['    listen: {addresses: [0.0.0.0]}'] }), 'speaker.gobgp.listen.addresses[0]', 8, /every address/],
    ['listen with no address', config({ gobgp: ['    listen: {addresses: []}'] }), 'speaker.gobgp.listen.addresses', 8, /at least one/],
    ['listen port 0', config({ gobgp: ['    listen: {addresses: [198.18.1.2], port: 0}'] }), 'speaker.gobgp.listen.port', 8, /greater than or equal to 1/],
    ['the old listenPort key', config({ gobgp: ['    listenPort: 179'] }), 'speaker.gobgp.listenPort', 8, /replaced by speaker\.gobgp\.listen/],
    ['restart time above 4095 s', config({ speaker: ['  gracefulRestart: {enabled: true, restartTime: 2h}'] }), 'speaker.gracefulRestart.restartTime', 9, /./],
    ['families that leave the VIP without a session', config({ peers: ['    - {address: 198.18.1.1, asn: 65000, families: [ipv6-unicast]}'] }), 'vips[0].address', 12, /no BGP session carries ipv4-unicast/],
  ];
  for (const [name, text, path, line, message] of bad) test(`refused: ${name}`, () => assertConfigRefused(text, path, line, message));
});
