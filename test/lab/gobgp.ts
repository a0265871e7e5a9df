import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { LabProcess, NetnsLab } from './netns';
import { ExecResult, WaitAborted, waitFor } from './util';

export interface GobgpdNeighbor {
  address: string;
  asn: number;
}

export interface GobgpdOptions {
  asn: number;
  routerId: string;
  neighbors: readonly GobgpdNeighbor[];
  /** gRPC API, on the namespace's own loopback. */
  api?: string;
  /** BGP listen port; -1 (default) listens nowhere and only dials out, as managed mode does. */
  port?: number;
  holdTimeS?: number;
  keepaliveS?: number;
  connectRetryS?: number;
}

/**
 * A plain gobgpd in a balancer namespace, without vipd: for lab checks and for tests that need a BGP
 * speaker whose paths are set by hand with the gobgp CLI.
 */
export class Gobgpd {
  private constructor(
    private readonly lab: NetnsLab,
    readonly node: string,
    readonly api: string,
    readonly configPath: string,
    readonly process: LabProcess,
  ) {}

  static async start(lab: NetnsLab, node: string, o: GobgpdOptions): Promise<Gobgpd> {
    const api = o.api ?? '127.0.0.1:50051';
    const config = {
      global: { config: { as: o.asn, 'router-id': o.routerId, port: o.port ?? -1 } },
      neighbors: o.neighbors.map((n) => ({
        config: { 'neighbor-address': n.address, 'peer-as': n.asn },
        timers: {
          config: {
            'hold-time': o.holdTimeS ?? 3,
            'keepalive-interval': o.keepaliveS ?? 1,
            'connect-retry': o.connectRetryS ?? 5,
          },
        },
        'afi-safis': [{ config: { 'afi-safi-name': n.address.includes(':') ? 'ipv6-unicast' : 'ipv4-unicast' } }],
      })),
    };
    const dir = path.join(lab.dir, 'gobgp');
    await fs.promises.mkdir(dir, { recursive: true });
    const configPath = path.join(dir, `${node}.yaml`);
    await fs.promises.writeFile(configPath, stringify(config));
    const proc = lab.spawn(node, ['gobgpd', '-f', configPath, '-t', 'yaml', '--api-hosts', api, '--pprof-disable', '-p', '-l', 'info'], {
      name: 'gobgpd',
    });
    const g = new Gobgpd(lab, node, api, configPath, proc);
    await waitFor(
      async () => {
        if (!proc.running) throw new WaitAborted(`gobgpd in ${node} exited:\n${proc.logTail(15)}`);
        return (await g.cli(['global'])).code === 0;
      },
      10_000,
      25,
      `gobgpd API in ${node}`,
    );
    return g;
  }

  /** The gobgp CLI against this daemon's API, inside its namespace. */
  cli(args: readonly string[]): Promise<ExecResult> {
    const i = this.api.lastIndexOf(':');
    return this.lab.exec(this.node, ['gobgp', '-u', this.api.slice(0, i), '-p', this.api.slice(i + 1), ...args], { timeoutMs: 10_000 });
  }

  private async cliOk(args: readonly string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`gobgp ${args.join(' ')} in ${this.node} failed: ${(r.stderr + r.stdout).trim()}`);
    return r.stdout;
  }

  /** `gobgp global rib add -a ipv4|ipv6 PREFIX [community ...]`. */
  async addPath(prefix: string, opts: { communities?: readonly string[] } = {}): Promise<void> {
    const args = ['global', 'rib', 'add', '-a', prefix.includes(':') ? 'ipv6' : 'ipv4', prefix];
    if (opts.communities?.length) args.push('community', opts.communities.join(','));
    await this.cliOk(args);
  }

  async deletePath(prefix: string): Promise<void> {
    await this.cliOk(['global', 'rib', 'del', '-a', prefix.includes(':') ? 'ipv6' : 'ipv4', prefix]);
  }

  /** Prefixes this daemon is sending to a neighbor (its adj-rib-out). */
  async adjOut(neighbor: string): Promise<string[]> {
    const out = await this.cliOk(['neighbor', neighbor, 'adj-out', '-a', neighbor.includes(':') ? 'ipv6' : 'ipv4', '-j']);
    const j = JSON.parse(out || '{}') as Record<string, unknown>;
    return Object.keys(j);
  }

  /** The session state as gobgp names it ("established", "active", ...). */
  async neighborState(neighbor: string): Promise<string> {
    const out = await this.cliOk(['neighbor', neighbor, '-j']);
    const j = JSON.parse(out) as { state?: { session_state?: number | string } };
    const s = j.state?.session_state;
    const names = ['unknown', 'idle', 'connect', 'active', 'opensent', 'openconfirm', 'established'];
    return typeof s === 'number' ? (names[s] ?? String(s)) : String(s ?? 'unknown').toLowerCase();
  }

  stop(timeoutMs = 3000): Promise<unknown> {
    return this.process.stop(timeoutMs);
  }
}
