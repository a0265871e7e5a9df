import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NetnsLab, type LabProcess } from '../lab/netns';
import { VIPD_BIN } from '../lab/topology';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * Reload with proxy.workers > 1, against the real `vipd run` (speaker none) in a namespace the test
 * creates: the workers' listeners and pools are fixed at start, so a reload that changes a pool is
 * refused by key, with line and reason, and changes nothing (a client in the namespace still gets
 * through); one that changes only what is announced (communities) is applied. `vipd reload` against no
 * daemon: exit 1 with a clear error.
 */
let lab: NetnsLab;
let dir: string;
let vipd: LabProcess | undefined;
const VIP = '198.19.99.1';
const PORT = 2379;
const BACKEND_PORTS = [12001, 12002];
const backends = BACKEND_PORTS.map((p) => ({ endpoint: { key: `127.0.0.1:${p}` } }));
const ECHO = "require('net').createServer((s) => s.pipe(s)).listen(Number(process.argv[1]), '127.0.0.1')";
const CLIENT = `const s = require('net').connect(${PORT}, '${VIP}'); const t = setTimeout(() => process.exit(1), 2000);
s.on('connect', () => s.write('x')); s.on('data', () => process.exit(0)); s.on('error', () => process.exit(1));`;

function config(extra: { communities?: string[]; backends?: string[] }): string {
  const bs = extra.backends ?? backends.map((b) => b.endpoint.key);
  return [
    'node:',
    '  name: wk1',
    `stateDir: ${join(dir, 'state')}`,
    'admin:',
    '  listen: 127.0.0.1:9180',
    `  socket: ${join(dir, 'wk1.sock')}`,
    'net:',
    '  manageAddresses: false',
    'proxy:',
    '  workers: 2',
    'speaker:',
    '  driver: none',
    'vips:',
    '  - name: cp',
    `    address: ${VIP}`,
    `    communities: ${JSON.stringify(extra.communities ?? ['65000:100'])}`,
    '    listeners:',
    `      - port: ${PORT}`,
    '        pool: echo',
    'pools:',
    '  echo:',
    `    backends: ${JSON.stringify(bs)}`,
    '    check:',
    '      interval: 200ms',
    '      timeout: 150ms',
    '',
  ].join('\n');
}

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [VIPD_BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function echo(): Promise<boolean> {
  return (await lab.exec('wk', [process.execPath, '-e', CLIENT], { timeoutMs: 10_000 })).code === 0;
}

before(async () => {
  requirePrerequisites(['ip']);
  lab = await NetnsLab.create();
  dir = join(lab.dir, 'vipd');
  mkdirSync(dir);
  await lab.addNode('wk');
  const r = await lab.exec('wk', ['ip', 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  assert.equal(r.code, 0, r.stderr);
  for (const port of BACKEND_PORTS) lab.spawn('wk', [process.execPath, '-e', ECHO, String(port)], { name: `echo${port}` });
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

test('reload with proxy.workers 2: pool changes refused by key and line, old config serves; attribute change applied; no daemon: exit 1', { timeout: 60_000 }, async () => {
  const file = join(dir, 'vipd.yaml');
  const none = cli(['reload', '--config', (writeFileSync(file, config({})), file)]);
  console.log(`reload against no daemon: exit ${none.code} (bound 1): ${none.stderr.trim()}`);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no vipd answering on .*wk1\.sock: is it running\?/);

  const proc = lab.spawn('wk', [process.execPath, VIPD_BIN, 'run', '--config', file], { name: 'vipd' });
  vipd = proc;
  const deadline = Date.now() + 20_000;
  while (!(await echo())) {
    assert.ok(Date.now() < deadline, `vipd never served\n${proc.logTail()}`);
    await new Promise((r) => setTimeout(r, 200));
  }

  writeFileSync(file, config({ backends: [backends[0]!.endpoint.key] }));
  const refused = cli(['reload', '--config', file]);
  console.log(`workers reload of a pool change: exit ${refused.code} (bound non-zero): ${refused.stderr.trim().split('\n').slice(1).join(' | ')}`);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /vipd\.yaml:\d+:\d+: pools\.echo: restart needed: with proxy\.workers 2/);
  assert.ok(await echo(), 'the old config stopped serving after a refused reload');

  writeFileSync(file, config({ communities: ['65000:200'] }));
  const applied = cli(['reload', '--config', file]);
  console.log(`workers reload of an attribute change: exit ${applied.code} (bound 0): ${applied.stdout.trim()}`);
  assert.equal(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /reload applied: vips ~cp\(communities\)/);
  assert.ok(await echo());
  assert.ok(proc.running, 'vipd is still running');
});
