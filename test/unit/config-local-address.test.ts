import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { NetworkInterfaceInfo } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { packageRoot } from '../../src/lib/version';
import { localAddressIssues } from '../../src/net/local-address';
import { assertConfigRefused, oneVipOnePool } from '../fakes/config-fixtures';

/** speaker.peers[].localAddress: beside the node's own FRR/BIRD (docs/beside-frr.md). */

const beside = `node:
  name: lb1
admin:
  listen: 127.0.0.1:9180
speaker:
  driver: gobgp
  asn: 65201
  routerId: 198.18.200.1
  peers:
    - address: 198.18.1.2
      asn: 65001
      localAddress: 198.18.200.1
${oneVipOnePool()}`;

/** A refusal of the beside config, reported against beside.yaml. */
const refused = (text: string, key: string, line: number, message: RegExp): void => assertConfigRefused(text, key, line, message, 'beside.yaml');

function iface(address: string): NetworkInterfaceInfo {
  const v6 = address.includes(':');
  return { address, netmask: v6 ? 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' : '255.255.255.255', family: v6 ? 'IPv6' : 'IPv4', mac: '00:00:00:00:00:00', internal: false, cidr: null, ...(v6 ? { scopeid: 0 } : {}) } as NetworkInterfaceInfo;
}

describe('config: speaker.peers[].localAddress', () => {
  it('the documented setup loads: a /32 of the node as the source, the router id equal to it', () => {
    const c = parseConfig(beside, 'beside.yaml');
    assert.equal(c.speaker.peers[0]!.localAddress, '198.18.200.1');
    assert.equal(c.speaker.routerId, '198.18.200.1');
  });

  it('refuses a localAddress equal to the peer address', () => {
    refused(beside.replace('localAddress: 198.18.200.1', 'localAddress: 198.18.1.2'), 'speaker.peers[0].localAddress', 12, /peer's own address/);
  });

  it('refuses a localAddress of the other family', () => {
    refused(beside.replace('localAddress: 198.18.200.1', 'localAddress: 2001:db8:200::1'), 'speaker.peers[0].localAddress', 12, /not of the family/);
  });

  it('refuses a localAddress that is not an address', () => {
    refused(beside.replace('localAddress: 198.18.200.1', 'localAddress: lo'), 'speaker.peers[0].localAddress', 12, /not an IP address/);
  });

  it('refuses a router id equal to a peer address (the local router would see its own id in the OPEN)', () => {
    refused(beside.replace('routerId: 198.18.200.1', 'routerId: 198.18.1.2'), 'speaker.routerId', 8, /address of peer 0.*own router id/);
  });
});

describe('localAddressIssues (the host check at start and reload)', () => {
  const config = parseConfig(beside, 'beside.yaml');
  it('accepts a localAddress present on an interface', () => {
    assert.deepEqual(localAddressIssues(config.speaker, () => ({ lo: [iface('127.0.0.1'), iface('198.18.200.1')], eth1: [iface('198.18.1.2')] })), []);
  });

  it('names the key when the address is on no interface', () => {
    const issues = localAddressIssues(config.speaker, () => ({ lo: [iface('127.0.0.1')], eth1: [iface('198.18.1.2')] }));
    assert.equal(issues.length, 1);
    assert.equal(issues[0]!.key, 'speaker.peers[0].localAddress');
    assert.deepEqual(issues[0]!.path, ['speaker', 'peers', 0, 'localAddress']);
    assert.match(issues[0]!.message, /198\.18\.200\.1 is not an address of this node.*ip addr add 198\.18\.200\.1\/32 dev lo/);
  });

  it('compares IPv6 addresses in canonical form', () => {
    const v6 = { driver: 'gobgp', gobgp: { manage: true }, peers: [{ localAddress: '2001:db8:200::1' }] };
    assert.deepEqual(localAddressIssues(v6, () => ({ lo: [iface('2001:0db8:0200:0000:0000:0000:0000:0001')] })), []);
  });

  it('does not judge an external gobgpd (its sessions are not configured by vipd) nor peers without localAddress', () => {
    const none = () => ({ lo: [iface('127.0.0.1')] });
    assert.deepEqual(localAddressIssues({ driver: 'gobgp', gobgp: { manage: false }, peers: [{ localAddress: '198.18.200.1' }] }, none), []);
    assert.deepEqual(localAddressIssues({ driver: 'gobgp', gobgp: { manage: true }, peers: [{}] }, none), []);
  });

  it('vipd run refuses to start, naming key, line and column, exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipd-localaddr-'));
    const file = join(dir, 'beside.yaml');
    // 198.18.200.1 is never on the test host (lab addresses live only in the lab's namespaces).
    writeFileSync(file, beside);
    const r = spawnSync(process.execPath, [join(packageRoot, 'dist', 'src', 'cli', 'bin.js'), 'run', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:12:\\d+: speaker\\.peers\\[0\\]\\.localAddress: 198\\.18\\.200\\.1 is not an address of this node`));
  });
});
