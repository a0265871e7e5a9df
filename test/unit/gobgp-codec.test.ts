import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VipdError } from '../../src/lib/errors';
import type { ApiAny, ApiPath } from '../../src/speaker/gobgp/api-types';
import {
  canonicalPrefix,
  decodeDestination,
  encodeAddPath,
  encodeDeletePath,
  formatCommunity,
  parseCommunity,
  routeFromAdvertisement,
  sameRoute,
  type RibRoute,
} from '../../src/speaker/gobgp/codec';
import { gobgpRoot } from '../../src/speaker/gobgp/proto';
import type { Advertisement } from '../../src/speaker/speaker';

/** Reads an Any the way gobgpd would, to check the wire form independently of the codec's decoder. */
function unpackForTest(any: ApiAny): { type: string; fields: Record<string, unknown> } {
  const type = any.type_url.replace('type.googleapis.com/', '');
  const t = gobgpRoot().lookupType(type);
  return { type, fields: t.toObject(t.decode(any.value), { enums: String, defaults: true }) };
}

function asRibPath(path: ApiPath, neighbor = '<nil>'): ApiPath {
  return { ...path, neighbor_ip: neighbor, best: true };
}

function roundTrip(route: RibRoute): RibRoute {
  const entries = decodeDestination({ prefix: route.prefix, paths: [asRibPath(encodeAddPath(route))] });
  assert.equal(entries.length, 1);
  assert.equal(entries[0]!.local, true);
  return entries[0]!.route;
}

function assertCodecError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CODEC' && message.test(err.message));
}

describe('codec: Advertisement to RibRoute', () => {
  test('normalises prefix, communities and an unspecified next hop', () => {
    const route = routeFromAdvertisement({
      prefix: '2001:DB8:100:0:0::10/128',
      nextHop: '::',
      communities: ['65535:0', '65000:100', '65000:100'],
      med: 0,
    });
    assert.deepEqual(route, {
      prefix: '2001:db8:100::10/128',
      communities: ['65000:100', '65535:0'],
      largeCommunities: [],
      med: 0,
      asPath: [],
      origin: 'igp',
    });
  });

  test('large communities (RFC 8092) are sorted numerically, deduplicated; an AS path is kept in order', () => {
    const route = routeFromAdvertisement({ prefix: '198.19.0.10/32', communities: [], largeCommunities: ['65000:2:1', '4294967295:0:0', '65000:10:0', '65000:2:1'], asPath: [65001, 65001] });
    assert.deepEqual(route.largeCommunities, ['65000:2:1', '65000:10:0', '4294967295:0:0']);
    assert.deepEqual(route.asPath, [65001, 65001]);
  });

  for (const bad of ['65000:1', '4294967296:0:0', '1:2:3:4', 'a:b:c']) {
    test(`refuses large community ${bad} with VIPD_ERR_CODEC`, () => {
      assertCodecError(() => routeFromAdvertisement({ prefix: '198.19.0.10/32', communities: [], largeCommunities: [bad] }), /large community/);
    });
  }

  test('keeps an explicit next hop in canonical form', () => {
    assert.equal(routeFromAdvertisement({ prefix: '2001:db8:100::10/128', nextHop: '2001:DB8:FF::1', communities: [] }).nextHop, '2001:db8:ff::1');
    assert.equal(routeFromAdvertisement({ prefix: '198.19.0.10/32', nextHop: '0.0.0.0', communities: [] }).nextHop, undefined);
  });

  const bad: ReadonlyArray<{ name: string; ad: Advertisement; message: RegExp }> = [
    { name: 'no length', ad: { prefix: '198.19.0.10', communities: [] }, message: /expected address\/length/ },
    { name: 'not an address', ad: { prefix: 'vip.example/32', communities: [] }, message: /not an IPv4 or IPv6/ },
    { name: 'IPv4 length 33', ad: { prefix: '198.19.0.10/33', communities: [] }, message: /length above 32/ },
    { name: 'IPv6 length 129', ad: { prefix: '2001:db8::10/129', communities: [] }, message: /length above 128/ },
    { name: 'host bits', ad: { prefix: '198.19.0.1/24', communities: [] }, message: /host bits set \(network is 198\.19\.0\.0\/24\)/ },
    { name: 'IPv4-mapped', ad: { prefix: '::ffff:198.19.0.10/128', communities: [] }, message: /IPv4-mapped/ },
    { name: 'zone id', ad: { prefix: 'fe80::1%eth0/128', communities: [] }, message: /not an IPv4 or IPv6/ },
    { name: 'next hop of the other family', ad: { prefix: '198.19.0.10/32', nextHop: '2001:db8::1', communities: [] }, message: /not an ipv4 address/ },
    { name: 'next hop not an address', ad: { prefix: '2001:db8::10/128', nextHop: 'router', communities: [] }, message: /not an ipv6 address/ },
    { name: 'community above 65535', ad: { prefix: '198.19.0.10/32', communities: ['65536:1'] }, message: /"65536:1"/ },
    { name: 'community with three parts', ad: { prefix: '198.19.0.10/32', communities: ['1:2:3'] }, message: /"1:2:3"/ },
    { name: 'community by name', ad: { prefix: '198.19.0.10/32', communities: ['no-export'] }, message: /"no-export"/ },
    { name: 'negative med', ad: { prefix: '198.19.0.10/32', communities: [], med: -1 }, message: /med -1/ },
    { name: 'med above uint32', ad: { prefix: '198.19.0.10/32', communities: [], med: 2 ** 32 }, message: /med 4294967296/ },
    { name: 'fractional local-pref', ad: { prefix: '198.19.0.10/32', communities: [], localPref: 1.5 }, message: /localPref 1\.5/ },
    { name: 'NaN local-pref', ad: { prefix: '198.19.0.10/32', communities: [], localPref: NaN }, message: /localPref NaN/ },
  ];
  for (const c of bad) {
    test(`rejects ${c.name} with VIPD_ERR_CODEC`, () => assertCodecError(() => routeFromAdvertisement(c.ad), c.message));
  }
});

