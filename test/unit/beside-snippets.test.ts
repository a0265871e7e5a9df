import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BESIDE_BIRD_CONF, BESIDE_FRR_CONF, SNIPPET_ADDRESSES, templateSnippet } from '../lab/node-router';

/** The node-router snippets shipped in config/ (docs/beside-frr.md); the beside-frr integration test runs them. */

const lb3 = { hostname: 'lb3', node: '198.18.1.10', tor: '198.18.1.9', vipd: '198.18.200.3' };

describe('config/beside-frr/frr.conf', () => {
  const text = readFileSync(BESIDE_FRR_CONF, 'utf8');

  it('ends blocks with "!", never "exit" (a shared -f file: exit would end config mode for daemons that do not know the block)', () => {
    const exits = text.split('\n').filter((l) => /^\s*exit\s*$/.test(l));
    assert.deepEqual(exits, []);
  });

  it('has the lines the facts of issue 11 call for', () => {
    for (const line of [
      'ip route 198.18.201.1/32 blackhole',
      ' set ip next-hop 198.18.201.1',
      ' neighbor 198.18.200.1 passive',
      ' neighbor 198.18.200.1 disable-connected-check',
      '  neighbor 198.18.200.1 route-map VIPD-IN in',
      ' neighbor 198.18.1.1 bfd profile tor',
      '  receive-interval 300',
      '  detect-multiplier 3',
    ]) {
      assert.ok(text.split('\n').includes(line), `missing: ${line}`);
    }
  });

  it('is valid FRR configuration (vtysh --dryrun), and the check can fail', () => {
    const ok = spawnSync('vtysh', ['--dryrun', '-f', BESIDE_FRR_CONF], { encoding: 'utf8' });
    assert.equal(ok.error, undefined, 'vtysh is installed (scripts/setup.sh installs frr)');
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    const bad = join(mkdtempSync(join(tmpdir(), 'vipd-frr-')), 'bad.conf');
    writeFileSync(bad, text.replace(' neighbor 198.18.200.1 disable-connected-check', ' neighbor 198.18.200.1 disable-connected-chek'));
    assert.notEqual(spawnSync('vtysh', ['--dryrun', '-f', bad], { encoding: 'utf8' }).status, 0);
  });

  it('templates per balancer in one pass: lb3 (198.18.1.10) is not corrupted by lb1\'s 198.18.1.1', () => {
    assert.equal(templateSnippet(text, 'frr.conf', SNIPPET_ADDRESSES), text, 'lb1 loads the file as shipped');
    const out = templateSnippet(text, 'frr.conf', lb3);
    assert.match(out, /^ neighbor 198\.18\.1\.9 remote-as 65000$/m);
    assert.match(out, /^ bgp router-id 198\.18\.1\.10$/m);
    assert.match(out, /^ neighbor 198\.18\.200\.3 passive$/m);
    assert.match(out, /^hostname lb3$/m);
    assert.doesNotMatch(out, /198\.18\.1\.(1|2)(?!\d)|198\.18\.200\.1(?!\d)/);
  });

  it('refuses to template a file that no longer holds lb1\'s values (the tests would prove another file)', () => {
    assert.throws(() => templateSnippet(text.replace(/198\.18\.200\.1(?!\d)/g, '198.18.250.1'), 'frr.conf', lb3), /no longer holds lb1's address 198\.18\.200\.1/);
  });
});

describe('config/beside-bird/bird.conf', () => {
  it('parses with BIRD 2 (bird -p), as shipped and templated for lb3', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipd-bird-'));
    const text = readFileSync(BESIDE_BIRD_CONF, 'utf8');
    for (const [name, body] of [['as-shipped.conf', text], ['lb3.conf', templateSnippet(text, 'bird.conf', lb3)]] as const) {
      writeFileSync(join(dir, name), body);
      const r = spawnSync('bird', ['-p', '-c', join(dir, name)], { encoding: 'utf8' });
      assert.equal(r.error, undefined, 'bird is installed (scripts/setup.sh installs bird2)');
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    }
  });
});
