import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { privateDirPrefix, removeStaleDirs } from '../../src/speaker/gobgp/runtime-dir';

/** A pid that no process has: a child that has already exited. */
function deadPid(): number {
  const child = spawnSync('true');
  assert.ok(child.pid !== undefined && child.pid > 0);
  return child.pid;
}

function makeDir(parent: string, name: string): string {
  const dir = path.join(parent, name);
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'gobgpd.toml'), '# test\n');
  return dir;
}

describe('gobgpd private directories left behind', () => {
  let parent: string;
  const servers: net.Server[] = [];

  before(() => {
    parent = fs.mkdtempSync(path.join(os.tmpdir(), 'vipd-runtime-test-'));
  });

  after(async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    fs.rmSync(parent, { recursive: true, force: true });
  });

  it('names the directory after this vipd, so a later one can tell whose it is', () => {
    assert.equal(privateDirPrefix('/run/vipd', 4242), '/run/vipd/vipd-gobgpd-4242-');
    const dir = fs.mkdtempSync(privateDirPrefix(parent));
    assert.match(path.basename(dir), new RegExp(`^vipd-gobgpd-${process.pid}-[A-Za-z0-9]{6}$`));
    fs.rmSync(dir, { recursive: true });
  });

  it('removes only the directories of vipd instances that are gone', async () => {
    const gone = deadPid();
    const stale = makeDir(parent, `vipd-gobgpd-${gone}-aB3dE6`);
    const staleWithDeadSocket = makeDir(parent, `vipd-gobgpd-${gone}-Zz9Yy8`);
    // What a killed gobgpd leaves: a socket file that nobody listens on any more.
    const socketPath = path.join(staleWithDeadSocket, 'api.sock');
    const killed = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    assert.equal(killed.signal, 'SIGKILL');
    assert.ok(fs.lstatSync(socketPath).isSocket());

    const ownerAlive = makeDir(parent, `vipd-gobgpd-${process.ppid}-Qq1Ww2`);
    const mine = makeDir(parent, `vipd-gobgpd-${process.pid}-Ee3Rr4`);
    // Dead pid as seen from here, but its gobgpd answers: a vipd in another PID namespace.
    const otherNamespace = makeDir(parent, `vipd-gobgpd-${gone}-Tt5Yy6`);
    const live = net.createServer((c) => c.destroy());
    servers.push(live);
    // Where a gobgpd running as its own user has its socket: the api/ subdirectory it owns.
    fs.mkdirSync(path.join(otherNamespace, 'api'));
    await new Promise<void>((resolve) => live.listen(path.join(otherNamespace, 'api', 'api.sock'), resolve));
    const olderVersion = makeDir(parent, 'vipd-gobgpd-Uu7Ii8');
    const unrelated = makeDir(parent, `something-${gone}-Oo9Pp0`);
    const target = makeDir(parent, 'target');
    fs.symlinkSync(target, path.join(parent, `vipd-gobgpd-${gone}-Ll1Kk2`));

    const removed = await removeStaleDirs(parent);

    assert.deepEqual(
      removed.map((r) => [path.basename(r.dir), r.ownerPid]).sort(),
      [
        [path.basename(stale), gone],
        [path.basename(staleWithDeadSocket), gone],
      ].sort(),
    );
    assert.equal(fs.existsSync(stale), false);
    assert.equal(fs.existsSync(staleWithDeadSocket), false);
    for (const kept of [ownerAlive, mine, otherNamespace, olderVersion, unrelated, target]) {
      assert.ok(fs.existsSync(path.join(kept, 'gobgpd.toml')), `${path.basename(kept)} must be kept`);
    }
    assert.ok(fs.lstatSync(path.join(parent, `vipd-gobgpd-${gone}-Ll1Kk2`)).isSymbolicLink(), 'a symlink is never followed or removed');
  });

  it('finds nothing to do in a runtime directory that does not exist', async () => {
    assert.deepEqual(await removeStaleDirs(path.join(parent, 'missing')), []);
  });
});
