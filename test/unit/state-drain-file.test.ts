import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { DrainStateFile, drainStateFile } from '../../src/state/drain-state-file';
import { EMPTY_DRAIN_STATE, type DrainState } from '../../src/state/state';
import { seededRandom } from '../fakes/seeded-random';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'vipd-state-test-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const drained: DrainState = {
  node: { source: 'admin socket /run/vipd/lb1.sock', at: '2026-12-06T07:00:00.000Z' },
  backends: [{ pool: 'etcd', backend: '198.18.21.2:2379', source: 'admin socket /run/vipd/lb1.sock', at: '2026-12-06T07:01:00.000Z' }],
};

test('state: no file is an empty state (first start)', async () => {
  const store = new DrainStateFile(tempDir(), 'lb1');
  assert.deepEqual(await store.load(), EMPTY_DRAIN_STATE);
});

test('state: save then load gives the same drains, in <stateDir>/<node>.state.json', async () => {
  const dir = tempDir();
  const store = new DrainStateFile(dir, 'lb1');
  await store.save(drained);
  assert.equal(store.file, path.join(dir, 'lb1.state.json'));
  assert.deepEqual(await new DrainStateFile(dir, 'lb1').load(), drained);
  await store.save({ backends: [] });
  assert.deepEqual(await store.load(), { backends: [] });
  assert.deepEqual(readdirSync(dir), ['lb1.state.json'], 'no temporary file is left behind');
});

test('state: a node name cannot point outside stateDir', () => {
  assert.equal(drainStateFile('/var/lib/vipd', '../etc/x'), '/var/lib/vipd/..%2Fetc%2Fx.state.json');
});

test('state: saves run in call order; the last one wins', async () => {
  const store = new DrainStateFile(tempDir(), 'lb1');
  const saves = Array.from({ length: 20 }, (_, i) => store.save({ backends: [{ pool: 'p', backend: `198.18.21.2:${1000 + i}`, source: 's', at: drained.node!.at }] }));
  await Promise.all(saves);
  assert.equal((await store.load()).backends[0]!.backend, '198.18.21.2:1019');
});

