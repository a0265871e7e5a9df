import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { createLab, sleep, VIPD_BIN, type Lab, type LabProcess } from '../lab';
import { requirePrerequisites } from '../fakes/prerequisites';
import { timedVipdCli, watchNexthops } from '../fakes/timed-cli';

/**
 * Packaging (issue 12, point 3; T25). The npm package installs on its own and runs; and vipd run the way
 * config/vipd.service runs it (a non-root user, CAP_NET_ADMIN alone in every set, no_new_privs, through
 * setpriv) announces, drains over its admin socket and withdraws, asserted at the FRR ToR's kernel table.
 */
const REPO_ROOT = path.join(__dirname, '..', '..', '..');
const PREFIX = '198.19.0.10/32';
const CAP_NET_ADMIN = 1n << 12n;
const T19_BOUND_MS = 500;
const T16_BOUND_MS = 1000;

describe('npm package', () => {
  it('npm pack: bin/vipd, dist and proto, no tests; npm install -g into a fresh prefix gives a working `vipd version`', () => {
    requirePrerequisites(['npm']);
    const work = fs.mkdtempSync(path.join(tmpdir(), 'vipd-pack-'));
    try {
      const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: REPO_ROOT, encoding: 'utf8' })) as Array<{ filename: string; files: Array<{ path: string }> }>;
      const files = packed[0]!.files.map((f) => f.path);
      for (const want of ['bin/vipd', 'dist/src/cli/bin.js', 'dist/src/main.js', 'proto/gobgp.proto', 'config/vipd.service', 'config/vipd.schema.json']) assert.ok(files.includes(want), `package has ${want}`);
      const tests = files.filter((f) => /(^|\/)test\//.test(f) || f.endsWith('.test.js'));
      assert.deepEqual(tests, [], 'no tests in the package');
      const tarball = path.join(work, packed[0]!.filename);
      console.log(`packaging: ${packed[0]!.filename}, ${files.length} files`);

      const prefix = path.join(work, 'prefix');
      const install = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { encoding: 'utf8', timeout: 240_000 });
      assert.equal(install.status, 0, install.stderr);
      const version = spawnSync(path.join(prefix, 'bin', 'vipd'), ['version'], { encoding: 'utf8', cwd: work });
      assert.equal(version.status, 0, version.stderr);
      const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
      assert.equal(version.stdout.trim(), `vipd ${pkg.version}`);
      // The installed copy reads its own proto/ (the gobgpd API subset), not this checkout's.
      const check = spawnSync(path.join(prefix, 'bin', 'vipd'), ['check-config', '--config', path.join(prefix, 'lib', 'node_modules', 'vipd', 'config', 'vipd.yaml')], { encoding: 'utf8' });
      assert.match(check.stdout + check.stderr, /vipd\.yaml: ok|speaker\.gobgp\.user/);
      console.log(`packaging: npm install -g --prefix ${prefix} -> ${version.stdout.trim()}`);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('T25: least privilege, run as the systemd unit would', () => {
  let lab: Lab | undefined;
  let vipd: LabProcess | undefined;
  let home: string | undefined;
  after(async () => {
    await vipd?.stop(5000);
    await lab?.destroy();
    if (home) fs.rmSync(home, { recursive: true, force: true });
  });

  it('vipd as nobody with only CAP_NET_ADMIN (setpriv): announces, drains over its socket and withdraws at the ToR; CapEff is cap_net_admin alone', async () => {
    requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd']);
    lab = await createLab({ balancers: 1, backends: 'etcd' });
    // The unit's directories, owned by the service user: RuntimeDirectory (socket, gobgpd), StateDirectory.
    home = fs.mkdtempSync(path.join(tmpdir(), 'vipd-t25-'));
    fs.chmodSync(home, 0o755);
    const run = path.join(home, 'run');
    const state = path.join(home, 'state');
    fs.mkdirSync(run, { mode: 0o711 });
    fs.mkdirSync(state, { mode: 0o700 });
    const nobody = { uid: 65534, gid: 65534 };
    fs.chownSync(run, nobody.uid, nobody.gid);
    fs.chownSync(state, nobody.uid, nobody.gid);
    const config = path.join(home, 'lb1.yaml');
    const overrides = {
      stateDir: state,
      admin: { socket: path.join(run, 'lb1.sock') },
      // One balancer: a GRACEFUL_SHUTDOWN grace has no other path to move traffic to, so this test
      // drains straight to the withdraw (the grace itself is T19's, policy-maintenance.test.ts).
      drain: { grace: '0s' },
      // A non-root vipd can only run gobgpd as itself (docs/bgp.md): the unit's choice.
      speaker: { gobgp: { user: 'nobody', runtimeDir: run } },
    };
    fs.writeFileSync(config, stringify(lab.vipdConfig('lb1', overrides)), { mode: 0o644 });

    const setpriv = ['setpriv', '--reuid=65534', '--regid=65534', '--init-groups', '--inh-caps=-all,+net_admin', '--ambient-caps=-all,+net_admin', '--bounding-set=-all,+net_admin', '--no-new-privs'];
    const proc = lab.spawn('lb1', [...setpriv, process.execPath, VIPD_BIN, 'run', '--config', config], { name: 'vipd-t25', cwd: home });
    vipd = proc;
    await lab.tor.waitNexthops(PREFIX, 1, 30_000).catch((err) => {
      throw new Error(`${err}\n${proc.logTail()}`);
    });

    const status = fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8');
    const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
    const capEff = BigInt(`0x${field('CapEff')}`);
    console.log(`T25: vipd pid ${proc.pid} Uid ${field('Uid')} CapEff ${field('CapEff')} CapPrm ${field('CapPrm')} CapBnd ${field('CapBnd')} CapAmb ${field('CapAmb')} NoNewPrivs ${field('NoNewPrivs')}`);
    assert.match(field('Uid'), /^65534\s+65534\s+65534\s+65534$/);
    assert.equal(capEff, CAP_NET_ADMIN, 'CapEff is cap_net_admin alone');
    assert.equal(BigInt(`0x${field('CapBnd')}`), CAP_NET_ADMIN);
    assert.equal(field('NoNewPrivs'), '1');
    const vipOnLo = await lab.exec('lb1', ['ip', '-4', 'addr', 'show', 'dev', 'lo']);
    assert.match(vipOnLo.stdout, /198\.19\.0\.10\/32/, 'it put the VIP on lo with CAP_NET_ADMIN');

    const drainGone = watchNexthops(lab, PREFIX, 0);
    const drain = await timedVipdCli(lab, 'lb1', ['drain', '--config', config]);
    assert.equal(drain.code, 0, drain.stderr);
    const drainMs = (await drainGone) - drain.connectWall;
    console.log(`T25: drain over the admin socket of the unprivileged vipd -> path gone from the ToR ${drainMs} ms after the request (T19 bound ${T19_BOUND_MS} ms)`);
    assert.ok(drainMs <= T19_BOUND_MS, `withdrawn ${drainMs} ms after the request`);

    const undrain = await lab.vipdCli('lb1', ['undrain', '--config', config]);
    assert.equal(undrain.code, 0, undrain.stderr);
    await lab.tor.waitNexthops(PREFIX, 1, 15_000);

    const stopGone = watchNexthops(lab, PREFIX, 0);
    const stopAt = Date.now();
    proc.kill('SIGTERM');
    const stopMs = (await stopGone) - stopAt;
    const exit = await proc.exited;
    console.log(`T25: SIGTERM to the unprivileged vipd -> path gone from the ToR in ${stopMs} ms (bound ${T16_BOUND_MS} ms), exit ${exit.code}`);
    assert.ok(stopMs <= T16_BOUND_MS, `withdrawn ${stopMs} ms after SIGTERM`);
    assert.equal(exit.code, 0, proc.logTail());
    await sleep(100);
  });
});
