import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { requirePrerequisites } from '../fakes/prerequisites';
import { createLab, REPO_ROOT, sleep, waitFor, type Lab, type LabProcess } from '../lab';
import type { TrafficReport } from '../lab/traffic';

/**
 * Issue 13's kernel data path against real nftables, FRR, gobgpd and etcd: two balancers whose vipd
 * serves the etcd VIP with dataPath: kernel. Everything is asserted from outside vipd: the ToR's route,
 * a real client, and each balancer's nftables table and conntrack read with nft/conntrack.
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const TRAFFIC_JS = join(REPO_ROOT, 'dist', 'test', 'lab', 'traffic.js');
const OWN_TABLE = 'kernel_test_own';
const T16_WITHDRAW_MS = 1000;
const T01_MARKED_DOWN_MS = 2500;
const GRACE_MS = 1000;

let lab: Lab;
const vipd = new Map<string, LabProcess>();
const configs = new Map<string, string>();

async function nft(lb: string, args: string[]): Promise<string> {
  const r = await lab.exec(lb, ['nft', ...args]);
  return r.code === 0 ? r.stdout : '';
}

/** Named counter packets (for conn/* counters: connections) of vipd's table in `lb`, by name. */
async function counters(lb: string): Promise<Map<string, number>> {
  const text = await nft(lb, ['-j', 'list', 'counters', 'table', 'inet', 'vipd']);
  const out = new Map<string, number>();
  if (!text) return out;
  for (const o of (JSON.parse(text) as { nftables: Array<{ counter?: { name: string; packets: number } }> }).nftables) if (o.counter) out.set(o.counter.name, o.counter.packets);
  return out;
}

async function connectionsTo(backendKey: string): Promise<number> {
  let n = 0;
  for (const lb of ['lb1', 'lb2']) n += (await counters(lb)).get(`conn/control-plane:2379/${backendKey}`) ?? 0;
  return n;
}

/** The dnat map's backends as the kernel holds them (empty string when the table is absent). */
async function dnatRule(lb: string): Promise<string> {
  return nft(lb, ['list', 'chain', 'inet', 'vipd', 'prerouting']);
}

async function ownTableIntact(lb: string): Promise<void> {
  const text = await nft(lb, ['list', 'table', 'inet', OWN_TABLE]);
  assert.match(text, /chain keep/, `${lb}: the test's own table ${OWN_TABLE} was touched:\n${text}`);
  assert.match(text, /counter name "kept"|counter kept/, `${lb}: the test's own table lost its counter`);
}

async function nexthops(): Promise<number> {
  return (await lab.tor.torRoute(PREFIX))?.nexthops.length ?? 0;
}