describe('codec: communities', () => {
  const cases: ReadonlyArray<[string, number]> = [
    ['0:0', 0],
    ['65000:100', 4259840100],
    ['65535:0', 4294901760],
    ['65535:65535', 4294967295],
  ];
  for (const [text, value] of cases) {
    test(`${text} <-> ${value}`, () => {
      assert.equal(parseCommunity(text), value);
      assert.equal(formatCommunity(value), text);
    });
  }
  test('a value outside uint32 is rejected', () => assertCodecError(() => formatCommunity(2 ** 32), /not a uint32/));
});

describe('codec: paths', () => {
  const v4: RibRoute = routeFromAdvertisement({ prefix: '198.19.0.10/32', communities: ['65000:100', '65535:0'], med: 10, localPref: 200 });
  const v6: RibRoute = routeFromAdvertisement({ prefix: '2001:db8:100::10/128', nextHop: '2001:db8:ff::1', communities: ['65000:200'], med: 20 });

  test('IPv4 unicast: IPAddressPrefix NLRI, NEXT_HOP attribute, attributes in upstream encoding', () => {
    const path = encodeAddPath(v4);
    assert.deepEqual(path.family, { afi: 'AFI_IP', safi: 'SAFI_UNICAST' });
    assert.deepEqual(unpackForTest(path.nlri), { type: 'apipb.IPAddressPrefix', fields: { prefix_len: 32, prefix: '198.19.0.10' } });
    assert.deepEqual(path.pattrs.map(unpackForTest), [
      { type: 'apipb.OriginAttribute', fields: { origin: 0 } },
      { type: 'apipb.NextHopAttribute', fields: { next_hop: '0.0.0.0' } },
      { type: 'apipb.MultiExitDiscAttribute', fields: { med: 10 } },
      { type: 'apipb.LocalPrefAttribute', fields: { local_pref: 200 } },
      { type: 'apipb.CommunitiesAttribute', fields: { communities: [4259840100, 4294901760] } },
    ]);
  });

  test('IPv6 unicast: next hop and NLRI inside MP_REACH_NLRI, no NEXT_HOP', () => {
    const path = encodeAddPath(v6);
    assert.deepEqual(path.family, { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' });
    const attrs = path.pattrs.map(unpackForTest);
    assert.deepEqual(attrs.map((a) => a.type), ['apipb.OriginAttribute', 'apipb.MpReachNLRIAttribute', 'apipb.MultiExitDiscAttribute', 'apipb.CommunitiesAttribute']);
    const mpReach = attrs[1]!.fields as { family: unknown; next_hops: string[]; nlris: ApiAny[] };
    assert.deepEqual(mpReach.family, { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' });
    assert.deepEqual(mpReach.next_hops, ['2001:db8:ff::1']);
    assert.deepEqual(mpReach.nlris.map(unpackForTest), [{ type: 'apipb.IPAddressPrefix', fields: { prefix_len: 128, prefix: '2001:db8:100::10' } }]);
  });

  test('round trip through the decoder gives the same route', () => {
    for (const route of [v4, v6, routeFromAdvertisement({ prefix: '198.19.0.0/24', communities: [] })]) {
      const back = roundTrip(route);
      assert.deepEqual(back, route);
      assert.ok(sameRoute(back, route));
    }
  });

  test('large communities encode as LargeCommunitiesAttribute and survive the round trip', () => {
    const route = routeFromAdvertisement({ prefix: '198.19.0.10/32', communities: ['65535:0'], largeCommunities: ['65000:1:2', '4200000000:7:4294967295'], localPref: 0, asPath: [65001, 65001, 65001] });
    const attrs = encodeAddPath(route).pattrs.map(unpackForTest);
    assert.deepEqual(attrs.find((a) => a.type === 'apipb.LargeCommunitiesAttribute')!.fields, {
      communities: [
        { global_admin: 65000, local_data1: 1, local_data2: 2 },
        { global_admin: 4200000000, local_data1: 7, local_data2: 4294967295 },
      ],
    });
    assert.deepEqual(roundTrip(route), route);
  });

  test('an AS path and origin survive the round trip', () => {
    const route: RibRoute = { ...v4, asPath: [65010, 65020], origin: 'egp' };
    assert.deepEqual(roundTrip(route), route);
  });

  test('sameRoute notices every attribute', () => {
    const variants: RibRoute[] = [
      { ...v4, prefix: '198.19.0.11/32' },
      { ...v4, nextHop: '198.18.0.1' },
      { ...v4, communities: ['65000:100'] },
      { ...v4, largeCommunities: ['65000:1:1'] },
      { ...v4, med: 11 },
      { ...v4, localPref: undefined },
      { ...v4, asPath: [65010] },
      { ...v4, origin: 'incomplete' },
    ];
    for (const v of variants) assert.equal(sameRoute(v4, v), false, JSON.stringify(v));
  });

  test('deletion paths carry the next hop gobgpd insists on', () => {
    const del4 = encodeDeletePath('198.19.0.10/32');
    assert.deepEqual(del4.pattrs.map(unpackForTest), [{ type: 'apipb.NextHopAttribute', fields: { next_hop: '0.0.0.0' } }]);
    const del6 = encodeDeletePath('2001:db8:100::10/128');
    assert.equal(unpackForTest(del6.pattrs[0]!).type, 'apipb.MpReachNLRIAttribute');
    assert.deepEqual(del6.family, { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' });
    assertCodecError(() => encodeDeletePath('198.19.0.10'), /address\/length/);
  });

  test('paths learned from a peer are not local; unknown attribute types are skipped', () => {
    const path = encodeAddPath(v4);
    const unknown: ApiAny = { type_url: 'type.googleapis.com/apipb.OriginatorIdAttribute', value: Buffer.from([0x0a, 0x03, 0x08, 0x01, 0x10]) };
    const [entry] = decodeDestination({ prefix: v4.prefix, paths: [asRibPath({ ...path, pattrs: [...path.pattrs, unknown] }, '198.18.0.2')] });
    assert.equal(entry!.local, false);
    assert.equal(entry!.neighbor, '198.18.0.2');
    assert.deepEqual(entry!.route, v4);
  });

  test('corrupt attribute bytes and foreign NLRI are VIPD_ERR_CODEC', () => {
    const path = encodeAddPath(v4);
    const corrupt: ApiAny = { type_url: 'type.googleapis.com/apipb.CommunitiesAttribute', value: Buffer.from([0x0a, 0xff]) };
    assertCodecError(() => decodeDestination({ prefix: v4.prefix, paths: [asRibPath({ ...path, pattrs: [corrupt] })] }), /CommunitiesAttribute: cannot decode/);
    const evpn: ApiAny = { type_url: 'type.googleapis.com/apipb.EVPNIPPrefixRoute', value: Buffer.alloc(0) };
    assertCodecError(() => decodeDestination({ prefix: 'x', paths: [asRibPath({ ...path, nlri: evpn })] }), /not an IP prefix/);
  });

  test('canonicalPrefix', () => {
    assert.equal(canonicalPrefix('2001:0db8:0100:0000:0000:0000:0000:0010/128'), '2001:db8:100::10/128');
    assert.equal(canonicalPrefix('198.19.0.10/32'), '198.19.0.10/32');
  });
});
