import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfigFile, parseConfig } from '../../src/config/config';
import { packageRoot } from '../../src/lib/version';
import { configIssue } from '../fakes/config-fixtures';

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
    reconcileInterval: 3s
  peers:
    - address: 198.18.1.1
      asn: 65000
vips:
  - name: control-plane
    address: 198.19.0.10
    communities: ["65000:100"]
    listeners:
      - port: 2379
        pool: etcd
pools:
  etcd:
    balance: least-conn
    backends: ["198.18.21.2:2379", "198.18.22.2:2379", "198.18.23.2:2379"]
    check:
      kind: http
      path: /health
      interval: 200ms
      timeout: 150ms
      rise: 2
      fall: 2
`;

/** Replaces the first occurrence of `from` in the base config; fails loudly if the anchor is missing. */
function edit(from: string, to: string): string {
  assert.ok(base.includes(from), `test anchor not in base config: ${from}`);
  return base.replace(from, to);
}

test('config: the contract example loads, with durations in ms and defaults filled', () => {
  const c = parseConfig(base, 'base.yaml');
  assert.equal(c.pools.etcd!.check.interval, 200);
  assert.equal(c.pools.etcd!.check.timeout, 150);
  assert.equal(c.speaker.peers[0]!.holdTime, 3000);
  assert.equal(c.speaker.peers[0]!.keepalive, 1000);
  assert.equal(c.speaker.peers[0]!.connectRetry, 5000);
  assert.equal(c.speaker.gobgp.listen, undefined, 'gobgpd dials out only by default');
  assert.equal(c.speaker.gracefulRestart.enabled, false);
  assert.equal(c.speaker.peers[0]!.passive, false);
  assert.equal(c.vips[0]!.minHealthyBackends, 1);
  assert.equal(c.net.interface, 'lo');
  assert.equal(c.pools.etcd!.retryBeforeReply, 'tls');
  assert.ok(Object.isFrozen(c.pools.etcd!.backends), 'config is deeply immutable');
});

test('config: every example file in config/ loads', () => {
  const dir = join(packageRoot, 'config');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f.startsWith('vipd'));
  assert.ok(files.length >= 2, `expected example configs in ${dir}, found ${files.join(',')}`);
  for (const f of files) loadConfigFile(join(dir, f));
});

const good: Array<[string, string]> = [
  ['IPv6 VIP and backends', edit('address: 198.19.0.10', 'address: 2001:db8:100::10').replace('"198.18.21.2:2379"', '"[2001:db8:21::2]:2379"')],
  ['VIP written as /32', edit('address: 198.19.0.10', 'address: 198.19.0.10/32')],
  ['speaker none needs no BGP keys', 'node: {name: x}\nspeaker: {driver: none}\nvips: [{name: a, address: 198.19.0.10, listeners: [{port: 80, pool: p}]}]\npools: {p: {backends: ["198.18.21.2:80"]}}\n'],
  ['durations in s and m', edit('interval: 200ms', 'interval: 1m').replace('timeout: 150ms', 'timeout: 2s')],
];
for (const [name, text] of good) {
  test(`config accepts: ${name}`, () => {
    parseConfig(text, 'good.yaml');
  });
}

/** [name, yaml, key path that must be named, line that must be named] */
const bad: Array<[string, string, string, number]> = [
  ['unknown top-level key', base + 'bogus: 1\n', 'bogus', 33],
  ['unknown nested key', edit('      rise: 2', '      rize: 2'), 'pools.etcd.check.rize', 31],
  ['wrong type', edit('      rise: 2', '      rise: two'), 'pools.etcd.check.rise', 31],
  ['bad IP', edit('address: 198.19.0.10', 'address: 198.19.0.999'), 'vips[0].address', 17],
  ['VIP is a network', edit('address: 198.19.0.10', 'address: 198.19.0.0/24'), 'vips[0].address', 17],
  ['VIP is loopback', edit('address: 198.19.0.10', 'address: 127.0.0.5'), 'vips[0].address', 17],
  ['VIP is multicast', edit('address: 198.19.0.10', 'address: 224.0.0.5'), 'vips[0].address', 17],
  ['port out of range', edit('- port: 2379', '- port: 65536'), 'vips[0].listeners[0].port', 20],
  ['port zero', edit('- port: 2379', '- port: 0'), 'vips[0].listeners[0].port', 20],
  ['backend port out of range', edit('"198.18.21.2:2379"', '"198.18.21.2:99999"'), 'pools.etcd.backends[0]', 25],
  ['listener names a missing pool', edit('pool: etcd', 'pool: apiserver'), 'vips[0].listeners[0].pool', 21],
  ['backend equal to a VIP listener', edit('"198.18.21.2:2379"', '"198.19.0.10:2379"'), 'pools.etcd.backends[0]', 25],
  ['backend on loopback at a listener port', edit('"198.18.21.2:2379"', '"127.0.0.1:2379"'), 'pools.etcd.backends[0]', 25],
  ['duplicate VIP:port', edit('        pool: etcd\n', '        pool: etcd\n      - port: 2379\n        pool: etcd\n'), 'vips[0].listeners[1].port', 22],
  ['rise out of range', edit('      rise: 2', '      rise: 0'), 'pools.etcd.check.rise', 31],
  ['fall out of range', edit('      fall: 2', '      fall: 99'), 'pools.etcd.check.fall', 32],
  ['interval out of range', edit('interval: 200ms', 'interval: 1ms'), 'pools.etcd.check.interval', 29],
  ['interval not a duration', edit('interval: 200ms', 'interval: 200'), 'pools.etcd.check.interval', 29],
  ['timeout above interval', edit('timeout: 150ms', 'timeout: 300ms'), 'pools.etcd.check.timeout', 30],
  ['ASN zero', edit('asn: 65001', 'asn: 0'), 'speaker.asn', 7],
  ['ASN too large', edit('asn: 65001', 'asn: 4294967296'), 'speaker.asn', 7],
  ['peer ASN AS_TRANS', edit('asn: 65000', 'asn: 23456'), 'speaker.peers[0].asn', 14],
  ['bad community', edit('"65000:100"', '"65000:70000"'), 'vips[0].communities[0]', 18],
  ['community not a pair', edit('"65000:100"', '"no-such"'), 'vips[0].communities[0]', 18],
  ['router id not IPv4', edit('routerId: 198.18.1.2', 'routerId: lb1'), 'speaker.routerId', 8],
  ['gobgp API not on loopback', edit('reconcileInterval: 3s', 'api: 0.0.0.0:50051'), 'speaker.gobgp.api', 11],
  ['external gobgpd without an API address', edit('manage: true\n    reconcileInterval: 3s', 'manage: false'), 'speaker.gobgp.api', 10],
  ['admin API not on loopback', edit('listen: 127.0.0.1:9180', 'listen: 198.18.1.2:9180'), 'admin.listen', 4],
  ['missing peers for gobgp', edit('  peers:\n    - address: 198.18.1.1\n      asn: 65000\n', ''), 'speaker.peers', 6],
  ['bad balance', edit('balance: least-conn', 'balance: fastest'), 'pools.etcd.balance', 24],
  ['bad retryBeforeReply', edit('balance: least-conn', 'balance: least-conn\n    retryBeforeReply: yes'), 'pools.etcd.retryBeforeReply', 25],
  ['YAML syntax', edit('  name: lb1', '  name: [lb1'), '(yaml)', 3],
  ['duplicate key', edit('  name: lb1', '  name: lb1\n  name: lb2'), '(yaml)', 3],
];

for (const [name, text, path, line] of bad) {
  test(`config refuses: ${name}`, () => {
    const { issue, error } = configIssue(text, path);
    assert.equal(issue.line, line, `wrong line for ${path}: ${error.message}`);
    assert.match(error.message, new RegExp(`^bad\\.yaml:${line}:\\d+: `, 'm'));
  });
}

test('vipd check-config: exit 0 with a summary for a good file, exit 2 naming key and line for a bad one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vipd-cfg-'));
  const bin = join(packageRoot, 'dist', 'src', 'cli', 'bin.js');
  const goodFile = join(dir, 'good.yaml');
  writeFileSync(goodFile, base);
  const ok = execFileSync(process.execPath, [bin, 'check-config', goodFile], { encoding: 'utf8' });
  assert.match(ok, /ok \(1 VIPs, 1 listeners, 1 pools, 3 backends, speaker gobgp\)/);

  const badFile = join(dir, 'bad.yaml');
  writeFileSync(badFile, edit('- port: 2379', '- port: 65536'));
  const res = spawnSync(process.execPath, [bin, 'check-config', '--config', badFile], { encoding: 'utf8' });
  assert.equal(res.status, 2);
  assert.match(res.stderr, /bad\.yaml:20:\d+: vips\[0\]\.listeners\[0\]\.port: port must be 1\.\.65535/);

  const missing = spawnSync(process.execPath, [bin, 'check-config', join(dir, 'nope.yaml')], { encoding: 'utf8' });
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /nope\.yaml: cannot read config: ENOENT/);

  const usage = spawnSync(process.execPath, [bin, 'run'], { encoding: 'utf8' });
  assert.equal(usage.status, 2, 'a missing required flag is a usage error');
  assert.match(usage.stderr, /--config/);
});