async function traffic(ratePerSec: number, durationMs: number): Promise<TrafficReport> {
  const r = await lab.exec('client', [process.execPath, TRAFFIC_JS, '--target', `${VIP}:2379`, '--rate', String(ratePerSec), '--duration', String(durationMs)], { timeoutMs: durationMs + 15_000 });
  assert.equal(r.code, 0, `traffic client failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TrafficReport;
}

/** Long-lived keep-alive HTTP connections from the client: each asks /health every 200 ms and reports per connection. */
const LONG_FLOWS = `
const net = require('net');
const [host, port, count, ms] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
const flows = [];
for (let i = 0; i < count; i++) {
  const f = { localPort: 0, ok: 0, okTimes: [], error: null };
  flows.push(f);
  const s = net.connect({ host, port });
  let buf = '';
  const ask = () => s.write('GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');
  s.on('connect', () => { f.localPort = s.localPort; ask(); });
  s.setEncoding('latin1');
  s.on('data', (d) => { buf += d; const m = buf.match(/\\r\\n\\r\\n/); if (m && /}\\s*$/.test(buf)) { if (/^HTTP\\/1\\.1 200/.test(buf)) { f.ok++; f.okTimes.push(Date.now()); } buf = ''; setTimeout(() => { if (!f.error) ask(); }, 200); } });
  s.on('error', (e) => { if (!f.error) f.error = { code: e.code || e.message, at: Date.now() }; });
  s.on('close', () => { if (!f.error) f.error = { code: 'closed', at: Date.now() }; });
  setTimeout(() => s.destroy(), ms);
}
setTimeout(() => { console.log(JSON.stringify(flows.map((f) => ({ localPort: f.localPort, ok: f.ok, last: f.okTimes.at(-1) || 0, error: f.error && f.error.code !== 'closed' ? f.error : (f.error && f.error.at < Date.now() - 300 ? f.error : null) })))); process.exit(0); }, ms + 200);
`;
interface FlowResult {
  readonly localPort: number;
  readonly ok: number;
  readonly last: number;
  readonly error: { code: string; at: number } | null;
}

function longFlows(count: number, ms: number): Promise<FlowResult[]> {
  return lab.exec('client', [process.execPath, '-e', LONG_FLOWS, VIP, '2379', String(count), String(ms)], { timeoutMs: ms + 10_000 }).then((r) => {
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as FlowResult[];
  });
}

/** Client source ports of the VIP connections conntrack holds in `lb`, with the backend each was rewritten to. */
async function flowsThrough(lb: string): Promise<Map<number, string>> {
  const r = await lab.exec(lb, ['conntrack', '-L', '-p', 'tcp', '--orig-dst', VIP, '--orig-port-dst', '2379']);
  const out = new Map<number, string>();
  for (const line of r.stdout.split('\n')) {
    if (!line.includes('ESTABLISHED')) continue;
    const sport = /sport=(\d+)/.exec(line)?.[1];
    const backend = [...line.matchAll(/src=(\S+)/g)][1]?.[1];
    if (sport && backend) out.set(Number(sport), `${backend}:2379`);
  }
  return out;
}

/** Conntrack entries (any state, TIME_WAIT included) of connections to the VIP that were rewritten to a backend. */
async function natEntries(lb: string): Promise<number> {
  const r = await lab.exec(lb, ['conntrack', '-L', '-p', 'tcp', '--orig-dst', VIP, '--orig-port-dst', '2379']);
  return r.stdout.split('\n').filter((line) => line.includes('dport=2379')).length;
}

/** A member that is not the raft leader: killing the leader makes every member answer 503 until a new one is elected. */
async function etcdFollower(): Promise<string> {
  const r = await lab.etcd!.etcdctl(['endpoint', 'status', '-w', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as Array<{ Endpoint: string; Status: { header: { member_id: number }; leader: number } }>;
  const follower = rows.find((row) => row.Status.header.member_id !== row.Status.leader);
  assert.ok(follower, `no follower in ${r.stdout}`);
  return lab.etcd!.members.find((m) => follower.Endpoint.includes(m.address))!.name;
}

function startVipd(lb: string): void {
  vipd.set(lb, lab.startVipd(lb, configs.get(lb)!));
}

before(async () => {
  requirePrerequisites(['nft', 'conntrack', 'gobgpd', 'etcd', 'vtysh']);
  lab = await createLab({ balancers: 2 });
  for (const lb of ['lb1', 'lb2']) {
    await lab.exec(lb, ['sysctl', '-w', 'net.ipv4.ip_forward=1']);
    for (const command of [
      `add table inet ${OWN_TABLE}`,
      `add counter inet ${OWN_TABLE} kept`,
      `add chain inet ${OWN_TABLE} keep { type filter hook input priority 10 ; policy accept ; }`,
      `add rule inet ${OWN_TABLE} keep tcp dport 9 counter name kept`,
    ]) {
      const r = await lab.exec(lb, ['sh', '-c', `nft '${command}'`]);
      assert.equal(r.code, 0, `${command}: ${r.stderr}`);
    }
    configs.set(
      lb,
      lab.writeVipdConfig(lb, {
        shutdown: { grace: `${GRACE_MS}ms` },
        vips: [{ name: 'control-plane', address: VIP, communities: ['65000:100'], listeners: [{ port: 2379, pool: 'etcd', dataPath: 'kernel' }] }],
        // Checks a little slower than the lab's default (200/150 ms, whose timeout a loaded 2-core machine misses), so that a loaded machine does not flap
        // every backend; mark-down still within T01's 2.5 s (interval × fall + timeout + one write).
        pools: { etcd: { balance: 'round-robin', check: { interval: '300ms', timeout: '250ms', rise: 2, fall: 2 } } },
      }),
    );
    startVipd(lb);
  }
  await lab.tor.waitNexthops(PREFIX, 2, 30_000);
});

after(async () => {
  await lab?.destroy();
});

test('a kernel listener serves etcd through the VIP behind the ToR; vipd itself listens on nothing there', async () => {
  const put = await lab.etcd!.etcdctl(['put', 'kernel-key', 'v1'], { endpoints: [`${VIP}:2379`] });
  assert.equal(put.code, 0, put.stderr);
  const get = await lab.etcd!.etcdctl(['get', 'kernel-key', '--print-value-only'], { endpoints: [`${VIP}:2379`] });
  assert.equal(get.stdout.trim(), 'v1');
  for (const lb of ['lb1', 'lb2']) {
    const ss = await lab.exec(lb, ['ss', '-Hltn', 'sport = :2379']);
    assert.equal(ss.stdout.trim(), '', `${lb}: something listens on :2379; the kernel path must not need a socket`);
    await ownTableIntact(lb);
  }
  const natted = async () => (await natEntries('lb1')) + (await natEntries('lb2'));
  const before = await natted();
  const report = await traffic(100, 2000);
  const rewritten = (await natted()) - before;
  console.log(`kernel: 100 conn/s for 2 s through the VIP: ${report.ok}/${report.attempted} ok, p50 ${report.p50Ms} ms, p99 ${report.p99Ms} ms; conntrack holds ${rewritten} more rewritten connections on the balancers`);
  assert.equal(report.failed, 0, JSON.stringify(report.errors));
  assert.ok(rewritten >= report.ok, `conntrack saw ${rewritten} rewritten connections for ${report.ok} served`);
});

test('drain a backend: established flows continue, no new connection reaches it', async () => {
  const flows = longFlows(16, 14_000);
  await sleep(1500);
  const through = new Map([...(await flowsThrough('lb1')), ...(await flowsThrough('lb2'))]);
  const drained = `${lab.backends[0]!.v4}:2379`;
  const onDrained = [...through].filter(([, b]) => b === drained).map(([port]) => port);
  await Promise.all(
    ['lb1', 'lb2'].map(async (lb) => {
      const r = await lab.vipdCli(lb, ['drain-backend', '--config', configs.get(lb)!, 'etcd', drained]);
      assert.equal(r.code, 0, r.stderr);
    }),
  );
  const drainedAt = Date.now();
  await waitFor(async () => !(await dnatRule('lb1')).includes(lab.backends[0]!.v4) && !(await dnatRule('lb2')).includes(lab.backends[0]!.v4), 3000, 50, 'drained backend out of both maps');
  const before = await connectionsTo(drained);
  const report = await traffic(50, 2000);
  const afterCount = await connectionsTo(drained);
  const results = await flows;
  const kept = results.filter((f) => onDrained.includes(f.localPort));
  console.log(`kernel drain: ${kept.length} established flows on the drained backend, ${kept.filter((f) => f.error === null && f.last > drainedAt + 2000).length} still answered 2 s+ after the drain; new connections to it after the drain: ${afterCount - before} (of ${report.ok} served, ${report.failed} failed)`);
  assert.ok(kept.length > 0, `no flow went to ${drained} (flows: ${JSON.stringify([...through])})`);
  for (const f of kept) assert.ok(f.error === null && f.last > drainedAt + 2000, `flow ${f.localPort} to the drained backend: ${JSON.stringify(f)}`);
  assert.equal(afterCount - before, 0, 'a new connection reached the drained backend');
  assert.equal(report.failed, 0, JSON.stringify(report.errors));
  for (const lb of ['lb1', 'lb2']) {
    await lab.vipdCli(lb, ['undrain-backend', '--config', configs.get(lb)!, 'etcd', drained]);
    await ownTableIntact(lb);
  }
});

test('a backend killed under 200 conn/s: failures before mark-down counted, none reach it after', async () => {
  const victimName = await etcdFollower();
  const victim = lab.backends.find((b) => b.name === victimName)!;
  const key = `${victim.v4}:2379`;
  await waitFor(async () => (await dnatRule('lb1')).includes(victim.v4) && (await dnatRule('lb2')).includes(victim.v4), 5000, 100, 'every backend in both maps');
  const load = traffic(200, 6000);
  await sleep(1500);
  const killedAt = Date.now();
  await lab.etcd!.kill(victim.name);
  const markedDownMs = await waitFor(async () => !(await dnatRule('lb1')).includes(victim.v4) && !(await dnatRule('lb2')).includes(victim.v4), 5000, 20, 'killed backend out of both maps');
  const atMarkDown = await connectionsTo(key);
  const report = await load;
  const afterwards = await connectionsTo(key);
  const recorded = report.failures.filter((f) => f.startWall >= killedAt - 50);
  const beforeMarkDown = recorded.filter((f) => f.startWall <= killedAt + markedDownMs).length;
  console.log(`kernel T01: backend killed under 200 conn/s: out of both balancers' maps after ${markedDownMs} ms (bound ${T01_MARKED_DOWN_MS} ms); ${report.failed} of ${report.attempted} connections failed, errors ${JSON.stringify(report.errors)}; of the ${recorded.length} failures recorded after the kill, ${beforeMarkDown} started before mark-down (the kernel path cannot retry); new connections to it after mark-down: ${afterwards - atMarkDown}`);
  assert.ok(markedDownMs <= T01_MARKED_DOWN_MS, `marked down after ${markedDownMs} ms`);
  assert.equal(afterwards - atMarkDown, 0, 'a new connection reached the killed backend after mark-down');
  await lab.etcd!.startMember(victim.name);
  await lab.etcd!.waitHealthy();
  for (const lb of ['lb1', 'lb2']) await ownTableIntact(lb);
});

