import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { addressesOf, DEFAULT_CLAB_FILE, labelOf, Layout, LayoutNode, loadLayout, nodesByRole, Role, uplinkOf } from './clab';
import { EtcdCluster, EtcdOptions, ETCD_CLIENT_PORT } from './etcd';
import { BfdProfile, Tor, TorConfigOptions } from './frr';
import { Gobgpd, GobgpdOptions } from './gobgp';
import { NodeRouter, NodeRouterKind, startNodeRouter, VIPD_BESIDE_ASN, vipdSideAddress } from './node-router';
import { DestroyOptions, DestroyReport, LabProcess, NetnsLab, SpawnOptions, sweepStale } from './netns';
import { ExecOptions, ExecResult, REPO_ROOT } from './util';

/** The vipd CLI as built by `tsc -p .`. */
export const VIPD_BIN = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'bin.js');

export interface LabOptions {
  /** lb1..lbN (1..3). Default 3. */
  balancers?: number;
  /** 'etcd' starts the 3-member cluster and waits until it is healthy; 'none' leaves be1..be3 empty. Default 'etcd'. */
  backends?: 'etcd' | 'none';
  /** Configure the IPv6 addresses and routes of the file, and IPv6 BGP sessions on the ToR. Default false. */
  ipv6?: boolean;
  /** Run bfdd on the ToR with BFD on every balancer session; true means 300 ms x 3. Default off. */
  bfd?: boolean | BfdProfile;
  /** The ToR's sessions also carry the other family (MP-BGP), for IPv6 VIPs over IPv4 sessions and the reverse. Default false. */
  mpBgp?: boolean;
  etcd?: EtcdOptions;
  /**
   * A node router in the balancers (docs/beside-frr.md): FRR or BIRD 2 loading the shipped snippet
   * (config/beside-frr, config/beside-bird), peering with the ToR (with BFD 300 ms x 3), and vipd's
   * gobgpd peering with it from 198.18.200.<n> on lo. One kind for every balancer, or one per balancer
   * ('none' or absent: vipd peers with the ToR directly). IPv4 only. Default none.
   */
  nodeRouter?: NodeRouterKind | Readonly<Record<string, NodeRouterKind | 'none'>>;
  /** Default containerlab/vipd-lab.clab.yml. */
  clabFile?: string;
  /** Remove leftovers of crashed earlier runs first (only those whose creator is dead). Default true. */
  sweep?: boolean;
}

export interface LabNode {
  name: string;
  /** The node's network namespace. */
  ns: string;
  role: Role;
  /** Interface towards the ToR (or, for the ToR, undefined). */
  iface: string | undefined;
  v4: string;
  v4Cidr: string;
  v6: string | undefined;
  v6Cidr: string | undefined;
  /** The ToR's address on this node's link: BGP peer address and next hop. */
  torV4: string | undefined;
  torV6: string | undefined;
}

export interface Balancer extends LabNode {
  asn: number;
  routerId: string;
  torV4: string;
}

/** Everything a test needs about one running lab. Build with createLab(), always end with destroy(). */
export interface Lab {
  readonly id: string;
  /** The lab's temp dir: logs/, frr/, etcd/, vipd/, gobgp/. */
  readonly dir: string;
  readonly layout: Layout;
  readonly netns: NetnsLab;
  readonly tor: Tor;
  readonly torNode: LabNode;
  readonly torAsn: number;
  readonly balancers: readonly Balancer[];
  readonly backends: readonly LabNode[];
  readonly client: LabNode;
  readonly vip: string;
  readonly vip6: string;
  readonly etcd: EtcdCluster | null;
  readonly ipv6: boolean;
  /** The balancers' node routers, by balancer name (LabOptions.nodeRouter). */
  readonly nodeRouters: ReadonlyMap<string, NodeRouter & { vipdSession(): Promise<{ state: string; accepted: number }> }>;

