import assert from 'node:assert/strict';
import type os from 'node:os';
import { afterEach, describe, test } from 'node:test';
import { renderStatus } from '../../src/cli/status-table';
import { parseConfig } from '../../src/config/config';
import type { DaemonStatus } from '../../src/control/control';
import { sessionFamilies } from '../../src/config/schema';
import { ConfigError, VipdError } from '../../src/lib/errors';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { offeredFamilies, encodeMultiProtocolCapability } from '../../src/speaker/gobgp/codec';
import { createGobgpSpeaker } from '../../src/speaker/gobgp/gobgp-speaker';
import { renderGobgpdConfig, type GobgpdNeighbor } from '../../src/speaker/gobgp/gobgpd-config';
import { defaultIpv6NextHop } from '../../src/speaker/gobgp/next-hop';
import { peerAnnounceStates } from '../../src/speaker/peer-announce';
import type { Advertisement, PeerStatus, Speaker } from '../../src/speaker/speaker';
import { FakeClock, flushMicrotasks } from '../fakes/fake-clock';
import { FakeGobgpClient } from '../fakes/gobgp-fake-client';

/**
 * Defect 6 of issue 9 (T33): a VIP reaches a peer only over a session that carries its family; managed
 * gobgpd gets MP-BGP with a next hop a router installs; status is per VIP and per peer, from the
 * adj-RIB-out, and never says announced for a path the peer was not sent.
 */

function cfg(opts: { vip: string; peers: string; manage?: boolean }): string {
  return `node: {name: lb1}
speaker:
  driver: gobgp
  asn: 65001
  routerId: 198.18.1.2
  gobgp:
    manage: ${opts.manage ?? true}
${opts.manage === false ? '    api: unix:/run/gobgpd.sock\n' : ''}  peers:
${opts.peers}vips:
  - name: cp
    address: ${opts.vip}
    listeners: [{port: 2379, pool: etcd}]
pools:
  etcd: {backends: ["198.18.21.2:2379"]}
`;
}

const V4_PEER = '    - {address: 198.18.1.1, asn: 65000}\n';
const V6_PEER = '    - {address: "2001:db8:1:1::1", asn: 65000}\n';