test('SIGKILL vipd: the route leaves the ToR within 1 s, its table stays, flows through the other balancer are unaffected', async () => {
  await waitFor(async () => (await nexthops()) === 2, 30_000, 100, 'both balancers announced');
  const flows = longFlows(16, 6000);
  await sleep(1500);
  const viaLb2 = [...(await flowsThrough('lb2')).keys()];
  const killedAt = Date.now();
  vipd.get('lb1')!.kill('SIGKILL');
  const withdrawnMs = await waitFor(async () => (await nexthops()) === 1, 3000, 10, 'lb1 withdrawn at the ToR');
  const tableStays = (await dnatRule('lb1')).includes('dnat');
  const results = await flows;
  const onLb2 = results.filter((f) => viaLb2.includes(f.localPort));
  const unaffected = onLb2.filter((f) => f.error === null && f.last > killedAt + 2000).length;
  console.log(`kernel T16: SIGKILL vipd on lb1: withdrawn at ToR after ${withdrawnMs} ms (bound ${T16_WITHDRAW_MS} ms); lb1's table ${tableStays ? 'stays' : 'is GONE'}; flows through lb2: ${unaffected}/${onLb2.length} unaffected; flows through lb1: ${results.length - onLb2.length} (rehashed by the ToR)`);
  assert.ok(withdrawnMs <= T16_WITHDRAW_MS, `withdrawn after ${withdrawnMs} ms`);
  assert.ok(tableStays, "lb1's table was removed by a SIGKILL");
  assert.ok(onLb2.length > 0, 'no flow went through lb2');
  assert.equal(unaffected, onLb2.length, JSON.stringify(onLb2));
  await ownTableIntact('lb1');
});