const invalid: Array<[string, string, RegExp]> = [
  ['torn JSON', '{"version":1,"node":"lb1","nodeDr', /not valid JSON/],
  ['empty file', '', /not valid JSON/],
  ['wrong version', JSON.stringify({ version: 2, node: 'lb1', nodeDrain: null, backendDrains: [] }), /version/],
  ['another node', JSON.stringify({ version: 1, node: 'lb2', nodeDrain: null, backendDrains: [] }), /belongs to node "lb2"/],
  ['bad time', JSON.stringify({ version: 1, node: 'lb1', nodeDrain: { source: 'x', at: 'yesterday' }, backendDrains: [] }), /nodeDrain\.at: not an ISO 8601 time/],
  ['unknown key', JSON.stringify({ version: 1, node: 'lb1', nodeDrain: null, backendDrains: [], extra: 1 }), /extra/],
  ['no source', JSON.stringify({ version: 1, node: 'lb1', nodeDrain: null, backendDrains: [{ pool: 'p', backend: 'b', at: drained.node!.at }] }), /backendDrains\.0\.source/],
];
for (const [name, text, message] of invalid) {
  test(`state: an invalid file is an error naming the file (${name})`, async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, 'lb1.state.json'), text);
    await assert.rejects(new DrainStateFile(dir, 'lb1').load(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'VIPD_ERR_STATE');
      assert.match(err.message, new RegExp(`drain state ${path.join(dir, 'lb1.state.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      assert.match(err.message, message);
      return true;
    });
  });
}

test('state: an unreadable file is an error, not an empty state', async () => {
  const dir = tempDir();
  // A directory where the file should be: readFile fails with EISDIR whatever the user (root too).
  rmSync(path.join(dir, 'lb1.state.json'), { force: true });
  require('node:fs').mkdirSync(path.join(dir, 'lb1.state.json'));
  await assert.rejects(new DrainStateFile(dir, 'lb1').load(), /cannot be read/);
});

test('state: a crash between write and rename leaves the old file, and the stale temporary is removed at load', async () => {
  const dir = tempDir();
  const store = new DrainStateFile(dir, 'lb1');
  await store.save(drained);
  // What a process killed after writing its temporary, before the rename, leaves behind.
  const stale = path.join(dir, '.lb1.state.json.4242.deadbeef.tmp');
  writeFileSync(stale, '{"version":1,"node":"lb1","nodeDrain":null,"backe');
  assert.deepEqual(await store.load(), drained);
  assert.equal(existsSync(stale), false);
});

test('state: a writer SIGKILLed at random moments never leaves a torn file (seed 9034, 40 kills)', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'lb1.state.json');
  await new DrainStateFile(dir, 'lb1').save(drained);
  const modulePath = path.join(__dirname, '..', '..', 'src', 'state', 'drain-state-file.js');
  // The writer saves states of very different sizes in a loop, so a torn or partial write would show.
  const writer = `
    const { DrainStateFile } = require(${JSON.stringify(modulePath)});
    const store = new DrainStateFile(${JSON.stringify(dir)}, 'lb1');
    let i = 0;
    (async () => {
      process.send('ready');
      for (;;) {
        i++;
        const n = (i * 7919) % 200;
        const backends = Array.from({ length: n }, (_, k) => ({ pool: 'etcd', backend: '198.18.21.2:' + (1000 + k), source: 'writer ' + i, at: new Date().toISOString() }));
        await store.save({ ...(i % 2 ? { node: { source: 'writer ' + i, at: new Date().toISOString() } } : {}), backends });
      }
    })();
  `;
  const random = seededRandom(9034);
  let torn = 0;
  let parsedBackends = 0;
  for (let kill = 0; kill < 40; kill++) {
    const child = spawn(process.execPath, ['-e', writer], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    await new Promise<void>((resolve) => child.once('message', () => resolve()));
    await new Promise((resolve) => setTimeout(resolve, 2 + Math.floor(random() * 40)));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const text = readFileSync(file, 'utf8');
    try {
      const json = JSON.parse(text) as { backendDrains: unknown[] };
      parsedBackends += json.backendDrains.length;
    } catch {
      torn++;
    }
    // And the store itself accepts what is there (and sweeps the killed writer's temporary).
    await new DrainStateFile(dir, 'lb1').load();
    assert.deepEqual(readdirSync(dir), ['lb1.state.json']);
  }
  console.log(`state: 40 SIGKILLs of a writer in a save loop: ${torn} torn files, ${parsedBackends} backend drains parsed in total`);
  assert.equal(torn, 0);
  assert.ok(parsedBackends > 0, 'the writer did replace the file between kills');
});

test('state: vipd run refuses to start on an invalid state file, naming it, before it binds or announces anything', async () => {
  const dir = tempDir();
  const stateDir = path.join(dir, 'state');
  require('node:fs').mkdirSync(stateDir);
  writeFileSync(path.join(stateDir, 'lb-invalid.state.json'), '{"version":1,"node":"lb-invalid","nodeDrain":{"sou');
  const configFile = path.join(dir, 'vipd.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      node: { name: 'lb-invalid' },
      stateDir,
      // Never bound: the start fails before the admin server starts.
      admin: { listen: '127.0.0.1:19999' },
      net: { interface: 'lo', manageAddresses: false },
      shutdown: { grace: '0s' },
      speaker: { driver: 'none' },
      vips: [{ name: 'api', address: '198.19.0.10', listeners: [{ port: 6443, pool: 'p' }] }],
      pools: { p: { backends: ['198.18.21.2:6443'] } },
    }),
  );
  const bin = path.join(__dirname, '..', '..', 'src', 'cli', 'bin.js');
  const child = spawn(process.execPath, [bin, 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  assert.equal(code, 1, out);
  assert.match(out, /vipd failed to start: drain state \S+lb-invalid\.state\.json is not valid JSON/);
  assert.doesNotMatch(out, /"event":"route","op":"announce"/);
});