function issues(text: string): ConfigError['issues'] {
  try {
    parseConfig(text, 'c.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.issues;
  }
  assert.fail('config was accepted');
}

describe('families at load: a VIP no session carries is refused', () => {
  test('managed: an IPv6 VIP behind only an IPv4 peer is carried by MP-BGP on that session', () => {
    const c = parseConfig(cfg({ vip: '2001:db8:100::10', peers: V4_PEER }), 'c.yaml');
    assert.deepEqual(sessionFamilies(c.speaker, ['2001:db8:100::10']), [['ipv4-unicast', 'ipv6-unicast']]);
  });

  test('managed: the reverse, an IPv4 VIP behind only an IPv6 peer', () => {
    const c = parseConfig(cfg({ vip: '198.19.0.10', peers: V6_PEER }), 'c.yaml');
    assert.deepEqual(sessionFamilies(c.speaker, ['198.19.0.10']), [['ipv6-unicast', 'ipv4-unicast']]);
  });

  test('managed, dual-stack peers: each session keeps its own family (no duplicate paths)', () => {
    const c = parseConfig(cfg({ vip: '2001:db8:100::10', peers: V4_PEER + V6_PEER }), 'c.yaml');
    assert.deepEqual(sessionFamilies(c.speaker, ['198.19.0.10', '2001:db8:100::10']), [['ipv4-unicast'], ['ipv6-unicast']]);
  });

  test('families restricted by hand: the IPv6 VIP is refused at its address, naming the VIP and every peer', () => {
    const text = cfg({ vip: '2001:db8:100::10', peers: '    - {address: 198.18.1.1, asn: 65000, families: [ipv4-unicast]}\n' });
    const [issue] = issues(text);
    assert.equal(issue!.path, 'vips[0].address');
    assert.equal(issue!.line, 12);
    assert.match(issue!.message, /VIP "cp" \(2001:db8:100::10\) is ipv6-unicast and no BGP session carries ipv6-unicast: peers 198\.18\.1\.1 \(ipv4-unicast\)/);
  });

  test('external gobgpd: sessions carry their own family unless declared, so an IPv6 VIP behind an IPv4 peer is refused', () => {
    assert.equal(issues(cfg({ vip: '2001:db8:100::10', peers: V4_PEER, manage: false }))[0]!.path, 'vips[0].address');
    const declared = '    - {address: 198.18.1.1, asn: 65000, families: [ipv4-unicast, ipv6-unicast]}\n';
    assert.doesNotThrow(() => parseConfig(cfg({ vip: '2001:db8:100::10', peers: declared, manage: false }), 'c.yaml'));
  });

  const badHops: Array<[string, string, string, RegExp]> = [
    ['IPv4-mapped next hop (gobgpd default, never installed by FRR)', '    - {address: 198.18.1.1, asn: 65000, nextHopIpv6: "::ffff:198.18.1.2"}\n', 'speaker.peers[0].nextHopIpv6', /IPv4-mapped: FRR marks such a next hop best but never installs it/],
    ['link-local next hop', '    - {address: 198.18.1.1, asn: 65000, nextHopIpv6: "fe80::2"}\n', 'speaker.peers[0].nextHopIpv6', /not a global unicast address/],
    ['nextHopIpv6 on an IPv6 session', '    - {address: "2001:db8:1:1::1", asn: 65000, nextHopIpv6: "2001:db8:1:1::2"}\n', 'speaker.peers[0].nextHopIpv6', /only for an IPv4 session/],
    ['nextHopIpv4 on an IPv4 session', '    - {address: 198.18.1.1, asn: 65000, nextHopIpv4: 198.18.1.2}\n', 'speaker.peers[0].nextHopIpv4', /only for an IPv6 session/],
    ['nextHopIpv4 not IPv4', '    - {address: "2001:db8:1:1::1", asn: 65000, nextHopIpv4: "2001:db8::1"}\n', 'speaker.peers[0].nextHopIpv4', /not an IPv4 address/],
  ];
  for (const [name, peers, path, message] of badHops) {
    test(`refuses ${name} at ${path}, line 9`, () => {
      const hit = issues(cfg({ vip: '2001:db8:100::10', peers })).find((i) => i.path === path);
      assert.ok(hit, `no issue at ${path}`);
      assert.equal(hit.line, 9);
      assert.match(hit.message, message);
    });
  }
});

describe('managed gobgpd config: per-neighbor next hop of the other family', () => {
  const neighbor = (over: Partial<GobgpdNeighbor>): GobgpdNeighbor => ({ address: '198.18.1.1', asn: 65000, connectRetryS: 5, holdTimeS: 3, keepaliveS: 1, families: ['ipv4-unicast'], ...over });

  test('golden: a global export policy sets the IPv6 next hop for that neighbor and family only', () => {
    const toml = renderGobgpdConfig({
      asn: 65001,
      routerId: '198.18.1.2',
      listenPort: -1,
      neighbors: [neighbor({ families: ['ipv4-unicast', 'ipv6-unicast'], crossFamilyNextHop: '2001:db8:1:1::2' }), neighbor({ address: '198.18.1.5' })],
    });
    const policy = toml.slice(toml.indexOf('[global.apply-policy.config]'), toml.indexOf('[[neighbors]]')).trim();
    assert.equal(
      policy,
      [
        '[global.apply-policy.config]',
        '  export-policy-list = ["vipd-cross-family-next-hops"]',
        '  default-export-policy = "accept-route"',
        '',
        '[[defined-sets.neighbor-sets]]',
        '  neighbor-set-name = "vipd-peer-0"',
        '  neighbor-info-list = ["198.18.1.1"]',
        '',
        '[[policy-definitions]]',
        '  name = "vipd-cross-family-next-hops"',
        '  [[policy-definitions.statements]]',
        '    name = "vipd-peer-0-ipv6-unicast-next-hop"',
        '    [policy-definitions.statements.conditions.match-neighbor-set]',
        '      neighbor-set = "vipd-peer-0"',
        '    [policy-definitions.statements.conditions.bgp-conditions]',
        '      afi-safi-in-list = ["ipv6-unicast"]',
        '    [policy-definitions.statements.actions]',
        '      route-disposition = "none"',
        '    [policy-definitions.statements.actions.bgp-actions]',
        '      set-next-hop = "2001:db8:1:1::2"',
      ].join('\n'),
    );
    assert.match(toml, /neighbor-address = "198\.18\.1\.1"[\s\S]*afi-safi-name = "ipv4-unicast"[\s\S]*afi-safi-name = "ipv6-unicast"/);
  });

  test('no cross-family next hop: no policy at all', () => {
    assert.ok(!renderGobgpdConfig({ asn: 65001, routerId: '198.18.1.2', listenPort: -1, neighbors: [neighbor({})] }).includes('policy'));
  });

  test('a next hop of the wrong family, or for a family the session does not carry, is refused', () => {
    const render = (n: GobgpdNeighbor) => () => renderGobgpdConfig({ asn: 65001, routerId: '198.18.1.2', listenPort: -1, neighbors: [n] });
    assert.throws(render(neighbor({ families: ['ipv4-unicast', 'ipv6-unicast'], crossFamilyNextHop: '198.18.1.2' })), /is not an address of ipv6-unicast/);
    assert.throws(render(neighbor({ crossFamilyNextHop: '2001:db8:1:1::2' })), /does not carry ipv6-unicast/);
  });
});

describe('default IPv6 next hop: a global address of the interface towards the peer', () => {
  const ifaces = (): NodeJS.Dict<os.NetworkInterfaceInfo[]> => {
    const a = (address: string, family: 'IPv4' | 'IPv6') => ({ address, family, netmask: '', mac: '', internal: false, cidr: null, scopeid: 0 }) as os.NetworkInterfaceInfo;
    return {
      lo: [a('127.0.0.1', 'IPv4'), a('::1', 'IPv6'), a('2001:db8:100::10', 'IPv6')],
      eth1: [a('198.18.1.2', 'IPv4'), a('fe80::1', 'IPv6'), a('::ffff:198.18.1.2', 'IPv6'), a('2001:db8:1:1:0::2', 'IPv6')],
      eth2: [a('198.18.1.6', 'IPv4'), a('fe80::2', 'IPv6')],
    };
  };

  test('picks the global address of the session interface, skipping link-local and IPv4-mapped, in canonical form', async () => {
    assert.equal(await defaultIpv6NextHop('198.18.1.1', undefined, { sourceAddress: async () => '198.18.1.2', interfaces: ifaces }), '2001:db8:1:1::2');
  });

  test('localAddress of the session chooses the interface', async () => {
    assert.equal(await defaultIpv6NextHop('198.18.9.9', '198.18.1.2', { sourceAddress: async () => assert.fail('not asked'), interfaces: ifaces }), '2001:db8:1:1::2');
  });

  test('an interface without a global IPv6 address: a clear error naming the key to set', async () => {
    await assert.rejects(
      defaultIpv6NextHop('198.18.1.5', undefined, { sourceAddress: async () => '198.18.1.6', interfaces: ifaces }),
      (e: unknown) => e instanceof VipdError && /interface eth2 \(source 198\.18\.1\.6\) has no global IPv6 address/.test(e.message) && /set speaker\.peers\[\]\.nextHopIpv6 for peer 198\.18\.1\.5/.test(e.message),
    );
  });

  test('no route to the peer: a clear error', async () => {
    await assert.rejects(
      defaultIpv6NextHop('198.18.1.5', undefined, { sourceAddress: async () => Promise.reject(new Error('ENETUNREACH')), interfaces: ifaces }),
      /no route to it \(ENETUNREACH\)/,
    );
  });
});

describe('negotiated families from the peer OPEN', () => {
  test('MultiProtocol capabilities list what the peer offered; none means IPv4 unicast only (RFC 4760)', () => {
    assert.deepEqual(offeredFamilies([encodeMultiProtocolCapability('ipv4'), encodeMultiProtocolCapability('ipv6')]), ['ipv4', 'ipv6']);
    assert.deepEqual(offeredFamilies([encodeMultiProtocolCapability('ipv6')]), ['ipv6']);
    assert.deepEqual(offeredFamilies([]), ['ipv4']);
  });
});

describe('status per VIP and per peer', () => {
  const peer = (address: string, state: PeerStatus['state'], families: PeerStatus['families']): PeerStatus => ({ address, asn: 65000, state, since: 0, families });
  const peers = [peer('198.18.1.1', 'established', ['ipv4-unicast']), peer('198.18.1.5', 'established', ['ipv4-unicast', 'ipv6-unicast']), peer('198.18.1.9', 'active', ['ipv4-unicast', 'ipv6-unicast'])];
  const cases: Array<{ name: string; prefix: string; vip: { state: 'announced' | 'withdrawn'; reason: string }; adj: Record<string, string[]>; want: string[] }> = [
    {
      name: 'IPv6 VIP: only the session that carries IPv6 and has it in its adj-RIB-out says announced',
      prefix: '2001:db8:100::10/128',
      vip: { state: 'announced', reason: 'healthy' },
      adj: { '198.18.1.5': ['2001:db8:100::10/128'] },
      want: ['198.18.1.1 withdrawn familyNotCarried', '198.18.1.5 announced', '198.18.1.9 withdrawn sessionDown'],
    },
    {
      name: 'announced by vipd but not (yet) in the adj-RIB-out: not announced',
      prefix: '198.19.0.10/32',
      vip: { state: 'announced', reason: 'healthy' },
      adj: { '198.18.1.1': ['198.19.0.10/32'] },
      want: ['198.18.1.1 announced', '198.18.1.5 withdrawn notInAdjRibOut', '198.18.1.9 withdrawn sessionDown'],
    },
    {
      name: 'withdrawn by vipd: each peer shows the VIP reason',
      prefix: '198.19.0.10/32',
      vip: { state: 'withdrawn', reason: 'noHealthyBackends' },
      adj: {},
      want: ['198.18.1.1 withdrawn noHealthyBackends', '198.18.1.5 withdrawn noHealthyBackends', '198.18.1.9 withdrawn noHealthyBackends'],
    },
    {
      name: 'non-canonical IPv6 text matches',
      prefix: '2001:db8:100:0::10/128',
      vip: { state: 'announced', reason: 'healthy' },
      adj: { '198.18.1.5': ['2001:db8:100::10/128'] },
      want: ['198.18.1.1 withdrawn familyNotCarried', '198.18.1.5 announced', '198.18.1.9 withdrawn sessionDown'],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = peerAnnounceStates(c.prefix, c.vip, peers, new Map(Object.entries(c.adj))).map((p) => `${p.peer} ${p.state}${p.reason ? ' ' + p.reason : ''}`);
      assert.deepEqual(got, c.want);
    });
  }
});