  ns(node: string): string;
  node(name: string): LabNode;
  balancer(name: string): Balancer;
  exec(node: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(node: string, argv: readonly string[], opts?: SpawnOptions): LabProcess;

  /**
   * The vipd config for a balancer in the contract shape, with overrides deep-merged (arrays replace, null
   * deletes). Behind a node router: AS 65201, router id and localAddress 198.18.200.<n>, one peer (the node
   * router at the balancer's own address).
   */
  vipdConfig(lb: string, overrides?: Record<string, unknown>): Record<string, unknown>;
  /** Where a balancer's vipd puts its admin socket (inside the lab's temp dir). */
  adminSocket(lb: string): string;
  /** Writes vipdConfig() as YAML to <dir>/vipd/<file or lb.yaml> (overwriting, for reload tests) and returns the path. */
  writeVipdConfig(lb: string, overrides?: Record<string, unknown>, file?: string): string;
  /** Spawns `node dist/src/cli/bin.js run --config FILE` in the balancer's namespace; log in <dir>/logs/<lb>.vipd.log. */
  startVipd(lb: string, configPath: string, opts?: { args?: readonly string[]; env?: NodeJS.ProcessEnv }): LabProcess;
  /** Runs `node dist/src/cli/bin.js ARGS` in the balancer's namespace. */
  vipdCli(lb: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** A plain gobgpd (no vipd) in the balancer, peered with the ToR over IPv4 (and IPv6 if the lab has it). */
  startGobgpd(lb: string, opts?: Partial<GobgpdOptions>): Promise<Gobgpd>;

  destroy(opts?: DestroyOptions): Promise<DestroyReport>;
}

function hostOf(cidr: string | undefined): string | undefined {
  return cidr?.split('/')[0];
}

/** A node's address on `dev` (first of the family), from the layout. */
function addrOn(node: LayoutNode, family: 4 | 6, dev: string | undefined): string | undefined {
  return addressesOf(node, family, dev)[0]?.cidr;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge for config overrides: objects merge, arrays and scalars replace, null removes the key. */
export function mergeConfig(base: Record<string, unknown>, overrides: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === null) delete out[k];
    else if (isPlainObject(v) && isPlainObject(out[k])) out[k] = mergeConfig(out[k] as Record<string, unknown>, v);
    else if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * The vipd config of one balancer, derived from the layout alone (no running lab needed), so that
 * containerlab/lbN/vipd.yaml can be checked against it.
 */
export function vipdConfigFromLayout(layout: Layout, lb: string, backendCount?: number): Record<string, unknown> {
  const node = layout.nodes.get(lb);
  if (!node || node.role !== 'balancer') throw new Error(`${lb} is not a balancer in ${layout.file}`);
  const tor = nodesByRole(layout, 'tor')[0] as LayoutNode;
  const up = uplinkOf(layout, lb);
  const torAsn = Number(labelOf(tor, 'asn'));
  const backends = nodesByRole(layout, 'backend').slice(0, backendCount);
  return {
    node: { name: lb },
    admin: { listen: '127.0.0.1:9180', socket: `/run/vipd/${lb}.sock` },
    speaker: {
      driver: 'gobgp',
      asn: Number(labelOf(node, 'asn')),
      routerId: hostOf(addrOn(node, 4, up.local.iface)),
      gobgp: { manage: true },
      peers: [{ address: hostOf(addrOn(tor, 4, up.remote.iface)), asn: torAsn }],
    },
    vips: [
      {
        name: 'control-plane',
        address: labelOf(node, 'vip'),
        communities: [`${torAsn}:100`],
        listeners: [{ port: ETCD_CLIENT_PORT, pool: 'etcd' }],
      },
    ],
    pools: {
      etcd: {
        balance: 'least-conn',
        backends: backends.map((b) => `${hostOf(addrOn(b, 4, uplinkOf(layout, b.name).local.iface))}:${ETCD_CLIENT_PORT}`),
        check: { kind: 'http', path: '/health', interval: '200ms', timeout: '150ms', rise: 2, fall: 2 },
      },
    },
  };
}

/** The ToR's FRR settings for the given balancers, from the layout's labels and addresses. */
export function torConfigFromLayout(
  layout: Layout,
  balancers: readonly string[],
  opts: { ipv6: boolean; bfd?: BfdProfile | false; mpBgp?: boolean; withoutBfd?: ReadonlySet<string> },
): TorConfigOptions {
  const tor = nodesByRole(layout, 'tor')[0];
  if (!tor) throw new Error(`${layout.file} has no node with vipd.lab/role: tor`);
  const peers = balancers.flatMap((name) => {
    const n = layout.nodes.get(name) as LayoutNode;
    const up = uplinkOf(layout, name);
    const asn = Number(labelOf(n, 'asn'));
    const v4 = hostOf(addrOn(n, 4, up.local.iface));
    const v6 = hostOf(addrOn(n, 6, up.local.iface));
    const out = [];
    const bfd = opts.withoutBfd?.has(name) ? { bfd: false } : {};
    if (v4) out.push({ name, address: v4, asn, ...bfd });
    if (opts.ipv6 && v6) out.push({ name, address: v6, asn, ...bfd });
    return out;
  });
  return {
    asn: Number(labelOf(tor, 'asn')),
    routerId: labelOf(tor, 'router-id'),
    acceptV4: labelOf(tor, 'accept-v4'),
    acceptV6: labelOf(tor, 'accept-v6'),
    peers,
    bfd: opts.bfd ?? false,
    ...(opts.mpBgp ? { mpBgp: true } : {}),
  };
}

class VipdLab implements Lab {
  tor!: Tor;
  torNode!: LabNode;
  torAsn!: number;
  balancers: Balancer[] = [];
  backends: LabNode[] = [];
  client!: LabNode;
  vip!: string;
  vip6!: string;
  etcd: EtcdCluster | null = null;
  nodeRouters = new Map<string, NodeRouter & { vipdSession(): Promise<{ state: string; accepted: number }> }>();

  constructor(
    readonly netns: NetnsLab,
    readonly layout: Layout,
    readonly ipv6: boolean,
  ) {}

  get id(): string {
    return this.netns.id;
  }

  get dir(): string {
    return this.netns.dir;
  }

  ns(node: string): string {
    return this.netns.nsName(node);
  }

  node(name: string): LabNode {
    const all = [this.torNode, ...this.balancers, ...this.backends, this.client];
    const n = all.find((x) => x.name === name);
    if (!n) throw new Error(`lab has no node ${name} (have ${all.map((x) => x.name).join(', ')})`);
    return n;
  }

  balancer(name: string): Balancer {
    const b = this.balancers.find((x) => x.name === name);
    if (!b) throw new Error(`lab has no balancer ${name} (have ${this.balancers.map((x) => x.name).join(', ')})`);
    return b;
  }

  exec(node: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
    return this.netns.exec(node, argv, opts);
  }

  spawn(node: string, argv: readonly string[], opts?: SpawnOptions): LabProcess {
    return this.netns.spawn(node, argv, opts);
  }

  vipdConfig(lb: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
    this.balancer(lb);
    // The drain state and the admin socket live in the lab's own dir: a drain left by one run never reaches
    // another, a vipd restarted within the same lab finds its drains (T34), and parallel labs never meet on
    // /run/vipd/<lb>.sock.
    const perLab = { stateDir: path.join(this.dir, 'vipd-state'), admin: { socket: this.adminSocket(lb) } };
    const router = this.nodeRouters.get(lb);
    const beside = router
      ? {
          speaker: {
            asn: VIPD_BESIDE_ASN,
            routerId: router.addresses.vipd,
            peers: [{ address: router.addresses.node, asn: this.balancer(lb).asn, localAddress: router.addresses.vipd }],
          },
        }
      : this.nodeRouters.size > 0
        ? directBesideRoutedVip(mergeConfig(vipdConfigFromLayout(this.layout, lb, this.backends.length), overrides))
        : {};
    return mergeConfig(mergeConfig(mergeConfig(vipdConfigFromLayout(this.layout, lb, this.backends.length), perLab), beside), overrides);
  }

  adminSocket(lb: string): string {
    return path.join(this.dir, 'vipd', `${lb}.sock`);
  }

  writeVipdConfig(lb: string, overrides: Record<string, unknown> = {}, file?: string): string {
    const dir = path.join(this.dir, 'vipd');
    fs.mkdirSync(dir, { recursive: true });
    const p = path.join(dir, file ?? `${lb}.yaml`);
    fs.writeFileSync(p, `# vipd config for ${lb}, written by test/lab/topology.ts\n${stringify(this.vipdConfig(lb, overrides))}`);
    return p;
  }

  startVipd(lb: string, configPath: string, opts: { args?: readonly string[]; env?: NodeJS.ProcessEnv } = {}): LabProcess {
    this.balancer(lb);
    return this.netns.spawn(lb, [process.execPath, VIPD_BIN, 'run', '--config', configPath, ...(opts.args ?? [])], {
      name: 'vipd',
      ...(opts.env ? { env: opts.env } : {}),
    });
  }

  vipdCli(lb: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
    this.balancer(lb);
    return this.netns.exec(lb, [process.execPath, VIPD_BIN, ...args], opts);
  }

  startGobgpd(lb: string, opts: Partial<GobgpdOptions> = {}): Promise<Gobgpd> {
    const b = this.balancer(lb);
    const neighbors = [{ address: b.torV4, asn: this.torAsn }];
    if (this.ipv6 && b.torV6) neighbors.push({ address: b.torV6, asn: this.torAsn });
    return Gobgpd.start(this.netns, lb, { asn: b.asn, routerId: b.routerId, neighbors, ...opts });
  }

  destroy(opts?: DestroyOptions): Promise<DestroyReport> {
    return this.netns.destroy(opts);
  }
}

/**
 * In a lab that mixes balancers behind a node router (AS path "65001 65201" at the ToR) with direct ones
 * ("65001"), a direct balancer prepends its AS once, so that every path ties in length and the ToR keeps
 * them all in ECMP (multipath-relax ignores the ASNs, not the length). A lab of one kind needs none.
 */
function directBesideRoutedVip(config: Record<string, unknown>): Record<string, unknown> {
  const vips = (config.vips as Array<Record<string, unknown>>).map((v) => {
    const { communities, ...rest } = v;
    return { ...rest, attributes: { up: { communities: communities ?? [], asPathPrepend: 1 } } };
  });
  return { vips };
}

/** Which balancers run which node router (LabOptions.nodeRouter); unknown names are refused. */
function nodeRouterKinds(option: LabOptions['nodeRouter'], balancers: readonly string[]): Map<string, NodeRouterKind> {
  const out = new Map<string, NodeRouterKind>();
  if (option === undefined) return out;
  if (typeof option === 'string') {
    for (const b of balancers) out.set(b, option);
    return out;
  }
  for (const [name, kind] of Object.entries(option)) {
    if (!balancers.includes(name)) throw new Error(`nodeRouter: ${name} is not a balancer of this lab (have ${balancers.join(', ')})`);
    if (kind !== 'none') out.set(name, kind);
  }
  return out;
}

function ifaceOfSysctl(key: string): string | undefined {
  const m = /^net\.ipv[46]\.conf\.([^.]+)\./.exec(key);
  const dev = m?.[1];
  return dev === undefined || dev === 'all' || dev === 'default' || dev === 'lo' ? undefined : dev;
}

/**
 * Builds the lab from the containerlab file: namespaces for the ToR, lb1..lbN, every backend and the
 * client; the file's links among them; each node's exec steps replayed in order; FRR on the ToR; etcd on
 * the backends. On any failure everything built so far is destroyed before the error is rethrown.
 */
export async function createLab(options: LabOptions = {}): Promise<Lab> {
  const layout = loadLayout(options.clabFile ?? DEFAULT_CLAB_FILE);
  const ipv6 = options.ipv6 ?? false;
  const allBalancers = nodesByRole(layout, 'balancer');
  const want = options.balancers ?? 3;
  if (!Number.isInteger(want) || want < 1 || want > allBalancers.length) {
    throw new Error(`balancers must be 1..${allBalancers.length}, got ${want}`);
  }
  const torSpec = nodesByRole(layout, 'tor');
  const clientSpec = nodesByRole(layout, 'client');
  if (torSpec.length !== 1 || clientSpec.length !== 1) throw new Error(`${layout.file} needs exactly one tor and one client node`);
  const selected = [...torSpec, ...allBalancers.slice(0, want), ...nodesByRole(layout, 'backend'), ...clientSpec];
  const names = new Set(selected.map((n) => n.name));

  if (options.sweep ?? true) await sweepStale();
  const netns = await NetnsLab.create();
  const lab = new VipdLab(netns, layout, ipv6);
  try {
    // Before any link exists, so every interface is created without DAD (IPv6 addresses usable at once).
    const early = { 'net.ipv6.conf.all.accept_dad': '0', 'net.ipv6.conf.default.accept_dad': '0' };
    await Promise.all(selected.map((n) => netns.addNode(n.name, early)));

    const presentIfaces = new Map<string, Set<string>>(selected.map((n) => [n.name, new Set<string>()]));
    for (const l of layout.links) {
      if (!names.has(l.a.node) || !names.has(l.b.node)) continue;
      await netns.addVeth(l.a.node, l.a.iface, l.b.node, l.b.iface);
      presentIfaces.get(l.a.node)?.add(l.a.iface);
      presentIfaces.get(l.b.node)?.add(l.b.iface);
    }

    await Promise.all(
      selected.map(async (n) => {
        const ifaces = presentIfaces.get(n.name) as Set<string>;
        for (const s of n.steps) {
          if (s.kind === 'sysctl') {
            const dev = ifaceOfSysctl(s.key);
            if (dev !== undefined && !ifaces.has(dev)) continue;
            await netns.sysctl(n.name, { [s.key]: s.value });
          } else if (s.kind === 'addr') {
            if ((s.family === 6 && !ipv6) || !ifaces.has(s.dev)) continue;
            await netns.addAddress(n.name, s.dev, s.cidr);
          } else {
            if (s.family === 6 && !ipv6) continue;
            await netns.addRoute(n.name, s.dst, s.via);
          }
        }
      }),
    );

    const describe = (spec: LayoutNode): LabNode => {
      const isTor = spec.role === 'tor';
      const up = isTor ? undefined : uplinkOf(layout, spec.name);
      const dev = up?.local.iface;
      const v4Cidr = addrOn(spec, 4, dev);
      if (!v4Cidr) throw new Error(`${layout.file}: node ${spec.name} has no IPv4 address`);
      const torSpecNode = torSpec[0] as LayoutNode;
      const v6Cidr = ipv6 ? addrOn(spec, 6, dev) : undefined;
      return {
        name: spec.name,
        ns: netns.nsName(spec.name),
        role: spec.role,
        iface: dev,
        v4: hostOf(v4Cidr) as string,
        v4Cidr,
        v6: hostOf(v6Cidr),
        v6Cidr,
        torV4: up ? hostOf(addrOn(torSpecNode, 4, up.remote.iface)) : undefined,
        torV6: up && ipv6 ? hostOf(addrOn(torSpecNode, 6, up.remote.iface)) : undefined,
      };
    };

    lab.torNode = describe(torSpec[0] as LayoutNode);
    lab.torAsn = Number(labelOf(torSpec[0] as LayoutNode, 'asn'));
    lab.balancers = allBalancers.slice(0, want).map((spec) => {
      const d = describe(spec);
      return { ...d, torV4: d.torV4 as string, asn: Number(labelOf(spec, 'asn')), routerId: d.v4 };
    });
    lab.backends = nodesByRole(layout, 'backend').map(describe);
    lab.client = describe(clientSpec[0] as LayoutNode);
    const firstLb = allBalancers[0] as LayoutNode;
    lab.vip = labelOf(firstLb, 'vip');
    lab.vip6 = labelOf(firstLb, 'vip6');

    const routed = nodeRouterKinds(options.nodeRouter, lab.balancers.map((b) => b.name));
    if (routed.size > 0 && ipv6) throw new Error('nodeRouter: the shipped node router snippets are IPv4 only (ipv6: false)');
    // Node routers run BFD toward the ToR; a balancer without one has only gobgpd, which has none.
    const bfd = options.bfd === true || (options.bfd === undefined && routed.size > 0) ? { intervalMs: 300, multiplier: 3 } : options.bfd || false;
    const withoutBfd = new Set(lab.balancers.map((b) => b.name).filter((n) => !routed.has(n)));
    lab.tor = await Tor.start(netns, lab.torNode.name, torConfigFromLayout(layout, lab.balancers.map((b) => b.name), { ipv6, bfd, mpBgp: options.mpBgp ?? false, withoutBfd }));
    for (const [name, kind] of routed) {
      const b = lab.balancer(name);
      const n = allBalancers.findIndex((x) => x.name === name) + 1;
      const addresses = { hostname: name, node: b.v4, tor: b.torV4, vipd: vipdSideAddress(n) };
      await netns.addAddress(name, 'lo', `${addresses.vipd}/32`);
      lab.nodeRouters.set(name, await startNodeRouter(kind, netns, name, addresses));
    }

    if ((options.backends ?? 'etcd') === 'etcd') {
      lab.etcd = await EtcdCluster.start(
        netns,
        lab.backends.map((b) => ({ name: b.name, address: b.v4 })),
        { clientNode: lab.client.name, ...options.etcd },
      );
    }
    return lab;
  } catch (err) {
    await netns.destroy({ graceMs: 500 });
    throw err;
  }
}
