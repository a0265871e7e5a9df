import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import type { DaemonStatus } from '../../src/control/control';
import { requirePrerequisites } from '../fakes/prerequisites';
import { createLab, type Lab, type LabProcess } from '../lab';
import { waitFor } from '../lab/util';

/**
 * T33 (address families), defect 6 of issue 9, against a real `vipd run` and its managed gobgpd in a
 * balancer namespace, a real FRR 8.4 ToR and a real client. An IPv6 VIP over an IPv4-only session
 * (MP-BGP, the default next hop vipd picks) must reach the ToR's kernel as a /128 that a client can
 * connect through; the reverse, an IPv4 VIP over an IPv6-only session, a /32. Status per peer is checked
 * against what the ToR really has: it never says announced for a path the peer was not sent.
 * The ToR's sessions also carry the other family (lab option mpBgp).
 */

const PORT = 2379;
const ECHO = `require('net').createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(${PORT}, '::');`;
const CONVERGE_MS = 30_000;

let lab: Lab;
let vipd: LabProcess | undefined;
let configPath = '';
const figures: string[] = [];

function record(line: string): void {
  figures.push(line);
  console.log(line);
}

interface KernelRoute {
  gateway?: string;
  via?: { family: string; host: string };
  dev?: string;
  protocol?: string;
}

/** The ToR's kernel route for exactly this prefix (`ip -j route show to exact`), or undefined. */
async function torKernelRoute(prefix: string): Promise<KernelRoute | undefined> {
  const r = await lab.exec(lab.torNode.name, ['ip', '-j', prefix.includes(':') ? '-6' : '-4', 'route', 'show', 'to', 'exact', prefix]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout || '[]') as KernelRoute[])[0];
}

/** A real client in the client namespace: connect, send a line, read the echo. */
async function clientRoundTrip(host: string): Promise<{ ok: boolean; ms: number; detail: string }> {
  const script = `
const t0 = performance.now();
const s = require('net').connect({ host: ${JSON.stringify(host)}, port: ${PORT}, timeout: 3000 });
s.on('connect', () => s.write('vipd-t33\\n'));
let got = '';
s.on('data', (d) => { got += d; if (got.includes('\\n')) { console.log(JSON.stringify({ ok: got === 'vipd-t33\\n', ms: Math.round(performance.now() - t0), detail: 'echoed from ' + s.remoteAddress })); s.destroy(); } });
s.on('timeout', () => { console.log(JSON.stringify({ ok: false, ms: 3000, detail: 'timeout' })); s.destroy(); });
s.on('error', (e) => console.log(JSON.stringify({ ok: false, ms: Math.round(performance.now() - t0), detail: e.code })));`;
  const r = await lab.exec('client', [process.execPath, '-e', script], { timeoutMs: 10_000 });
  return JSON.parse(r.stdout.trim().split('\n').pop() || '{"ok":false,"ms":0,"detail":"no output"}') as { ok: boolean; ms: number; detail: string };
}

