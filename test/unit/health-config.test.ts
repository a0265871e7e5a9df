import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { assertConfigRefused } from '../fakes/config-fixtures';
import { makePki } from '../fakes/test-pki';

/** A config whose only pool's check is `check` (YAML lines at 6 spaces); the check starts on line 9. */
function config(check: string): string {
  return `node:
  name: lb1
speaker:
  driver: none
pools:
  etcd:
    backends: ["198.18.21.2:2379"]
    check:
${check
  .trim()
  .split('\n')
  .map((line) => `      ${line}`)
  .join('\n')}
vips:
  - name: etcd
    address: 198.19.0.10
    listeners:
      - port: 2379
        pool: etcd
`;
}

describe('pools.<name>.check: new kinds load, bad input is refused with key and line', () => {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  let notExecutable: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vipd-check-config-'));
    pki = makePki(dir);
    notExecutable = join(dir, 'check.sh');
    writeFileSync(notExecutable, '#!/bin/sh\nexit 0\n');
    chmodSync(notExecutable, 0o644);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('kubeadm etcd with client certificates, and the other kinds, load', () => {
    const etcd = parseConfig(config(`kind: etcd
tls:
  caFile: ${pki.caFile}
  certFile: ${pki.client.certFile}
  keyFile: ${pki.client.keyFile}
fastInterval: 200ms
timeout: 150ms
downInterval: 5s`));
    const check = etcd.pools['etcd']!.check;
    assert.deepEqual([check.kind, check.fastInterval, check.downInterval, check.tls?.certFile], ['etcd', 200, 5000, pki.client.certFile]);
    for (const text of [
      'kind: grpc\nservice: etcdserverpb.KV',
      'kind: exec\ncommand: [/bin/true, --quiet]',
      'kind: exec\ncommand: [sh, -c, "exit 0"]',
      'kind: tcp\nsend: "PING\\r\\n"\nexpect: "hex:2b504f4e47"',
      'kind: http\npath: /health\nexpectJson: {health: "true", "a.b.0": 3}',
      'kind: https\npath: /readyz\nexpectBody: ok\ntls: {insecureSkipVerify: true}',
    ]) {
      assert.doesNotThrow(() => parseConfig(config(text)), text);
    }
  });

  const cases: Array<[name: string, check: () => string, path: string, line: number, message: () => RegExp]> = [
    ['a missing CA file', () => `kind: etcd\ntls:\n  caFile: ${dir}/nope.pem`, 'pools.etcd.check.tls.caFile', 11, () => /nope\.pem: cannot read \(ENOENT\)/],
    ['an unreadable key (a directory)', () => `kind: https\ntls:\n  certFile: ${pki.client.certFile}\n  keyFile: ${dir}`, 'pools.etcd.check.tls.keyFile', 12, () => /cannot read \(EISDIR\)/],
    ['a key that is not the certificate\'s', () => `kind: etcd\ntls:\n  certFile: ${pki.client.certFile}\n  keyFile: ${pki.strangerKeyFile}`, 'pools.etcd.check.tls.keyFile', 12, () => /stranger\.key is not the key of .*client\.pem/],
    ['a certificate without its key', () => `kind: grpc\ntls:\n  certFile: ${pki.client.certFile}`, 'pools.etcd.check.tls.keyFile', 11, () => /certFile and keyFile go together/],
    ['a CA file that is not PEM', () => `kind: https\ntls:\n  caFile: ${pki.client.keyFile}`, 'pools.etcd.check.tls.caFile', 11, () => /not a PEM certificate/],
    ['an exec command that does not exist', () => 'kind: exec\ncommand: [/nonexistent/vipd-check]', 'pools.etcd.check.command[0]', 10, () => /\/nonexistent\/vipd-check does not exist/],
    ['an exec command that is not executable', () => `kind: exec\ncommand: [${notExecutable}]`, 'pools.etcd.check.command[0]', 10, () => /is not executable/],
    ['an exec command not on PATH', () => 'kind: exec\ncommand: [vipd-no-such-check]', 'pools.etcd.check.command[0]', 10, () => /is not an executable file in PATH/],
    ['exec without a command', () => 'kind: exec', 'pools.etcd.check.command', 9, () => /needs command/],
    ['command on a tcp check', () => 'kind: tcp\ncommand: [/bin/true]', 'pools.etcd.check.command', 10, () => /applies to kind exec, not tcp/],
    ['expectBody on etcd', () => 'kind: etcd\nexpectBody: ok', 'pools.etcd.check.expectBody', 10, () => /applies to kind http or https/],
    ['both body matches', () => 'kind: http\nexpectBody: ok\nexpectJson: {a: 1}', 'pools.etcd.check.expectJson', 11, () => /not both/],
    ['bad hex in expect', () => 'kind: tcp\nexpect: "hex:zz"', 'pools.etcd.check.expect', 10, () => /is not hex/],
    ['a dotted path with an empty segment', () => 'kind: http\nexpectJson: {"a..b": 1}', 'pools.etcd.check.expectJson.a..b', 10, () => /dotted path/],
    ['timeout above fastInterval', () => 'kind: tcp\nfastInterval: 100ms\ntimeout: 500ms', 'pools.etcd.check.timeout', 11, () => /must not exceed fastInterval/],
    ['an unknown kind', () => 'kind: icmp', 'pools.etcd.check.kind', 9, () => /"icmp" is not one of tcp \| http \| https \| etcd \| grpc \| exec/],
  ];
  for (const [name, check, path, line, message] of cases) {
    it(`refuses ${name}`, () => assertConfigRefused(config(check()), path, line, message()));
  }
});
