import * as fs from 'node:fs';
import * as path from 'node:path';
import { FrrRouter } from './frr';
import { LabProcess, NetnsLab } from './netns';
import { ExecResult, REPO_ROOT, run, WaitAborted, waitFor } from './util';

/**
 * A balancer's own router ("node router"): FRR or BIRD 2 in the balancer's namespace, peering with the
 * ToR, with vipd's managed gobgpd peering with it over a local session (docs/beside-frr.md). Both load
 * the snippets shipped in config/, with only the addresses that differ per balancer replaced, so what
 * the tests prove is what users copy.
 */

export type NodeRouterKind = 'frr' | 'bird';

export const BESIDE_FRR_CONF = path.join(REPO_ROOT, 'config', 'beside-frr', 'frr.conf');
export const BESIDE_BIRD_CONF = path.join(REPO_ROOT, 'config', 'beside-bird', 'bird.conf');

/** vipd's private AS behind a node router, as in the shipped snippets. */
export const VIPD_BESIDE_ASN = 65201;

/** What differs per balancer in the shipped snippets. */
export interface NodeRouterAddresses {
  readonly hostname: string;
  /** The balancer's address toward the ToR: the node router's router id and vipd's peer address. */
  readonly node: string;
  readonly tor: string;
  /** vipd's /32 on lo: its localAddress and router id. */
  readonly vipd: string;
}

/** The values the shipped snippets carry: node lb1 of the lab. */
export const SNIPPET_ADDRESSES: NodeRouterAddresses = { hostname: 'lb1', node: '198.18.1.2', tor: '198.18.1.1', vipd: '198.18.200.1' };

/** vipd's own /32 on lo of the n-th balancer (1-based), 198.18.200.n. */
export function vipdSideAddress(n: number): string {
  if (!Number.isInteger(n) || n < 1 || n > 254) throw new Error(`balancer number ${n} out of 1..254`);
  return `198.18.200.${n}`;
}

/**
 * The shipped snippet with lb1's addresses replaced by `to`'s, in one pass (198.18.1.1 must not touch
 * 198.18.1.10). Throws when the snippet no longer holds one of lb1's values: the tests would otherwise
 * prove a file other than the one shipped.
 */
export function templateSnippet(text: string, file: string, to: NodeRouterAddresses): string {
  const from = SNIPPET_ADDRESSES;
  const map = new Map<string, string>([
    [from.node, to.node],
    [from.tor, to.tor],
    [from.vipd, to.vipd],
  ]);
  const re = new RegExp(`(?<![\\d.])(${[...map.keys()].map((a) => a.replace(/\./g, '\\.')).join('|')})(?![\\d])`, 'g');
  for (const a of map.keys()) {
    if (!new RegExp(`(?<![\\d.])${a.replace(/\./g, '\\.')}(?![\\d])`).test(text)) throw new Error(`${file} no longer holds lb1's address ${a}: update test/lab/node-router.ts`);
  }
  let out = text.replace(re, (a) => map.get(a) as string);
  const host = new RegExp(`^hostname ${from.hostname}$`, 'm');
  if (host.test(out)) out = out.replace(host, `hostname ${to.hostname}`);
  return out;
}

export interface NodeRouter {
  readonly kind: NodeRouterKind;
  readonly node: string;
  readonly addresses: NodeRouterAddresses;
  /** The config it runs (the shipped snippet, templated). */
  readonly configText: string;
  /** Every process of the router (for freezing a whole balancer). */
  processes(): LabProcess[];
  stop(): Promise<void>;
}

/** The node's FRR: zebra, staticd, bfdd and bgpd, all reading the one shared frr.conf with -f. */
export class NodeFrr extends FrrRouter implements NodeRouter {
  readonly kind = 'frr' as const;

  private constructor(
    lab: NetnsLab,
    node: string,
    readonly addresses: NodeRouterAddresses,
    readonly configText: string,
  ) {
    const dir = path.join(lab.dir, `frr-${node}`);
    super(lab, node, dir, () => path.join(dir, 'frr.conf'));
  }