test('vipd status shows each peer with its families and what it was sent, and each VIP per peer with the reason', () => {
  const vip = (name: string, prefix: string, peers: DaemonStatus['vips'][number]['peers']) =>
    ({ name, prefix, state: 'announced', reason: 'healthy', detail: '', since: 't', listeners: [], peers }) as const;
  const s: DaemonStatus = {
    node: 'lb1',
    version: 't',
    drained: false,
    shuttingDown: false,
    vips: [
      vip('cp4', '198.19.0.10/32', [{ peer: '198.18.1.1', state: 'announced' }]),
      vip('cp6', '2001:db8:100::10/128', [{ peer: '198.18.1.1', state: 'withdrawn', reason: 'familyNotNegotiated' }]),
    ],
    pools: [],
    peers: [{ address: '198.18.1.1', asn: 65000, state: 'established', since: 't', families: ['ipv4-unicast', 'ipv6-unicast'], negotiated: ['ipv4-unicast'], advertised: ['198.19.0.10/32'] }],
  };
  const text = renderStatus(s);
  assert.match(text, /^198\.18\.1\.1 +65000 +established +t +ipv4-unicast,ipv6-unicast +ipv4-unicast +1 +- +-$/m);
  assert.match(text, /^cp4 +198\.18\.1\.1 +announced$/m);
  assert.match(text, /^cp6 +198\.18\.1\.1 +withdrawn +familyNotNegotiated$/m);
});

