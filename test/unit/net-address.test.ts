import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canonicalAddress, isIpv4Mapped, isLoopbackAddress, isUnspecifiedAddress, sameAddress } from '../../src/net/address';
import { endpoint, parseEndpoint } from '../../src/net/endpoint';

/** [written, canonical] */
const canonical: Array<[string, string | undefined]> = [
  ['198.19.0.10', '198.19.0.10'],
  ['2001:db8:100::10', '2001:db8:100::10'],
  ['2001:db8:100:0::10', '2001:db8:100::10'],
  ['2001:DB8:0100:0000:0000:0000:0000:0010', '2001:db8:100::10'],
  ['::ffff:198.19.0.10', '198.19.0.10'],
  ['::FFFF:198.19.0.10', '198.19.0.10'],
  ['::ffff:c613:a', '198.19.0.10'],
  ['0:0:0:0:0:ffff:c613:000a', '198.19.0.10'],
  ['::ffff:127.0.0.1', '127.0.0.1'],
  ['0:0:0:0:0:0:0:1', '::1'],
  ['0::0', '::'],
  // IPv4-compatible (deprecated, ::/96) is not IPv4-mapped: it stays IPv6.
  ['::198.19.0.10', '::c613:a'],
  ['fe80::1%eth0', 'fe80::1%eth0'],
  ['FE80:0::1%eth0', 'fe80::1%eth0'],
  ['198.019.0.10', undefined],
  ['198.19.0.10/32', undefined],
  ['2001:db8::g', undefined],
  ['lb1.example', undefined],
  ['', undefined],
];

for (const [written, expected] of canonical) {
  test(`canonicalAddress(${JSON.stringify(written)}) = ${String(expected)}`, () => {
    assert.equal(canonicalAddress(written), expected);
  });
}

test('sameAddress compares canonical forms; IPv4-mapped compares as IPv4', () => {
  assert.ok(sameAddress('2001:db8:100:0::10', '2001:db8:100::10'));
  assert.ok(sameAddress('::ffff:198.19.0.10', '198.19.0.10'));
  assert.ok(sameAddress('0:0:0:0:0:0:0:1', '::1'));
  assert.ok(!sameAddress('::1', '127.0.0.1'), 'IPv6 loopback is not IPv4 loopback');
  assert.ok(!sameAddress('::198.19.0.10', '198.19.0.10'), 'IPv4-compatible is not IPv4-mapped');
  assert.ok(!sameAddress('not-an-ip', 'not-an-ip'), 'text that is no address never matches');
});

test('loopback, unspecified and mapped, in every notation', () => {
  for (const a of ['127.0.0.1', '127.9.9.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f00:1']) assert.ok(isLoopbackAddress(a), a);
  for (const a of ['198.19.0.10', '::2', '::ffff:198.19.0.10', 'x']) assert.ok(!isLoopbackAddress(a), a);
  for (const a of ['0.0.0.0', '::', '0:0:0:0:0:0:0:0', '::ffff:0.0.0.0']) assert.ok(isUnspecifiedAddress(a), a);
  assert.ok(isIpv4Mapped('::ffff:198.19.0.10') && isIpv4Mapped('::ffff:c613:a'));
  assert.ok(!isIpv4Mapped('198.19.0.10') && !isIpv4Mapped('::198.19.0.10') && !isIpv4Mapped('2001:db8::1'));
});

test('endpoint keys are canonical, so drains and status find a backend however it is written', () => {
  assert.deepEqual(parseEndpoint('[2001:DB8:21:0::2]:2379'), { host: '2001:db8:21::2', port: 2379, key: '[2001:db8:21::2]:2379' });
  assert.deepEqual(parseEndpoint('[::ffff:198.18.21.2]:2379'), { host: '198.18.21.2', port: 2379, key: '198.18.21.2:2379' });
  assert.deepEqual(parseEndpoint('198.18.21.2:2379'), endpoint('198.18.21.2', 2379));
  assert.equal(endpoint('0:0:0:0:0:0:0:1', 6443).key, '[::1]:6443');
  assert.equal(parseEndpoint('[198.18.21.2:2379'), undefined);
  assert.equal(parseEndpoint('198.18.21.2:0'), undefined);
});
