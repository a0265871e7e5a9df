import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { ConfigError, VipdError } from '../../src/lib/errors';
import { packageRoot } from '../../src/lib/version';
import { checkSearchableBy, lookupGobgpdUser, parsePasswdLine, setprivArgs } from '../../src/speaker/gobgp/gobgpd-user';
import { gobgpdApiHost } from '../../src/speaker/gobgp/supervisor';
import { oneVipOnePool } from '../fakes/config-fixtures';

/**
 * Defects 5 and 9 of issue 9: gobgpd's unauthenticated API is never reachable by other local users,
 * and gobgpd runs without root and without capabilities.
 */

const config = (gobgp: string, user = ''): string => `node:
  name: lb1
speaker:
  driver: gobgp
  asn: 65001
  routerId: 198.18.1.2
  gobgp:
    manage: true
${gobgp}${user}  peers:
    - address: 198.18.1.1
      asn: 65000
${oneVipOnePool()}`;

function refusal(text: string): { path: string; line: number; message: string } {
  try {
    parseConfig(text, 'c.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    const issue = err.issues[0]!;
    return { path: issue.path, line: issue.line, message: issue.message };
  }
  assert.fail('config was accepted');
}

describe('gobgpd API lock-down (defect 5, T23)', () => {
  test('managed gobgpd with no api: accepted, the private unix socket is used', () => {
    const c = parseConfig(config(''), 'c.yaml');
    assert.equal(c.speaker.gobgp.api, undefined);
    assert.equal(c.speaker.gobgp.allowTcpApi, false);
  });

  for (const api of ['127.0.0.1:50051', '[::1]:50051']) {
    test(`a TCP api ${api} with manage: true is refused at its key and line, saying why`, () => {
      const r = refusal(config(`    api: "${api}"\n`));
      assert.equal(r.path, 'speaker.gobgp.api');
      assert.equal(r.line, 9);
      assert.match(r.message, /unauthenticated/);
      assert.match(r.message, /any local user could AddPath any prefix or delete the peers/);
      assert.match(r.message, /allowTcpApi: true/);
    });
  }

  test('a TCP api with manage: true and allowTcpApi: true is accepted (the operator said it is meant)', () => {
    const c = parseConfig(config('    api: 127.0.0.1:50051\n    allowTcpApi: true\n'), 'c.yaml');
    assert.equal(c.speaker.gobgp.api, '127.0.0.1:50051');
  });

  test('a unix socket api with manage: true is accepted', () => {
    assert.equal(parseConfig(config('    api: unix:/run/vipd/gobgpd.sock\n'), 'c.yaml').speaker.gobgp.api, 'unix:/run/vipd/gobgpd.sock');
  });

  test('an external gobgpd (manage: false) may be on loopback TCP: vipd does not run it', () => {
    const text = config('    api: 127.0.0.1:50051\n').replace('manage: true', 'manage: false');
    assert.equal(parseConfig(text, 'c.yaml').speaker.gobgp.api, '127.0.0.1:50051');
  });

  test('the supervisor refuses a TCP api itself unless allowed (defence in depth)', () => {
    assert.throws(() => gobgpdApiHost('127.0.0.1:50051', false), (e: unknown) => e instanceof VipdError && /unauthenticated/.test(e.message));
    assert.equal(gobgpdApiHost('127.0.0.1:50051', true), '127.0.0.1:50051');
    assert.equal(gobgpdApiHost('unix:/run/x/api.sock', false), 'unix:///run/x/api.sock');
  });

  test('vipd check-config prints the refusal with file, line, key path and the reason', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipd-lockdown-'));
    const file = join(dir, 'tcp-api.yaml');
    writeFileSync(file, config('    api: 127.0.0.1:50051\n'));
    const bin = join(packageRoot, 'dist', 'src', 'cli', 'bin.js');
    const res = spawnSync(process.execPath, [bin, 'check-config', file], { encoding: 'utf8' });
    assert.equal(res.status, 2, res.stdout + res.stderr);
    assert.match(res.stderr, /tcp-api\.yaml:9:\d+: speaker\.gobgp\.api: a TCP API for the managed gobgpd is refused: gobgpd's gRPC API is unauthenticated/);
  });
});

describe('gobgpd without root (defect 9)', () => {
  test('speaker.gobgp.user defaults to nobody; a name that is no user name is refused at its line', () => {
    assert.equal(parseConfig(config(''), 'c.yaml').speaker.gobgp.user, 'nobody');
    const r = refusal(config('', '    user: "root;rm"\n'));
    assert.equal(r.path, 'speaker.gobgp.user');
    assert.equal(r.line, 9);
  });

  test('vipd check-config refuses a gobgpd user that does not exist on this host, naming the key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipd-lockdown-'));
    const file = join(dir, 'no-user.yaml');
    writeFileSync(file, config('', '    user: vipd-no-such-user\n'));
    const bin = join(packageRoot, 'dist', 'src', 'cli', 'bin.js');
    const res = spawnSync(process.execPath, [bin, 'check-config', file], { encoding: 'utf8' });
    assert.equal(res.status, 2, res.stdout + res.stderr);
    assert.match(res.stderr, /no-user\.yaml: speaker\.gobgp\.user: speaker\.gobgp\.user "vipd-no-such-user" does not exist on this host/);
  });

  test('getent lines are parsed strictly', () => {
    assert.deepEqual(parsePasswdLine('nobody', 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n'), { user: 'nobody', uid: 65534, gid: 65534 });
    assert.throws(() => parsePasswdLine('nobody', 'other:x:1:1::/:/bin/sh'), /unexpected passwd entry/);
    assert.throws(() => parsePasswdLine('nobody', 'nobody:x:abc:1::/:/bin/sh'), /unexpected passwd entry/);
  });

  test('a user that exists is found through NSS; one that does not is a clear error naming the key', async () => {
    assert.deepEqual(await lookupGobgpdUser('root'), { user: 'root', uid: 0, gid: 0 });
    await assert.rejects(lookupGobgpdUser('vipd-no-such-user'), (e: unknown) => e instanceof VipdError && /speaker\.gobgp\.user "vipd-no-such-user" does not exist/.test(e.message));
  });

  const nobody = { user: 'nobody', uid: 65534, gid: 65534 };
  const cases: Array<{ name: string; vipdUid: number; bind: boolean; want: string[] | RegExp }> = [
    {
      name: 'root vipd: switch user, no groups, no capabilities in any set, parent-death signal',
      vipdUid: 0,
      bind: false,
      want: ['--reuid=65534', '--regid=65534', '--clear-groups', '--bounding-set=-all', '--inh-caps=-all', '--ambient-caps=-all', '--no-new-privs', '--pdeathsig', 'TERM'],
    },
    {
      name: 'root vipd, BGP port below 1024: CAP_NET_BIND_SERVICE only, ambient',
      vipdUid: 0,
      bind: true,
      want: [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        '--bounding-set=-all,+net_bind_service',
        '--inh-caps=-all,+net_bind_service',
        '--ambient-caps=-all,+net_bind_service',
        '--no-new-privs',
        '--pdeathsig',
        'TERM',
      ],
    },
    { name: 'unprivileged vipd running gobgpd as itself: no switch', vipdUid: 65534, bind: false, want: ['--inh-caps=-all', '--ambient-caps=-all', '--no-new-privs', '--pdeathsig', 'TERM'] },
    { name: 'unprivileged vipd asked for another user: refused, naming the key', vipdUid: 1000, bind: false, want: /speaker\.gobgp\.user "nobody" \(uid 65534\): vipd runs as uid 1000 and cannot switch users/ },
  ];
  test('setpriv: root vipd running gobgpd as root (a container with only CAP_NET_ADMIN cannot switch users): no switch', () => {
    assert.deepEqual(setprivArgs({ identity: { user: 'root', uid: 0, gid: 0 }, vipdUid: 0, bindPrivilegedPort: false }), ['--inh-caps=-all', '--ambient-caps=-all', '--no-new-privs', '--pdeathsig', 'TERM']);
  });
  for (const c of cases) {
    test(`setpriv: ${c.name}`, () => {
      const run = () => setprivArgs({ identity: nobody, vipdUid: c.vipdUid, bindPrivilegedPort: c.bind });
      if (c.want instanceof RegExp) assert.throws(run, c.want);
      else assert.deepEqual(run(), c.want);
    });
  }

  test('a runtimeDir that gobgpd\'s user cannot enter is refused before anything is spawned, naming the key', async () => {
    const base = mkdtempSync(join(tmpdir(), 'vipd-rundir-'));
    const closed = join(base, 'closed');
    mkdirSync(join(closed, 'inner'), { recursive: true });
    chmodSync(base, 0o755);
    chmodSync(closed, 0o700);
    // A uid and gid that own nothing here: only the "other" bits apply to it.
    const stranger = { user: 'stranger', uid: 4_000_000_001, gid: 4_000_000_001 };
    try {
      await assert.rejects(checkSearchableBy(join(closed, 'inner'), stranger), (e: unknown) => e instanceof VipdError && /speaker\.gobgp\.runtimeDir: .*closed \(mode 0700, uid \d+\) cannot be entered by gobgpd's user "stranger"/.test(e.message));
      chmodSync(closed, 0o711);
      await checkSearchableBy(join(closed, 'inner'), stranger);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
