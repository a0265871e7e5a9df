import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLab, REPO_ROOT, type Lab, type NodeRouterKind } from './index';
import type { TrafficReport } from './traffic';

/**
 * `npm run lab`: the namespace lab demo. Builds an FRR top-of-rack router, 3 balancers running vipd with
 * their managed gobgpd, a 3-member etcd cluster and a client, then shows what the router sees as the
 * balancers come up, lose their backends, drain and come back. Everything is torn down at the end.
 * `npm run lab -- --node-router frr` (or `bird`): each balancer runs its own FRR (or BIRD 2) loading the
 * snippet shipped in config/beside-frr (config/beside-bird), which carries vipd's VIP on to the ToR with
 * BFD (docs/beside-frr.md).
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;

function say(text: string): void {
  process.stdout.write(`\n== ${text}\n`);
}

async function showTor(lab: Lab): Promise<void> {
  const route = await lab.tor.torRoute(PREFIX);
  const names = new Map(lab.balancers.map((b) => [b.v4, b.name]));
  const hops = (route?.nexthops ?? []).map((n) => `${n.gateway} (${names.get(n.gateway ?? '') ?? '?'})`);
  process.stdout.write(`ToR kernel route ${PREFIX}: ${hops.length ? `${hops.length} ECMP next hops: ${hops.join(', ')}` : 'NONE'}\n`);
  const bgp = await lab.tor.bgpRoute(PREFIX);
  for (const p of bgp?.paths ?? []) {
    process.stdout.write(`  bgp path via ${p.nexthop}  as-path ${p.asPath || "-"}  local-pref ${p.localPref ?? '-'}  communities ${p.communityText || '-'}  ${p.multipath || p.best ? 'in ECMP' : ''}\n`);
  }
}

async function traffic(lab: Lab, seconds: number): Promise<TrafficReport> {
  const r = await lab.exec('client', [process.execPath, join(REPO_ROOT, 'dist/test/lab/traffic.js'), '--target', `${VIP}:2379`, '--rate', '100', '--duration', String(seconds * 1000)], {
    timeoutMs: seconds * 1000 + 15_000,
  });
  return JSON.parse(r.stdout.trim()) as TrafficReport;
}

/** `--node-router frr|bird`, or undefined. */
function nodeRouterArg(argv: readonly string[]): NodeRouterKind | undefined {
  const i = argv.findIndex((a) => a === '--node-router' || a.startsWith('--node-router='));
  if (i < 0) return undefined;
  const value = argv[i]!.includes('=') ? argv[i]!.split('=')[1] : argv[i + 1];
  if (value !== 'frr' && value !== 'bird') throw new Error(`--node-router takes frr or bird, got ${String(value)}`);
  return value;
}

async function showNodeRouters(lab: Lab): Promise<void> {
  for (const [lb, r] of lab.nodeRouters) {
    const s = await r.vipdSession();
    process.stdout.write(`${lb}: node ${r.kind} session with vipd (${r.addresses.vipd} -> ${r.addresses.node}): ${s.state}, ${s.accepted} path(s) accepted\n`);
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the lab needs root: it creates network namespaces');
  const nodeRouter = nodeRouterArg(process.argv.slice(2));
  say(
    nodeRouter
      ? `building the lab: FRR ToR (AS 65000), lb1..lb3 each running ${nodeRouter === 'frr' ? 'FRR' : 'BIRD 2'} (AS 65001, BFD 300 ms x 3 toward the ToR) with vipd (AS 65201) behind it, etcd on be1..be3, a client`
      : 'building the lab: FRR ToR (AS 65000), lb1..lb3 (AS 65001), etcd on be1..be3, a client',
  );
  const lab = await createLab({ balancers: 3, backends: 'etcd', ...(nodeRouter ? { nodeRouter } : {}) });
  try {
    const configs = new Map(lab.balancers.map((b) => [b.name, lab.writeVipdConfig(b.name)]));
    process.stdout.write(`lab dir ${lab.dir}\nvipd config of lb1 (${configs.get('lb1')}):\n${readFileSync(configs.get('lb1')!, 'utf8')}`);

    say('starting vipd on lb1, lb2, lb3');
    const started = Date.now();
    for (const b of lab.balancers) lab.startVipd(b.name, configs.get(b.name)!);
    await lab.tor.waitNexthops(PREFIX, 3, 40_000);
    process.stdout.write(`all 3 balancers in ECMP after ${((Date.now() - started) / 1000).toFixed(1)} s (gobgpd waits ~5 s before its first connect)\n`);
    await showTor(lab);
    await showNodeRouters(lab);

    say('a client uses etcd through the VIP');
    const put = await lab.etcd!.etcdctl(['put', 'demo', 'hello through the anycast VIP'], { endpoints: [`${VIP}:2379`], node: 'client' });
    const get = await lab.etcd!.etcdctl(['get', 'demo', '--print-value-only'], { endpoints: [`${VIP}:2379`], node: 'client' });
    process.stdout.write(`etcdctl put: ${put.stdout.trim()}  get: ${get.stdout.trim()}\n`);
    process.stdout.write(`100 new connections/s for 3 s: ${JSON.stringify(await traffic(lab, 3))}\n`);

    say('lb1 loses every backend (nftables drops its traffic to them): lb1 withdraws, the others keep serving');
    await lab.exec('lb1', ['nft', '-f', '-'], {
      input: 'table inet demo {\n chain out {\n  type filter hook output priority 0;\n  ip daddr { 198.18.21.2, 198.18.22.2, 198.18.23.2 } tcp dport 2379 drop\n }\n}\n',
    });
    const t1 = Date.now();
    await lab.tor.waitNexthops(PREFIX, 2, 10_000, 10);
    process.stdout.write(`lb1 left the ToR's ECMP set ${Date.now() - t1} ms after its backends became unreachable\n`);
    await showTor(lab);
    process.stdout.write((await lab.vipdCli('lb1', ['status', '--config', configs.get('lb1')!])).stdout);

    say('lb1 gets its backends back: re-announced after rise checks and the hold-down');
    await lab.exec('lb1', ['nft', 'delete', 'table', 'inet', 'demo']);
    const t2 = Date.now();
    await lab.tor.waitNexthops(PREFIX, 3, 15_000, 20);
    process.stdout.write(`lb1 back in ECMP after ${Date.now() - t2} ms\n`);

    say('vipd drain on lb2 while a client opens 100 connections/s');
    const load = traffic(lab, 4);
    await new Promise((r) => setTimeout(r, 1000));
    const t3 = Date.now();
    await lab.vipdCli('lb2', ['drain', '--config', configs.get('lb2')!]);
    await lab.tor.waitNexthops(PREFIX, 2, 5000, 10);
    process.stdout.write(`lb2 withdrawn ${Date.now() - t3} ms after drain\n`);
    await showTor(lab);
    process.stdout.write(`client during the drain: ${JSON.stringify(await load)}\n`);
    await lab.vipdCli('lb2', ['undrain', '--config', configs.get('lb2')!]);
    await lab.tor.waitNexthops(PREFIX, 3, 5000, 10);
    say('after undrain');
    await showTor(lab);
  } finally {
    say('tearing the lab down');
    const report = await lab.destroy();
    process.stdout.write(`removed ${report.namespaces.length} namespaces and ${report.pids.length} processes\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`lab demo failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