async function status(): Promise<DaemonStatus> {
  const r = await lab.vipdCli('lb1', ['status', '--json', '--config', configPath]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as DaemonStatus;
}

function announcedTo(s: DaemonStatus, vip: string, peer: string): string | undefined {
  const p = s.vips.find((v) => v.name === vip)?.peers.find((x) => x.peer === peer);
  return p ? `${p.state}${p.reason ? ` (${p.reason})` : ''}` : undefined;
}

async function startVipd(peerAddress: string, vips: Array<{ name: string; address: string }>, file: string): Promise<void> {
  await vipd?.stop(5000).catch(() => undefined);
  const be1 = lab.node('be1').v4;
  configPath = lab.writeVipdConfig(
    'lb1',
    {
      shutdown: { grace: '200ms' },
      speaker: { peers: [{ address: peerAddress, asn: lab.torAsn }] },
      vips: vips.map((v) => ({ ...v, listeners: [{ port: PORT, pool: 'etcd' }] })),
      pools: { etcd: { backends: [`${be1}:${PORT}`], check: { kind: 'tcp', path: null, interval: '200ms', timeout: '150ms', rise: 2, fall: 2 } } },
    },
    file,
  );
  const check = await lab.vipdCli('lb1', ['check-config', configPath]);
  assert.equal(check.code, 0, `config rejected: ${check.stderr}`);
  vipd = lab.startVipd('lb1', configPath);
}

before(async () => {
  requirePrerequisites(['gobgpd', 'gobgp', 'setpriv', 'vtysh', 'ip']);
  lab = await createLab({ balancers: 1, backends: 'none', ipv6: true, mpBgp: true });
  lab.spawn('be1', [process.execPath, '-e', ECHO], { name: 'echo' });
});

after(async () => {
  if (figures.length) console.log(`\nfigures (address-families.test.ts):\n${figures.join('\n')}`);
  await lab?.destroy();
});

test("the fact behind the default next hop: gobgpd's own ::ffff:a.b.c.d is best in FRR 8.4 but never reaches its kernel", async () => {
  const lb1 = lab.balancer('lb1');
  const prefix6 = `${lab.vip6}/128`;
  // A plain gobgpd (not vipd) with IPv6 unicast on its IPv4 session and no next-hop policy.
  const toml = [
    '[global.config]',
    `  as = ${lb1.asn}`,
    `  router-id = "${lb1.routerId}"`,
    '  port = -1',
    '[[neighbors]]',
    '  [neighbors.config]',
    `    neighbor-address = "${lb1.torV4}"`,
    `    peer-as = ${lab.torAsn}`,
    '  [neighbors.timers.config]',
    '    connect-retry = 1',
    '    hold-time = 3',
    '    keepalive-interval = 1',
    '  [[neighbors.afi-safis]]',
    '    [neighbors.afi-safis.config]',
    '      afi-safi-name = "ipv4-unicast"',
    '  [[neighbors.afi-safis]]',
    '    [neighbors.afi-safis.config]',
    '      afi-safi-name = "ipv6-unicast"',
  ].join('\n');
  const file = `${lab.dir}/plain-gobgpd.toml`;
  fs.writeFileSync(file, toml + '\n');
  const api = ['-u', '127.0.0.1', '-p', '50061'];
  const gobgpd = lab.spawn('lb1', ['gobgpd', '-f', file, '-t', 'toml', '--api-hosts', '127.0.0.1:50061', '--pprof-disable'], { name: 'plain-gobgpd' });
  try {
    await waitFor(async () => (await lab.exec('lb1', ['gobgp', ...api, 'global'])).code === 0, 10_000, 50, 'plain gobgpd API');
    const add = await lab.exec('lb1', ['gobgp', ...api, 'global', 'rib', 'add', '-a', 'ipv6', prefix6]);
    assert.equal(add.code, 0, add.stderr);
    const ms = await waitFor(async () => (await lab.tor.bgpRoute(prefix6))?.paths.some((p) => p.best && p.valid) ?? false, CONVERGE_MS, 50, `${prefix6} best at the ToR`);
    // Give zebra ample time (several times what a good next hop needs) to install it, if it ever would.
    await new Promise((r) => setTimeout(r, 3000));
    const path = (await lab.tor.bgpRoute(prefix6))!.paths[0]!;
    const kernel = await torKernelRoute(prefix6);
    record(`fact (FRR 8.4): ${prefix6} from gobgpd's default over IPv4: BGP next hop ${path.nexthop}, valid ${path.valid}, best ${path.best} after ${ms} ms; ToR kernel 3 s later: ${kernel ? JSON.stringify(kernel) : 'no route'}`);
    assert.match(path.nexthop, /^::ffff:/i, "gobgpd's own next hop is IPv4-mapped");
    assert.ok(path.valid && path.best);
    assert.equal(kernel, undefined, 'never installed: traffic to the VIP would never arrive');
  } finally {
    await gobgpd.stop(3000);
  }
  await waitFor(async () => (await lab.tor.bgpRoute(prefix6)) === null, 10_000, 50, `${prefix6} gone after the plain gobgpd stopped`);
});

test('T33: an IPv6 VIP over an IPv4-only session: the ToR kernel installs the /128 and a client connects through it', async () => {
  const lb1 = lab.balancer('lb1');
  const prefix6 = `${lab.vip6}/128`;
  const prefix4 = `${lab.vip}/32`;
  await startVipd(lb1.torV4, [
    { name: 'cp6', address: lab.vip6 },
    { name: 'cp4', address: lab.vip },
  ], 'v6-over-v4.yaml');
  const ms = await waitFor(async () => (await torKernelRoute(prefix6)) !== undefined, CONVERGE_MS, 50, `${prefix6} in the ToR's kernel`).catch((err: Error) => {
    throw new Error(`${err.message}\nvipd log:\n${vipd?.logTail(40)}`);
  });
  const route = (await torKernelRoute(prefix6))!;
  const bgp = await lab.tor.bgpRoute(prefix6);
  record(`T33: ${prefix6} over the IPv4 session ${lb1.v4} -> ${lb1.torV4}: in the ToR's kernel ${ms} ms after vipd started, via ${route.gateway} dev ${route.dev} (BGP next hop ${bgp?.paths[0]?.nexthop}, from ${bgp?.paths[0]?.peer})`);
  assert.equal(route.gateway, lb1.v6, "the default next hop is lb1's global IPv6 address on the link (gobgpd's ::ffff:a.b.c.d would never be installed)");
  assert.equal(bgp?.paths[0]?.peer, lb1.v4, 'learned over the IPv4 session');
  const v4 = await torKernelRoute(prefix4);
  assert.equal(v4?.gateway, lb1.v4, 'the IPv4 VIP on the same session keeps its IPv4 next hop');

  const client = await clientRoundTrip(lab.vip6);
  record(`T33: client [${lab.vip6}]:${PORT} through the ToR: ${client.ok ? 'ok' : 'FAILED'} in ${client.ms} ms (${client.detail})`);
  assert.ok(client.ok, `a real client reaches the IPv6 VIP: ${client.detail}`);

  // Status per peer agrees with the ToR: announced to the IPv4 peer, for both VIPs.
  await waitFor(async () => announcedTo(await status(), 'cp6', lb1.torV4) === 'announced', 10_000, 100, 'status: cp6 announced to the IPv4 peer');
  const s = await status();
  record(`T33: status per peer: cp6 -> ${lb1.torV4}: ${announcedTo(s, 'cp6', lb1.torV4)}; cp4 -> ${lb1.torV4}: ${announcedTo(s, 'cp4', lb1.torV4)}; families ${JSON.stringify(s.peers[0]?.families)}`);
  assert.equal(announcedTo(s, 'cp4', lb1.torV4), 'announced');
  assert.deepEqual(s.peers[0]?.families, ['ipv4-unicast', 'ipv6-unicast']);
});

test('T33: a peer that does not take IPv6 on its IPv4 session: status never says announced, and the ToR has no /128', async () => {
  const lb1 = lab.balancer('lb1');
  const prefix6 = `${lab.vip6}/128`;
  // The router stops carrying IPv6 on its IPv4 sessions (FRR resets the session; the new OPEN has no IPv6).
  await lab.tor.vtysh('configure terminal', `router bgp ${lab.torAsn}`, 'address-family ipv6 unicast', 'no neighbor LB4 activate', 'exit-address-family');
  try {
    const goneMs = await waitFor(async () => (await torKernelRoute(prefix6)) === undefined, 10_000, 50, `${prefix6} gone from the ToR`);
    await waitFor(async () => announcedTo(await status(), 'cp4', lb1.torV4) === 'announced', CONVERGE_MS, 100, 'session back with IPv4');
    // Several reconciliations (every 3 s) later, status must still not claim the IPv6 VIP for that peer.
    await new Promise((r) => setTimeout(r, 4000));
    const s = await status();
    const cp6 = announcedTo(s, 'cp6', lb1.torV4);
    const tor = await torKernelRoute(prefix6);
    record(`T33: router without IPv6 on the IPv4 session: /128 gone from the ToR after ${goneMs} ms; ToR kernel now ${tor ? 'HAS' : 'has no'} ${prefix6}; status cp6 -> ${lb1.torV4}: ${cp6}; cp4: ${announcedTo(s, 'cp4', lb1.torV4)}`);
    assert.equal(tor, undefined);
    assert.notEqual(cp6, 'announced', 'status must not say announced for a path the peer was not sent');
    assert.equal(cp6, 'withdrawn (familyNotNegotiated)', 'and says why');
    assert.equal(s.vips.find((v) => v.name === 'cp6')?.state, 'announced', 'vipd still wants it announced (it is healthy): only the peer view differs');
  } finally {
    await lab.tor.vtysh('configure terminal', `router bgp ${lab.torAsn}`, 'address-family ipv6 unicast', 'neighbor LB4 activate', 'neighbor LB4 route-map LB-IN6 in', 'neighbor LB4 route-map LB-OUT out', 'exit-address-family');
  }
});

test('T33 reverse: an IPv4 VIP over an IPv6-only session: the ToR kernel installs the /32 and a client connects through it', async () => {
  const lb1 = lab.balancer('lb1');
  const prefix4 = `${lab.vip}/32`;
  assert.ok(lb1.torV6 && lb1.v6, 'the lab has IPv6 on the uplink');
  await startVipd(lb1.torV6, [{ name: 'cp4', address: lab.vip }], 'v4-over-v6.yaml');
  const ms = await waitFor(async () => (await torKernelRoute(prefix4)) !== undefined, CONVERGE_MS, 50, `${prefix4} in the ToR's kernel`).catch((err: Error) => {
    throw new Error(`${err.message}\nvipd log:\n${vipd?.logTail(40)}`);
  });
  const route = (await torKernelRoute(prefix4))!;
  const bgp = await lab.tor.bgpRoute(prefix4);
  const via = route.via ? `inet6 ${route.via.host}` : route.gateway;
  record(`T33 reverse: ${prefix4} over the IPv6 session ${lb1.v6} -> ${lb1.torV6}: in the ToR's kernel ${ms} ms after vipd started, via ${via} dev ${route.dev} (BGP next hop ${bgp?.paths[0]?.nexthop}, from ${bgp?.paths[0]?.peer})`);
  assert.equal(bgp?.paths[0]?.peer, lb1.v6, 'learned over the IPv6 session');
  assert.ok(route.via?.host === lb1.v6 || route.gateway === lb1.v6, `installed via lb1's IPv6 address (RFC 8950 style): ${JSON.stringify(route)}`);

  const client = await clientRoundTrip(lab.vip);
  record(`T33 reverse: client ${lab.vip}:${PORT} through the ToR: ${client.ok ? 'ok' : 'FAILED'} in ${client.ms} ms (${client.detail})`);
  assert.ok(client.ok, `a real client reaches the IPv4 VIP: ${client.detail}`);
  await waitFor(async () => announcedTo(await status(), 'cp4', lb1.torV6!) === 'announced', 10_000, 100, 'status: cp4 announced to the IPv6 peer');
});