describe('GobgpSpeaker.advertised(): the adj-RIB-out of negotiated families of established sessions', () => {
  const V4: Advertisement = { prefix: '198.19.0.10/32', communities: [] };
  const V6: Advertisement = { prefix: '2001:db8:100::10/128', communities: [] };
  const speakers: Speaker[] = [];
  const fakes: FakeGobgpClient[] = [];
  afterEach(async () => {
    for (const s of speakers.splice(0)) await s.destroy();
    for (const f of fakes.splice(0)) assert.deepEqual(f.violations, []);
  });

  async function start(offered: Array<'ipv4' | 'ipv6'>) {
    const clock = new FakeClock();
    // gobgpd is configured for both families on the IPv4 session (what managed mode writes for an IPv6 VIP).
    const fake = new FakeGobgpClient({ peers: [{ address: '198.18.1.1', asn: 65000, state: 'ESTABLISHED', configured: ['ipv4', 'ipv6'], offered }] });
    const speaker = createGobgpSpeaker({
      asn: 65001,
      routerId: '198.18.1.2',
      manage: false,
      api: 'unix:/run/gobgpd.sock',
      peers: [{ address: '198.18.1.1', asn: 65000, families: ['ipv4-unicast', 'ipv6-unicast'] }],
      clock,
      logger: silentLogger(),
      metrics: createMetrics(),
      clientFactory: () => fake,
    });
    speakers.push(speaker);
    fakes.push(fake);
    await speaker.start();
    await flushMicrotasks();
    return { speaker, fake, clock };
  }

  test('the router negotiated both families: both VIPs are in its adj-RIB-out', async () => {
    const { speaker } = await start(['ipv4', 'ipv6']);
    await speaker.setAdvertisements([V4, V6]);
    assert.deepEqual(speaker.advertised().get('198.18.1.1'), ['198.19.0.10/32', '2001:db8:100::10/128']);
    assert.deepEqual(speaker.peers()[0]!.families, ['ipv4-unicast', 'ipv6-unicast']);
  });

  test('the router did not activate IPv6: gobgpd still lists it in ADJ_OUT, but it is not counted as sent', async () => {
    const { speaker } = await start(['ipv4']);
    await speaker.setAdvertisements([V4, V6]);
    assert.deepEqual(speaker.advertised().get('198.18.1.1'), ['198.19.0.10/32']);
    assert.deepEqual(speaker.peers()[0]!.negotiated, ['ipv4-unicast']);
    const states = peerAnnounceStates(V6.prefix, { state: 'announced', reason: 'healthy' }, speaker.peers(), speaker.advertised());
    assert.deepEqual(states, [{ peer: '198.18.1.1', state: 'withdrawn', reason: 'familyNotNegotiated' }]);
  });

  test('a session that leaves established has nothing advertised at once; it is read again when it is back', async () => {
    const { speaker, fake, clock } = await start(['ipv4', 'ipv6']);
    await speaker.setAdvertisements([V4]);
    assert.deepEqual(speaker.advertised().get('198.18.1.1'), ['198.19.0.10/32']);
    fake.setPeerState('198.18.1.1', 'ACTIVE');
    assert.deepEqual(speaker.advertised().get('198.18.1.1'), []);
    fake.setPeerState('198.18.1.1', 'ESTABLISHED');
    await clock.advance(10);
    assert.deepEqual(speaker.advertised().get('198.18.1.1'), ['198.19.0.10/32']);
  });

  test('close() and destroy() are idempotent and awaitable, and leave nothing advertised', async () => {
    const { speaker, fake } = await start(['ipv4']);
    await speaker.setAdvertisements([V4]);
    const closing = [speaker.close(), speaker.close()];
    const destroying = speaker.destroy();
    await Promise.all([...closing, destroying, speaker.destroy()]);
    assert.equal(speaker.advertised().size, 0);
    assert.ok(fake.isClosed);
  });
});