  static async start(lab: NetnsLab, node: string, addresses: NodeRouterAddresses): Promise<NodeFrr> {
    const text = templateSnippet(await fs.promises.readFile(BESIDE_FRR_CONF, 'utf8'), BESIDE_FRR_CONF, addresses);
    const r = new NodeFrr(lab, node, addresses, text);
    await r.prepareDir({ 'frr.conf': text });
    for (const d of ['zebra', 'staticd', 'bfdd', 'bgpd'] as const) await r.startDaemon(d);
    return r;
  }

  processes(): LabProcess[] {
    return [...this.procs.values()].filter((p) => p.running);
  }

  /** The node FRR's view of the vipd session: state and prefixes accepted (`show bgp neighbors X json`). */
  async vipdSession(): Promise<{ state: string; accepted: number }> {
    const j = await this.vtyshJson<Record<string, { bgpState?: string; addressFamilyInfo?: { ipv4Unicast?: { acceptedPrefixCounter?: number } } }>>(`show bgp neighbors ${this.addresses.vipd} json`);
    const n = j[this.addresses.vipd];
    return { state: n?.bgpState ?? 'Unknown', accepted: n?.addressFamilyInfo?.ipv4Unicast?.acceptedPrefixCounter ?? 0 };
  }
}

/** The node's BIRD 2: one process, its control socket in <lab dir>/bird-<node>. */
export class NodeBird implements NodeRouter {
  readonly kind = 'bird' as const;
  private proc: LabProcess | undefined;

  private constructor(
    readonly node: string,
    readonly dir: string,
    readonly addresses: NodeRouterAddresses,
    readonly configText: string,
  ) {}

  static async start(lab: NetnsLab, node: string, addresses: NodeRouterAddresses): Promise<NodeBird> {
    const text = templateSnippet(await fs.promises.readFile(BESIDE_BIRD_CONF, 'utf8'), BESIDE_BIRD_CONF, addresses);
    const dir = path.join(lab.dir, `bird-${node}`);
    await fs.promises.mkdir(dir, { mode: 0o700 });
    await fs.promises.writeFile(path.join(dir, 'bird.conf'), text);
    const r = new NodeBird(node, dir, addresses, text);
    r.proc = lab.spawn(node, ['bird', '-f', '-c', path.join(dir, 'bird.conf'), '-s', r.socket, '-P', path.join(dir, 'bird.pid')], { name: 'bird' });
    const proc = r.proc;
    await waitFor(
      async () => {
        if (!proc.running) throw new WaitAborted(`bird exited: ${JSON.stringify(proc.exitStatus)}\n${proc.logTail(10)}`);
        return fs.existsSync(r.socket) && (await r.birdcRaw(['show', 'status'])).code === 0;
      },
      10_000,
      25,
      `bird on ${node}`,
    );
    return r;
  }

  get socket(): string {
    return path.join(this.dir, 'bird.ctl');
  }

  processes(): LabProcess[] {
    return this.proc?.running ? [this.proc] : [];
  }

  private birdcRaw(args: readonly string[]): Promise<ExecResult> {
    return run(['birdc', '-s', this.socket, ...args], { timeoutMs: 10_000 });
  }

  async birdc(...args: string[]): Promise<string> {
    const r = await this.birdcRaw(args);
    if (r.code !== 0) throw new Error(`birdc ${args.join(' ')} failed (exit ${r.code}): ${(r.stderr + r.stdout).trim()}`);
    return r.stdout;
  }

  /** BIRD's view of the vipd session: state and routes imported (`birdc show protocols all vipd`). */
  async vipdSession(): Promise<{ state: string; accepted: number }> {
    const out = await this.birdc('show', 'protocols', 'all', 'vipd');
    const state = /BGP state:\s+(\S+)/.exec(out)?.[1] ?? 'Unknown';
    const accepted = Number(/Routes:\s+(\d+) imported/.exec(out)?.[1] ?? 0);
    return { state, accepted };
  }

  async stop(): Promise<void> {
    await this.proc?.stop(3000);
  }
}

export function startNodeRouter(kind: NodeRouterKind, lab: NetnsLab, node: string, addresses: NodeRouterAddresses): Promise<NodeRouter & { vipdSession(): Promise<{ state: string; accepted: number }> }> {
  return kind === 'frr' ? NodeFrr.start(lab, node, addresses) : NodeBird.start(lab, node, addresses);
}
