import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { requirePrerequisites } from '../fakes/prerequisites';
import { createLab, pidsInNamespace, type Lab, type LabProcess } from '../lab';
import { isAlive, waitFor } from '../lab/util';

/**
 * T23 (gobgpd API locked) and defect 9 of issue 9 (gobgpd without root), against a real `vipd run` in a
 * balancer namespace, a real FRR ToR and a real TCP backend. Everything is looked at from outside vipd:
 * `ss` in the balancer's namespace, the socket's and directory's modes, a connect attempt as another
 * user, /proc/<gobgpd>/status, and the ToR's kernel route table. Bounds from RELIABILITY.md: T16 (path
 * gone from the ToR <= 1 s after SIGKILL of vipd) and T17 (watchdog takes the route away <= 3 s).
 */

const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const PORT = 2379;
const ECHO = `require('net').createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(${PORT}, '::');`;

let lab: Lab;
let vipd: LabProcess | undefined;
let nobody: { uid: number; gid: number };
let other: { name: string; uid: number; gid: number };
/** The private directory of the gobgpd whose vipd the T16 test SIGKILLs (it cannot clean up). */
let killedDir = '';
const figures: string[] = [];

function record(line: string): void {
  figures.push(line);
  console.log(line);
}

function passwd(user: string): { uid: number; gid: number } {
  const fields = execFileSync('getent', ['passwd', user], { encoding: 'utf8' }).trim().split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

async function gobgpdPids(): Promise<number[]> {
  return (await pidsInNamespace(lab.ns('lb1'))).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'gobgpd' && isAlive(pid);
    } catch {
      return false;
    }
  });
}

async function theGobgpd(): Promise<number> {
  const pids = await gobgpdPids();
  assert.equal(pids.length, 1, `one managed gobgpd in lb1, found ${pids.join(',') || 'none'}`);
  return pids[0]!;
}

function procStatus(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim().replace(/\s+/g, ' ');
  }
  return out;
}