test('restart vipd: the table is replaced in one transaction, never absent while read in a tight loop', async () => {
  const beforeText = await dnatRule('lb1');
  const oldGeneration = /vipd dnat control-plane:2379 (\S+)"/.exec(beforeText)?.[1];
  assert.ok(oldGeneration, `lb1 has no rule left by the killed vipd:\n${beforeText}`);
  const LOOP = `n=0; gaps=0; end=$(( $(date +%s) + 12 )); while [ $(date +%s) -lt $end ]; do n=$((n+1)); nft list chain inet vipd prerouting 2>/dev/null | grep -q 'dnat' || gaps=$((gaps+1)); done; echo "$n $gaps"`;
  const loop = lab.exec('lb1', ['sh', '-c', LOOP], { timeoutMs: 20_000 });
  await sleep(500);
  startVipd('lb1');
  await waitFor(async () => {
    const g = /vipd dnat control-plane:2379 (\S+)"/.exec(await dnatRule('lb1'))?.[1];
    return g !== undefined && g !== oldGeneration;
  }, 10_000, 50, 'the restarted vipd replaced the table');
  const [reads, gaps] = (await loop).stdout.trim().split(' ').map(Number);
  console.log(`kernel restart: ${reads} reads of lb1's prerouting chain across the restart, ${gaps} without the rewrite rule; generation ${oldGeneration} replaced`);
  assert.ok(reads! >= 10, `only ${reads} reads`);
  assert.equal(gaps, 0, 'a read found no rule: the table had a window');
  await lab.tor.waitNexthops(PREFIX, 2, 30_000);
  await ownTableIntact('lb1');
});

test('SIGTERM: vipd removes its table after the grace and leaves every other table alone', async () => {
  const stoppedAt = Date.now();
  vipd.get('lb2')!.kill('SIGTERM');
  const goneMs = await waitFor(async () => (await nft('lb2', ['list', 'table', 'inet', 'vipd'])) === '', GRACE_MS + 15_000, 50, "lb2's table removed");
  console.log(`kernel stop: lb2's table removed ${goneMs} ms after SIGTERM (shutdown.grace ${GRACE_MS} ms, then up to 1 s for its connections)`);
  assert.ok(goneMs >= GRACE_MS / 2, `table removed after ${goneMs} ms, before the grace`);
  await ownTableIntact('lb2');
  const exited = await Promise.race([vipd.get('lb2')!.exited.then(() => true), sleep(5000).then(() => false)]);
  assert.ok(exited, `vipd on lb2 still running ${Date.now() - stoppedAt} ms after SIGTERM`);
});
