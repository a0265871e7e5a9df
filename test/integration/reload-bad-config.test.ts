import assert from 'node:assert/strict';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, sleep, type Lab, type LabProcess } from '../lab';
import { REPO_ROOT } from '../lab/util';
import type { TrafficReport } from '../lab/traffic';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * T22 (malformed config) against the real daemon in the namespace lab. Each bad file goes through
 * `vipd check-config` (non-zero exit naming key and line) and through a reload of the running daemon
 * (`vipd reload`, or SIGHUP where the CLI cannot even read the file): the reload is rejected with the
 * key named, `vipd reload` exits non-zero, vipd_config_reloads_total{result="rejected"} moves by one,
 * and the old config keeps serving: a real client still gets through the VIP and the route is still
 * at the ToR. A VIP that is not a host address, or a backend equal to the VIP, is never announced.
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const TRAFFIC_JS = join(REPO_ROOT, 'dist', 'test', 'lab', 'traffic.js');

let lab: Lab;
let configPath: string;
let good: string;
let vipd: LabProcess | undefined;

before(async () => {
  requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd', 'curl']);
  lab = await createLab({ balancers: 1, backends: 'etcd' });
  configPath = lab.writeVipdConfig('lb1');
  good = readFileSync(configPath, 'utf8');
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

function replaceOnce(text: string, from: string | RegExp, to: string): string {
  const out = text.replace(from, to);
  assert.notEqual(out, text, `test anchor ${String(from)} not in the lab config`);
  return out;
}

interface BadCase {
  readonly name: string;
  /** The bad file's text, from the good one. */
  readonly text: (good: string) => string;
  /** The key the errors must name (check-config and reload). */
  readonly key: RegExp;
  /** check-config refuses it (false: a valid file whose change needs a restart). */
  readonly invalid: boolean;
  /** Reload through SIGHUP instead of the CLI (the CLI cannot read the file to find the socket). */
  readonly signal?: boolean;
}

const cases: BadCase[] = [
  { name: 'broken YAML', text: (g) => `${g}\nvips: [\n`, key: /\(yaml\)/, invalid: true },
  { name: 'schema error (rise 0)', text: (g) => replaceOnce(g, /rise: 2/, 'rise: 0'), key: /pools\.etcd\.check\.rise/, invalid: true },
  { name: 'unknown key', text: (g) => replaceOnce(g, /balance: least-conn/, 'balance: least-conn\n    colour: blue'), key: /pools\.etcd\.colour/, invalid: true },
  { name: 'VIP not a host address', text: (g) => replaceOnce(g, /address: 198\.19\.0\.10/, 'address: 198.19.0.0/24'), key: /vips\[0\]\.address/, invalid: true },
  { name: 'backend equal to the VIP', text: (g) => replaceOnce(g, /- 198\.18\.22\.2:2379/, '- 198.19.0.10:2379'), key: /pools\.etcd\.backends\[1\]/, invalid: true },
  { name: 'restart needed: node.name', text: (g) => replaceOnce(g, /name: lb1/, 'name: lb9'), key: /node\.name.*restart needed/, invalid: false },
  { name: 'restart needed: speaker.asn', text: (g) => replaceOnce(g, /asn: 65001/, 'asn: 65099'), key: /speaker\.asn.*restart needed/, invalid: false },
  { name: 'unreadable file', text: () => '', key: /cannot read config: ENOENT/, invalid: false, signal: true },
];

async function rejectedCount(): Promise<number> {
  const r = await lab.exec('lb1', ['curl', '-sS', '-m', '3', 'http://127.0.0.1:9180/metrics']);
  assert.equal(r.code, 0, r.stderr);
  const line = r.stdout.split('\n').find((l) => l.startsWith('vipd_config_reloads_total{result="rejected"}'));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

async function clientWorks(): Promise<TrafficReport> {
  const r = await lab.exec('client', [process.execPath, TRAFFIC_JS, '--target', `${VIP}:2379`, '--rate', '50', '--duration', '1000'], { timeoutMs: 20_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrafficReport;
}

test('T22: bad configs: check-config names key and line; a reload is rejected, counted, and the old config keeps serving', { timeout: 240_000 }, async () => {
  const proc = lab.startVipd('lb1', configPath);
  vipd = proc;
  await lab.tor.waitNexthops(PREFIX, 1, 30_000).catch((err) => {
    throw new Error(`${err}\n${proc.logTail()}`);
  });

  for (const c of cases) {
    const before = await rejectedCount();
    let checkLine = c.signal ? 'check-config: not run (there is no file to check)' : 'check-config: valid (the change needs a restart, which only a reload can tell)';
    let reloadLine: string;
    if (c.signal) {
      renameSync(configPath, `${configPath}.moved`);
      assert.ok(proc.kill('SIGHUP'));
      await sleep(1000);
      renameSync(`${configPath}.moved`, configPath);
      const logged = proc.readLog().split('\n').filter((l) => l.includes('"event":"reload"') && l.includes('"result":"rejected"')).at(-1) ?? '';
      assert.match(logged, c.key, `the rejection is logged with its reason: ${logged}`);
      reloadLine = `SIGHUP: rejected and logged (${logged.match(c.key)?.[0]})`;
    } else {
      writeFileSync(configPath, c.text(good));
      const check = await lab.vipdCli('lb1', ['check-config', configPath]);
      if (c.invalid) {
        assert.notEqual(check.code, 0, `check-config accepted ${c.name}`);
        assert.match(check.stderr, c.key, `check-config names the key: ${check.stderr}`);
        assert.match(check.stderr, /:\d+:\d+: /, `check-config names the line: ${check.stderr}`);
        checkLine = `check-config exit ${check.code}: ${check.stderr.split('\n').find((l) => c.key.test(l))?.trim()}`;
      } else {
        assert.equal(check.code, 0, check.stderr);
      }
      const reload = await lab.vipdCli('lb1', ['reload', '--config', configPath]);
      assert.notEqual(reload.code, 0, `vipd reload accepted ${c.name}: ${reload.stdout}`);
      assert.match(reload.stderr, c.key, `vipd reload names the key: ${reload.stderr}`);
      assert.match(reload.stderr, /:\d+:\d+: /, `vipd reload names the line: ${reload.stderr}`);
      reloadLine = `vipd reload exit ${reload.code}: ${reload.stderr.split('\n').find((l) => c.key.test(l))?.trim()}`;
      writeFileSync(configPath, good);
    }
    const after = await rejectedCount();
    const t = await clientWorks();
    const nexthops = (await lab.tor.torRoute(PREFIX))?.nexthops.length ?? 0;
    console.log(`T22 ${c.name}: ${checkLine}; ${reloadLine}; rejected counter ${before}->${after} (bound +1); client ${t.ok}/${t.attempted} ok (bound 0 failed); route at the ToR: ${nexthops} next hop (bound 1)`);
    assert.equal(after, before + 1, 'the rejected counter moved by one');
    assert.equal(t.failed, 0, `the old config stopped serving: ${JSON.stringify(t.errors)}`);
    assert.equal(nexthops, 1, 'the route left the ToR');
    assert.ok(proc.running, `vipd exited\n${proc.logTail()}`);
  }

  // Never announced: the bad VIP and the self-proxying backend never reached the ToR.
  const wide = await lab.tor.bgpRoute('198.19.0.0/24');
  console.log(`T22: ToR route for 198.19.0.0/24: ${wide ? 'PRESENT' : 'none'} (bound none)`);
  assert.equal(wide, null);
  const good2 = await lab.vipdCli('lb1', ['reload', '--config', configPath]);
  assert.equal(good2.code, 0, good2.stderr);
  console.log(`T22: the good file again: ${good2.stdout.trim()}`);
});