function privateDirOf(pid: number): string {
  const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  return path.dirname(path.dirname(cmdline[cmdline.indexOf('--api-hosts') + 1]!.replace(/^unix:\/\//, '')));
}

async function torHasVip(): Promise<boolean> {
  return (await lab.tor.torRoute(PREFIX)) !== null;
}

function startVipd(overrides: Record<string, unknown> = {}, file = 'lb1.yaml'): string {
  const be1 = lab.node('be1').v4;
  const config = lab.writeVipdConfig(
    'lb1',
    {
      shutdown: { grace: '200ms' },
      pools: { etcd: { backends: [`${be1}:${PORT}`], check: { kind: 'tcp', path: null, interval: '200ms', timeout: '150ms', rise: 2, fall: 2 } } },
      ...overrides,
    },
    file,
  );
  vipd = lab.startVipd('lb1', config);
  return config;
}

before(async () => {
  requirePrerequisites(['gobgpd', 'setpriv', 'vtysh', 'ss', 'getent']);
  nobody = passwd('nobody');
  // Any other unprivileged user will do to show that the API is not reachable by local users.
  other = { name: 'daemon', ...passwd('daemon') };
  lab = await createLab({ balancers: 1, backends: 'none' });
  lab.spawn('be1', [process.execPath, '-e', ECHO], { name: 'echo' });
  const config = startVipd();
  const check = await lab.vipdCli('lb1', ['check-config', config]);
  assert.equal(check.code, 0, `generated config rejected: ${check.stderr}`);
  const ms = await waitFor(torHasVip, 30_000, 50, `${PREFIX} in the ToR's kernel table`).catch((err: Error) => {
    throw new Error(`${err.message}\nvipd log:\n${vipd?.logTail(40)}`);
  });
  record(`lab: ${PREFIX} in the ToR's kernel table ${ms} ms after vipd started (gobgpd as nobody)`);
});

after(async () => {
  if (figures.length) console.log(`\nfigures (gobgp-lockdown.test.ts):\n${figures.join('\n')}`);
  await lab?.destroy();
});

test('T23: the managed gobgpd listens on no TCP port (no API on 50051, no pprof on 6060, BGP port -1)', async () => {
  const pid = await theGobgpd();
  const ss = await lab.exec('lb1', ['ss', '-ltnpH']);
  assert.equal(ss.code, 0, ss.stderr);
  const ofGobgpd = ss.stdout.split('\n').filter((l) => l.includes(`pid=${pid},`));
  const onApiPorts = ss.stdout.split('\n').filter((l) => / \S+:(50051|6060|179) /.test(l));
  record(`T23: gobgpd pid ${pid} TCP listeners in lb1: ${JSON.stringify(ofGobgpd)}; listeners on 50051/6060/179: ${JSON.stringify(onApiPorts)}`);
  assert.deepEqual(ofGobgpd, [], 'gobgpd listens on no TCP port');
  assert.deepEqual(onApiPorts, [], 'nothing listens on 50051, 6060 or 179');
  const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  assert.ok(cmdline.includes('--pprof-disable'), 'pprof is off');
});

test("T23: the API is a unix socket in a 0700 directory of gobgpd's user; another local user cannot connect", async () => {
  const pid = await theGobgpd();
  const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const api = cmdline[cmdline.indexOf('--api-hosts') + 1] ?? '';
  assert.match(api, /^unix:\/\/\//, `API is a unix socket, not ${api}`);
  const socketPath = api.replace(/^unix:\/\//, '');
  const socketDir = path.dirname(socketPath);
  const privateDir = path.dirname(socketDir);
  const st = (p: string) => fs.lstatSync(p);
  const show = (p: string) => `${path.basename(p)} ${((st(p).mode & 0o777).toString(8)).padStart(4, '0')} ${st(p).uid}:${st(p).gid}`;
  record(
    `T23: ${privateDir}: ${show(privateDir)}; ${show(socketDir)}; ${show(socketPath)}; ${show(path.join(privateDir, 'gobgpd.toml'))}; ${show(path.join(privateDir, 'gobgpd.log'))} ` +
      '(bound: socket <= 0660 or in a 0700 directory)',
  );
  assert.ok(st(socketPath).isSocket());
  assert.equal(st(socketDir).mode & 0o777, 0o700, 'the socket is in a 0700 directory');
  assert.equal(st(socketDir).uid, nobody.uid, "that directory is gobgpd's user's (it creates the socket)");
  // Everything root (vipd) opens stays root's, in a directory gobgpd's user cannot write: no symlink games.
  assert.equal(st(privateDir).uid, 0);
  assert.equal(st(privateDir).mode & 0o022, 0, 'private directory not writable by group or others');
  assert.equal(st(path.join(privateDir, 'gobgpd.log')).uid, 0);
  const config = st(path.join(privateDir, 'gobgpd.toml'));
  assert.equal(config.uid, 0, 'gobgpd cannot rewrite its own config');
  assert.equal(config.gid, nobody.gid);
  assert.equal(config.mode & 0o777, 0o640, 'config (MD5 passwords) readable by root and gobgpd only');
  // From outside, as another unprivileged user: the connect must fail for lack of permission.
  const probe = `require('net').connect(${JSON.stringify(socketPath)}).on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); });`;
  const r = await lab.exec('lb1', ['setpriv', `--reuid=${other.uid}`, `--regid=${other.gid}`, '--clear-groups', process.execPath, '-e', probe]);
  record(`T23: connect to the API socket as ${other.name} (uid ${other.uid}): ${r.stdout.trim() || r.stderr.trim()}`);
  assert.equal(r.stdout.trim(), 'EACCES', `another user must not reach gobgpd's API: ${r.stdout}${r.stderr}`);
});

test('defect 9: gobgpd runs as nobody with no capabilities, no supplementary groups and no_new_privs', async () => {
  const pid = await theGobgpd();
  const s = procStatus(pid);
  record(`defect 9: gobgpd pid ${pid} Uid "${s.Uid}" Gid "${s.Gid}" Groups "${s.Groups}" CapEff ${s.CapEff} CapPrm ${s.CapPrm} CapBnd ${s.CapBnd} CapAmb ${s.CapAmb} NoNewPrivs ${s.NoNewPrivs}`);
  assert.deepEqual(s.Uid!.split(/\s+/).map(Number), [nobody.uid, nobody.uid, nobody.uid, nobody.uid]);
  assert.deepEqual(s.Gid!.split(/\s+/).map(Number), [nobody.gid, nobody.gid, nobody.gid, nobody.gid]);
  assert.equal(s.Groups, '');
  for (const set of ['CapEff', 'CapPrm', 'CapInh', 'CapAmb', 'CapBnd']) assert.equal(BigInt(`0x${s[set]}`), 0n, `${set} is empty`);
  assert.equal(s.NoNewPrivs, '1', 'no_new_privs: no way back to a privilege through exec');
});

test('T17 still holds: the hang watchdog (root) stops the unprivileged gobgpd of a SIGSTOPped vipd; route gone <= 3 s', async () => {
  const proc = vipd!;
  const pid = await theGobgpd();
  assert.ok(await torHasVip(), 'announced before the hang');
  const t0 = performance.now();
  process.kill(proc.pid, 'SIGSTOP');
  try {
    await waitFor(async () => !(await torHasVip()), 6000, 20, `${PREFIX} gone from the ToR while vipd is stopped`);
    const goneMs = Math.round(performance.now() - t0);
    record(`T17: vipd SIGSTOPped: watchdog stopped gobgpd (nobody), path gone from the ToR after ${goneMs} ms (bound 3000 ms)`);
    assert.ok(goneMs <= 3000, `${goneMs} ms > 3000 ms`);
    assert.ok(!isAlive(pid), 'the watchdog stopped that gobgpd');
  } finally {
    process.kill(proc.pid, 'SIGCONT');
  }
  const backMs = await waitFor(torHasVip, 30_000, 50, `${PREFIX} back at the ToR after SIGCONT`);
  record(`T17: after SIGCONT the route is back at the ToR after ${backMs} ms (a new gobgpd, through the usual gating)`);
  const s = procStatus(await theGobgpd());
  assert.equal(Number(s.Uid!.split(/\s+/)[1]), nobody.uid, 'the restarted gobgpd is unprivileged too');
});

test('T16 still holds: SIGKILL of vipd, its unprivileged gobgpd dies with it (parent-death signal), path gone <= 1 s', async () => {
  const pid = await theGobgpd();
  killedDir = privateDirOf(pid);
  assert.ok(await torHasVip());
  const t0 = performance.now();
  vipd!.kill('SIGKILL');
  await waitFor(async () => !(await torHasVip()), 5000, 5, `${PREFIX} gone from the ToR`);
  const goneMs = Math.round(performance.now() - t0);
  record(`T16: vipd SIGKILLed: path gone from the ToR after ${goneMs} ms (bound 1000 ms, goal 300 ms)`);
  assert.ok(goneMs <= 1000, `${goneMs} ms > 1000 ms`);
  await waitFor(() => !isAlive(pid), 2000, 10, 'gobgpd gone');
  const summary = await lab.tor.bgpSummary();
  const session = summary.find((p) => p.address === lab.balancer('lb1').v4);
  record(`T16: ToR session with lb1 now ${session?.state}`);
});

test('listen port below 1024: gobgpd keeps CAP_NET_BIND_SERVICE only (ambient) and listens on it, on the given address only', async () => {
  await vipd?.stop(3000).catch(() => undefined);
  const own = lab.balancer('lb1').v4;
  startVipd({ speaker: { gobgp: { listen: { addresses: [own], port: 179 } } } }, 'lb1-port179.yaml');
  // Whichever gobgpd is the current one: under load the supervisor may have restarted the first.
  await waitFor(
    async () => {
      const pids = await gobgpdPids();
      return pids.length === 1 && (await lab.exec('lb1', ['ss', '-ltnpH'])).stdout.includes(`pid=${pids[0]},`);
    },
    20_000,
    50,
    'one gobgpd with listen port 179, listening',
  );
  const pid = await theGobgpd();
  const s = procStatus(pid);
  const listeners = (await lab.exec('lb1', ['ss', '-ltnpH'])).stdout.split('\n').filter((l) => l.includes(`pid=${pid},`)).map((l) => l.trim().split(/\s+/)[3]);
  record(`listen ${own}:179: gobgpd Uid "${s.Uid}" CapEff ${s.CapEff} CapPrm ${s.CapPrm} CapAmb ${s.CapAmb} CapBnd ${s.CapBnd}; listening on ${JSON.stringify(listeners)}`);
  const NET_BIND_SERVICE = 1n << 10n;
  for (const set of ['CapEff', 'CapPrm', 'CapAmb', 'CapBnd']) assert.equal(BigInt(`0x${s[set]}`), NET_BIND_SERVICE, `${set} is CAP_NET_BIND_SERVICE only`);
  assert.equal(Number(s.Uid!.split(/\s+/)[1]), nobody.uid);
  assert.ok(listeners.some((l) => l?.endsWith(':179')), 'bound the privileged BGP port');
  assert.deepEqual(listeners.filter((l) => l?.endsWith(':179')), [`${own}:179`], 'BGP bound to the configured address only (no 0.0.0.0 or [::])');
  assert.ok(!listeners.some((l) => /:(50051|6060)$/.test(l ?? '')), 'still no API or pprof port');
  // The directory the SIGKILLed vipd left (with gobgpd's api/ inside) is removed at the next start.
  assert.ok(killedDir !== '' && !fs.existsSync(killedDir), `stale directory ${killedDir} removed at start`);
});
