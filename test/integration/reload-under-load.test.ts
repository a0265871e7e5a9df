import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, sleep, type Lab, type LabProcess } from '../lab';
import { REPO_ROOT } from '../lab/util';
import type { TrafficReport } from '../lab/traffic';
import type { LongFlowsReport } from '../fakes/long-flows-client';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * T21 (reload under load), against the real daemon in the namespace lab, asserted from outside: a real
 * client's new connections and long-lived flows, and the FRR ToR's own neighbor counters.
 * - 10 valid reloads in 20 s (half by SIGHUP, half by `vipd reload`), alternating two configs that
 *   differ in check settings and pool settings but not in what is announced;
 * - 500 new connections/s and 200 long-lived keep-alive flows through the VIP meanwhile.
 * Bounds (RELIABILITY.md T21): 0 failed new connections; every long-lived flow kept (every backend
 * survives these reloads); 0 BGP session resets (FRR's connectionsEstablished/connectionsDropped for
 * lb1 unchanged); 0 UPDATEs received at the ToR (the VIP's attributes never change).
 * Then: a reload that adds a backend (it gets connections after its rise) and one that removes it
 * (its established flows drain and keep working; it gets no new connection), seen from the client
 * and from the backend's kernel socket table.
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const TRAFFIC_JS = join(REPO_ROOT, 'dist', 'test', 'lab', 'traffic.js');
const FLOWS_JS = join(REPO_ROOT, 'dist', 'test', 'fakes', 'long-flows-client.js');
const RELOADS = 10;
const RELOAD_WINDOW_MS = 20_000;
const RATE = 500;
const FLOWS = 200;

let lab: Lab;
let configPath: string;
let vipd: LabProcess | undefined;

before(async () => {
  requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd', 'ss']);
  lab = await createLab({ balancers: 1, backends: 'etcd' });
});

after(async () => {
  await vipd?.stop(5000);
  await lab?.destroy();
});

/** Two configs that differ only in what reloads in place without touching the route. */
function variant(n: number, backends?: string[]): Record<string, unknown> {
  const odd = n % 2 === 1;
  return {
    pools: {
      etcd: {
        ...(backends ? { backends } : {}),
        check: { kind: 'http', path: '/health', interval: odd ? '250ms' : '200ms', timeout: '150ms', rise: 2, fall: 2 },
        queue: { size: odd ? 16 : 0 },
        timeouts: { idle: odd ? '10m' : '0s' },
      },
    },
  };
}

async function reloadCli(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return lab.vipdCli('lb1', ['reload', '--config', configPath]);
}

async function lb1Counters() {
  const peers = await lab.tor.bgpSummary();
  const lb1 = peers.find((p) => p.address === lab.balancer('lb1').v4);
  assert.ok(lb1, `ToR has no neighbor ${lab.balancer('lb1').v4}: ${JSON.stringify(peers)}`);
  return lb1;
}

async function metric(name: string): Promise<number> {
  const r = await lab.exec('lb1', ['curl', '-sS', '-m', '3', 'http://127.0.0.1:9180/metrics']);
  const line = r.stdout.split('\n').find((l) => l.startsWith(name));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** Established TCP connections on a backend's etcd port from lb1 (the backend's own kernel table). */
async function connectionsOn(backend: string): Promise<number> {
  const r = await lab.exec(backend, ['ss', '-tnH', 'state', 'established', `( sport = :2379 and dst ${lab.balancer('lb1').v4} )`]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

test('T21: 10 reloads in 20 s under 500 conn/s and 200 long-lived flows: 0 failed, flows kept, 0 session resets, 0 UPDATEs', { timeout: 180_000 }, async () => {
  configPath = lab.writeVipdConfig('lb1', variant(0));
  const proc = lab.startVipd('lb1', configPath);
  vipd = proc;
  await lab.tor.waitNexthops(PREFIX, 1, 30_000).catch((err) => {
    throw new Error(`${err}\n${proc.logTail()}`);
  });
  // Let the first UPDATE and any route refresh settle before the counters are read.
  await sleep(2000);
  const before = await lb1Counters();

  const durationMs = RELOAD_WINDOW_MS + 3000;
  const flows = lab.exec('client', [process.execPath, FLOWS_JS, '--target', `${VIP}:2379`, '--flows', String(FLOWS), '--duration', String(durationMs + 1000)], { timeoutMs: durationMs + 30_000 });
  await sleep(1000);
  const traffic = lab.exec('client', [process.execPath, TRAFFIC_JS, '--target', `${VIP}:2379`, '--rate', String(RATE), '--duration', String(durationMs)], { timeoutMs: durationMs + 30_000 });
  await sleep(1000);

  const results: string[] = [];
  const started = performance.now();
  for (let i = 1; i <= RELOADS; i++) {
    lab.writeVipdConfig('lb1', variant(i));
    if (i % 2 === 0) {
      const r = await reloadCli();
      assert.equal(r.code, 0, `vipd reload #${i}: ${r.stderr}\n${proc.logTail()}`);
      results.push(r.stdout.trim().split('\n')[0]!);
    } else {
      assert.ok(proc.kill('SIGHUP'), 'SIGHUP sent');
      results.push('SIGHUP');
    }
    const due = started + (i * RELOAD_WINDOW_MS) / RELOADS;
    await sleep(Math.max(0, due - performance.now()));
  }
  const windowMs = performance.now() - started;

  const t = JSON.parse((await traffic).stdout.trim().split('\n').pop()!) as TrafficReport;
  const f = JSON.parse((await flows).stdout.trim().split('\n').pop()!) as LongFlowsReport;
  const afterCounters = await lb1Counters();
  const applied = await metric('vipd_config_reloads_total{result="applied"}');
  const rejected = await metric('vipd_config_reloads_total{result="rejected"}');
  const resets = afterCounters.connectionsDropped - before.connectionsDropped + (afterCounters.connectionsEstablished - before.connectionsEstablished);
  const updates = afterCounters.updatesReceived - before.updatesReceived;

  console.log(`T21: ${RELOADS} reloads in ${Math.round(windowMs)} ms (bound: 10 in 20 s), applied ${applied} by the daemon's counter, rejected ${rejected}; CLI said: ${results.filter((r) => r !== 'SIGHUP').join(' | ')}`);
  console.log(`T21: new connections: ${t.attempted} attempted at ${RATE}/s, ${t.failed} failed (bound 0), p99 ${Math.round(t.p99Ms)} ms; errors ${JSON.stringify(t.errors)}`);
  console.log(`T21: long-lived flows: ${f.kept}/${f.flows} kept (bound ${FLOWS}), ${f.answered}/${f.requests} requests answered, lost ${JSON.stringify(f.lost)}`);
  console.log(`T21: BGP session resets at the ToR: ${resets} (bound 0; established ${before.connectionsEstablished}->${afterCounters.connectionsEstablished}, dropped ${before.connectionsDropped}->${afterCounters.connectionsDropped}); UPDATEs received: ${updates} (bound 0)`);

  assert.equal(applied, RELOADS, `every reload applied\n${proc.logTail()}`);
  assert.equal(rejected, 0);
  assert.equal(t.failed, 0, `failed new connections: ${JSON.stringify(t.errors)}`);
  assert.equal(f.connected, FLOWS);
  assert.equal(f.kept, FLOWS, `long-lived flows lost: ${JSON.stringify(f.lost)}`);
  assert.equal(resets, 0, 'BGP session reset during reloads');
  assert.equal(updates, 0, 'UPDATE received at the ToR although the VIP attributes never changed');
  assert.ok(proc.running);
  assert.equal((await lab.tor.torRoute(PREFIX))?.nexthops.length, 1, 'the route is at the ToR');
});

test('reload adds a backend (traffic after its rise) and removes it (its flows drain, no new ones)', { timeout: 120_000 }, async () => {
  assert.ok(vipd?.running, 'vipd from T21 is running');
  const all = (lab.vipdConfig('lb1') as { pools: { etcd: { backends: string[] } } }).pools.etcd.backends;
  const [b1, b2, b3] = all as [string, string, string];
  const be3 = lab.backends[2]!.name;
  lab.writeVipdConfig('lb1', variant(0, [b1, b2]));
  const removed = await reloadCli();
  assert.equal(removed.code, 0, removed.stderr);
  await sleep(2000);
  const baseline = await connectionsOn(be3);

  // Added: after rise (2 x 200 ms), least-conn sends it new connections.
  lab.writeVipdConfig('lb1', variant(0, [b1, b2, b3]));
  const added = await reloadCli();
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /\+198\.18\.23\.2:2379/);
  // Its rise: 2 passing checks 200 ms apart (plus jitter and the probe); flows opened before it are
  // rightly spread over the other two.
  await sleep(1500);
  const flows = lab.exec('client', [process.execPath, FLOWS_JS, '--target', `${VIP}:2379`, '--flows', '60', '--interval', '500', '--duration', '8000'], { timeoutMs: 40_000 });
  await sleep(2000);
  const onBe3 = await connectionsOn(be3);
  console.log(`reload +backend: ${be3} holds ${onBe3} of 60 new long-lived flows' connections from lb1, opened 1.5 s after the reload (${baseline} before; bound: > 0 after its rise of 2 x 200 ms)`);
  assert.ok(onBe3 > baseline, `${be3} got no connection after it was added`);

  // Removed: its established flows keep being answered (no closeOnBackendDown); new ones go elsewhere.
  lab.writeVipdConfig('lb1', variant(0, [b1, b2]));
  const gone = await reloadCli();
  assert.equal(gone.code, 0, gone.stderr);
  assert.match(gone.stdout, /-198\.18\.23\.2:2379/);
  const traffic = await lab.exec('client', [process.execPath, TRAFFIC_JS, '--target', `${VIP}:2379`, '--rate', '100', '--duration', '2000'], { timeoutMs: 30_000 });
  const t = JSON.parse(traffic.stdout.trim().split('\n').pop()!) as TrafficReport;
  const stillOnBe3 = await connectionsOn(be3);
  const f = JSON.parse((await flows).stdout.trim().split('\n').pop()!) as LongFlowsReport;
  console.log(`reload -backend: ${t.failed}/${t.attempted} new connections failed (bound 0); ${be3} still holds ${stillOnBe3} connections (its drained flows, ${onBe3} before, none new: bound <= ${onBe3}); long flows kept ${f.kept}/${f.flows} (bound 60), lost ${JSON.stringify(f.lost)}`);
  assert.equal(t.failed, 0, JSON.stringify(t.errors));
  assert.ok(stillOnBe3 <= onBe3, `${be3} got new connections after its removal (${stillOnBe3} > ${onBe3})`);
  assert.equal(f.kept, f.flows, `flows cut by the removal: ${JSON.stringify(f.lost)}`);
  await sleep(2000);
  const afterFlows = await connectionsOn(be3);
  console.log(`reload -backend: once its flows ended, ${be3} holds ${afterFlows} connections from lb1 (bound 0)`);
  assert.equal(afterFlows, 0);
});

test('reload of peers: a peer added, its timers changed and removed; the ToR session of the unchanged peer never resets and receives no UPDATE', { timeout: 120_000 }, async () => {
  assert.ok(vipd?.running, 'vipd from T21 is running');
  const tor = lab.balancer('lb1').torV4;
  // Nobody answers BGP there: the new session only tries; the point is the other one.
  const extra = { address: '198.18.99.1', asn: 65000 };
  const peersWith = (list: Array<Record<string, unknown>>) => ({ ...variant(0), speaker: { peers: [{ address: tor, asn: lab.torAsn }, ...list] } });
  const before = await lb1Counters();
  const steps: Array<[string, Record<string, unknown>]> = [
    ['added 198.18.99.1', peersWith([extra])],
    ['changed 198.18.99.1 (holdTime 9s)', peersWith([{ ...extra, holdTime: '9s', keepalive: '3s' }])],
    ['removed 198.18.99.1', peersWith([])],
  ];
  for (const [what, overrides] of steps) {
    lab.writeVipdConfig('lb1', overrides);
    const r = await reloadCli();
    assert.equal(r.code, 0, `${what}: ${r.stderr}\n${vipd.logTail()}`);
    assert.match(r.stdout, /peers [+~-]198\.18\.99\.1/);
    await sleep(1500);
    const status = await lab.vipdCli('lb1', ['status', '--json', '--config', configPath]);
    const listed = (JSON.parse(status.stdout) as { peers: Array<{ address: string; state: string }> }).peers.map((p) => `${p.address}:${p.state}`);
    const now = await lb1Counters();
    console.log(`reload peers ${what}: ${r.stdout.trim().split('\n')[0]}; ToR session of lb1: established ${before.connectionsEstablished}->${now.connectionsEstablished}, dropped ${before.connectionsDropped}->${now.connectionsDropped} (bound: unchanged), UPDATEs received +${now.updatesReceived - before.updatesReceived} (bound 0); vipd lists ${listed.join(' ')}`);
    assert.equal(now.connectionsEstablished, before.connectionsEstablished, `${what}: the unchanged session was re-established`);
    assert.equal(now.connectionsDropped, before.connectionsDropped, `${what}: the unchanged session dropped`);
    assert.equal(now.updatesReceived, before.updatesReceived, `${what}: UPDATE sent for an unchanged path`);
    assert.equal(listed.some((p) => p.startsWith('198.18.99.1:')), !what.startsWith('removed'), `${what}: vipd's peer list`);
  }
  assert.equal((await lab.tor.torRoute(PREFIX))?.nexthops.length, 1, 'the route is at the ToR');
});

test('drains survive a reload; the drain of a backend the reload removes is dropped from the state file and logged', { timeout: 60_000 }, async () => {
  assert.ok(vipd?.running, 'vipd from T21 is running');
  const all = (lab.vipdConfig('lb1') as { pools: { etcd: { backends: string[] } } }).pools.etcd.backends;
  const [b1, b2, b3] = all as [string, string, string];
  const stateFile = join(lab.dir, 'vipd-state', 'lb1.state.json');
  const drained = () => (JSON.parse(readFileSync(stateFile, 'utf8')) as { backendDrains: Array<{ backend: string }> }).backendDrains.map((d) => d.backend).sort();
  lab.writeVipdConfig('lb1', variant(0, [b1, b2, b3]));
  assert.equal((await reloadCli()).code, 0);
  for (const b of [b1, b3]) {
    const r = await lab.vipdCli('lb1', ['drain-backend', 'etcd', b, '--config', configPath]);
    assert.equal(r.code, 0, r.stderr);
  }
  const before = drained();
  lab.writeVipdConfig('lb1', variant(0, [b1, b2]));
  const r = await reloadCli();
  assert.equal(r.code, 0, r.stderr);
  await sleep(500);
  const afterReload = drained();
  const dropped = vipd.readLog().split('\n').filter((l) => l.includes('"event":"drainDropped"') && l.includes(b3)).at(-1);
  console.log(`reload drains: state file backend drains ${before.join(',')} -> ${afterReload.join(',')} (bound: ${b1} kept, ${b3} dropped); log: ${dropped ? 'drainDropped logged' : 'NO drainDropped line'}`);
  assert.deepEqual(afterReload, [b1]);
  assert.ok(dropped, 'the dropped drain is logged');
  const undrain = await lab.vipdCli('lb1', ['undrain-backend', 'etcd', b1, '--config', configPath]);
  assert.equal(undrain.code, 0, undrain.stderr);
  assert.equal((await lab.tor.torRoute(PREFIX))?.nexthops.length, 1, 'the route is at the ToR');
});
