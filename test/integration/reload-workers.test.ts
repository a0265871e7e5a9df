import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { NetnsLab, type LabProcess } from '../lab/netns';
import { VIPD_BIN } from '../lab/topology';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * Reload with proxy.workers 2, against the real `vipd run` (speaker none) in a namespace the test
 * creates, asserted from real clients in that namespace: the data plane reloads in place in every
 * worker. An added backend takes new connections after its rise; a removed one takes none, while a
 * long-lived session to a backend that remains is not cut; an added VIP's listener (on an added pool)
 * serves. A key that cannot change in place is refused by name, line and "restart needed", and the
 * old config keeps serving; an attribute change is applied. `vipd reload` against no daemon: exit 1.
 *
 * Each backend answers a connection with its own port and a newline, then echoes, so a client knows
 * which backend it reached.
 */
let lab: NetnsLab;
let dir: string;
let vipd: LabProcess | undefined;
const VIP = '198.19.99.1';
const VIP2 = '198.19.99.2';
const PORT = 2379;
const PORT2 = 2380;
const [A, B, C] = [12001, 12002, 12003];
const key = (port: number): string => `127.0.0.1:${port}`;
/** rise 2 × interval 200 ms, plus a probe timeout and the workers' IPC, with room for a shared 2-core machine. */
const ADDED_BACKEND_BOUND_MS = 5000;
const BACKEND = `const port = Number(process.argv[1]);
require('net').createServer((s) => { s.on('error', () => {}); s.write(port + '\\n'); s.pipe(s); }).listen(port, '127.0.0.1')`;
/** Prints the port of the backend it reached; exit 1 if it reached none within 2 s. It speaks first: the proxy dials on the first byte. */
const CLIENT = `const s = require('net').connect(Number(process.argv[2]), process.argv[1]); const t = setTimeout(() => process.exit(1), 2000);
s.on('connect', () => s.write('x')); let got = '';
s.on('data', (d) => { got += d; if (got.includes('\\n')) { process.stdout.write(got.split('\\n')[0], () => process.exit(0)); } }); s.on('error', () => process.exit(1));`;
/** A long-lived flow: prints the backend it reached, then echoes a byte every 100 ms; prints CUT and exits when its session ends. */
const HOLDER = `const s = require('net').connect(${PORT}, '${VIP}'); let first = true; let sent = 0; let echoed = 0;
s.on('connect', () => s.write('h'));
s.on('data', (d) => { if (first) { first = false; console.log('BACKEND ' + String(d).split('\\n')[0]); setInterval(() => { s.write('p'); sent++; }, 100); } else { echoed += String(d).length; } });
setInterval(() => console.log('ECHOED ' + echoed + ' SENT ' + sent), 500);
s.on('close', () => { console.log('CUT'); process.exit(3); }); s.on('error', () => {});`;

interface Shape {
  readonly backends: readonly number[];
  readonly communities?: readonly string[];
  readonly nodeName?: string;
  /** Adds VIP2:PORT2 on pool `extra` (backend C). */
  readonly secondVip?: boolean;
}

function config(shape: Shape): string {
  const lines = [
    'node:',
    `  name: ${shape.nodeName ?? 'wk1'}`,
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
    `    communities: ${JSON.stringify(shape.communities ?? ['65000:100'])}`,
    '    listeners:',
    `      - port: ${PORT}`,
    '        pool: echo',
  ];
  if (shape.secondVip) lines.push('  - name: cp2', `    address: ${VIP2}`, '    listeners:', `      - port: ${PORT2}`, '        pool: extra');
  lines.push('pools:', '  echo:', `    balance: round-robin`, `    backends: ${JSON.stringify(shape.backends.map(key))}`, '    check:', '      interval: 200ms', '      timeout: 150ms');
  if (shape.secondVip) lines.push('  extra:', `    backends: ${JSON.stringify([key(C)])}`, '    check:', '      interval: 200ms', '      timeout: 150ms');
  return [...lines, ''].join('\n');
}

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [VIPD_BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The backend port a new client connection reached, or undefined when it was not served. */
async function reach(address = VIP, port = PORT): Promise<number | undefined> {
  const r = await lab.exec('wk', [process.execPath, '-e', CLIENT, address, String(port)], { timeoutMs: 10_000 });
  return r.code === 0 ? Number(r.stdout.trim()) : undefined;
}

async function spread(n: number): Promise<Map<number | undefined, number>> {
  const counts = new Map<number | undefined, number>();
  for (let i = 0; i < n; i++) {
    const b = await reach();
    counts.set(b, (counts.get(b) ?? 0) + 1);
  }
  return counts;
}

const show = (counts: Map<number | undefined, number>): string =>
  [...counts].map(([b, n]) => `${b === undefined ? 'unserved' : b === A ? 'A' : b === B ? 'B' : b === C ? 'C' : b}=${n}`).join(' ');

let file: string;
function reload(shape: Shape): { code: number | null; stdout: string; stderr: string } {
  writeFileSync(file, config(shape));
  return cli(['reload', '--config', file]);
}

before(async () => {
  requirePrerequisites(['ip']);
  lab = await NetnsLab.create();
  dir = join(lab.dir, 'vipd');
  mkdirSync(dir);
  file = join(dir, 'vipd.yaml');
  await lab.addNode('wk');
  for (const address of [VIP, VIP2]) {
    const r = await lab.exec('wk', ['ip', 'addr', 'add', `${address}/32`, 'dev', 'lo']);
    assert.equal(r.code, 0, r.stderr);
  }
  for (const port of [A, B, C]) lab.spawn('wk', [process.execPath, '-e', BACKEND, String(port)], { name: `backend${port}` });
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

test('reload with proxy.workers 2 applies backends, pools and listeners in place, from a real client', { timeout: 120_000 }, async () => {
  writeFileSync(file, config({ backends: [A, B] }));
  const none = cli(['reload', '--config', file]);
  console.log(`reload against no daemon: exit ${none.code} (bound 1): ${none.stderr.trim()}`);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no vipd answering on .*wk1\.sock: is it running\?/);

  const proc = lab.spawn('wk', [process.execPath, VIPD_BIN, 'run', '--config', file], { name: 'vipd' });
  vipd = proc;
  let deadline = Date.now() + 20_000;
  // Both backends up (round-robin spreads over them) before the flows start.
  let startSpread = new Map<number | undefined, number>();
  while (!((startSpread = await spread(4)).size === 2 && !startSpread.has(undefined))) {
    assert.ok(Date.now() < deadline, `vipd never served both backends (last: ${show(startSpread)})\n${proc.logTail()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log(`workers 2, before reload: ${show(await spread(10))}`);

  // Long-lived flows: at least one on B, which every reload below keeps.
  const holders: Array<{ proc: LabProcess; backend: number }> = [];
  for (let i = 0; i < 6 && !holders.some((h) => h.backend === B); i++) {
    const h = lab.spawn('wk', [process.execPath, '-e', HOLDER], { name: `holder${i}` });
    deadline = Date.now() + 5000;
    let m: RegExpMatchArray | null = null;
    while (!(m = h.logTail(50).match(/BACKEND (\d+)/))) {
      assert.ok(Date.now() < deadline && h.running, `holder ${i} never got a backend\n${h.logTail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    holders.push({ proc: h, backend: Number(m[1]) });
  }
  const onB = holders.find((h) => h.backend === B);
  assert.ok(onB, 'no long-lived flow landed on B');

  // 1. Add backend C: it takes new connections once it has risen.
  const t0 = Date.now();
  const added = reload({ backends: [A, B, C] });
  assert.equal(added.code, 0, added.stderr);
  console.log(`workers reload adding C: exit ${added.code}: ${added.stdout.trim().split('\n')[0]}`);
  let firstOnC: number | undefined;
  while (firstOnC === undefined) {
    if ((await reach()) === C) firstOnC = Date.now() - t0;
    else assert.ok(Date.now() - t0 < ADDED_BACKEND_BOUND_MS * 2, `C never took a connection\n${proc.logTail()}`);
  }
  console.log(`workers 2: added backend C took its first new connection ${firstOnC} ms after the reload (bound ${ADDED_BACKEND_BOUND_MS} ms: rise 2 x 200 ms + slack)`);
  assert.ok(firstOnC <= ADDED_BACKEND_BOUND_MS);
  const withC = await spread(12);
  console.log(`workers 2, after adding C, 12 new connections: ${show(withC)}`);
  assert.ok((withC.get(C) ?? 0) >= 2, 'C takes its share of new connections in both workers');
  assert.equal(withC.get(undefined), undefined, 'a client was not served');

  // 2. Remove A: no new connection reaches it; the flow on B carries on.
  const removed = reload({ backends: [B, C] });
  assert.equal(removed.code, 0, removed.stderr);
  console.log(`workers reload removing A: exit ${removed.code}: ${removed.stdout.trim().split('\n')[0]}`);
  const withoutA = await spread(12);
  console.log(`workers 2, after removing A, 12 new connections: ${show(withoutA)} (bound A=0)`);
  assert.equal(withoutA.get(A), undefined, 'the removed backend A took new connections');
  assert.equal(withoutA.get(undefined), undefined, 'a client was not served');

  // 3. Add a VIP with its own pool: its listener serves in the workers.
  const vipAdded = reload({ backends: [B, C], secondVip: true });
  assert.equal(vipAdded.code, 0, vipAdded.stderr);
  console.log(`workers reload adding VIP cp2 (${VIP2}:${PORT2}, pool extra): exit ${vipAdded.code}: ${vipAdded.stdout.trim().split('\n')[0]}`);
  const t1 = Date.now();
  while ((await reach(VIP2, PORT2)) !== C) assert.ok(Date.now() - t1 < ADDED_BACKEND_BOUND_MS * 2, `the added VIP never served\n${proc.logTail()}`);
  console.log(`workers 2: added VIP listener ${VIP2}:${PORT2} served a real client (backend C) ${Date.now() - t1} ms after the reload returned`);
  let twice = 0;
  for (let i = 0; i < 6; i++) if ((await reach(VIP2, PORT2)) === C) twice++;
  console.log(`workers 2: added VIP listener served ${twice} of 6 further clients (bound 6)`);
  assert.equal(twice, 6);

  // 4. A key that cannot change in place: refused by name, nothing changes.
  const refused = reload({ backends: [B, C], secondVip: true, nodeName: 'wk2' });
  console.log(`workers reload of node.name: exit ${refused.code} (bound non-zero): ${refused.stderr.trim().split('\n').slice(1).join(' | ')}`);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /vipd\.yaml:\d+:\d+: node\.name: restart needed/);
  assert.notEqual(await reach(), undefined, 'the old config stopped serving after a refused reload');

  // 5. Attributes only.
  const applied = reload({ backends: [B, C], secondVip: true, communities: ['65000:200'] });
  console.log(`workers reload of an attribute change: exit ${applied.code} (bound 0): ${applied.stdout.trim().split('\n')[0]}`);
  assert.equal(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /reload applied: vips ~cp\(communities\)/);

  const flow = onB.proc.logTail(200);
  const echoed = [...flow.matchAll(/ECHOED (\d+) SENT (\d+)/g)].at(-1);
  console.log(`workers 2: long-lived flow on B through 5 reloads: ${onB.proc.running ? 'still open' : 'CUT'}, ${echoed?.[1]} bytes echoed back for ${echoed?.[2]} sent (the first reply also carries the backend's greeting) (bound: open)`);
  assert.ok(onB.proc.running && !/^CUT$/m.test(flow), `the flow to B, which remained, was cut\n${flow}`);
  assert.ok(Number(echoed?.[1] ?? 0) > 0);
  for (const h of holders) await h.proc.stop(1000);
  assert.ok(proc.running, 'vipd is still running');
});
