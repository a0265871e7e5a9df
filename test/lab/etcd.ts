import * as fs from 'node:fs';
import * as path from 'node:path';
import { LabProcess, NetnsLab } from './netns';
import { ExecResult, WaitAborted, waitFor } from './util';

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

export interface EtcdMemberSpec {
  /** Member name, also the lab node it runs in (be1..be3). */
  name: string;
  address: string;
}

export interface EtcdOptions {
  /** etcd defaults (100 / 1000 ms); lower them only for tests about leader loss. */
  heartbeatMs?: number;
  electionMs?: number;
  /** Node that etcdctl runs in by default: the client namespace, so checks cross the ToR like real clients. */
  clientNode?: string;
}

export class EtcdMember {
  process: LabProcess | undefined;
  starts = 0;

  constructor(
    readonly name: string,
    readonly address: string,
    readonly dataDir: string,
  ) {}

  get endpoint(): string {
    return `${this.address}:${ETCD_CLIENT_PORT}`;
  }

  get clientUrl(): string {
    return `http://${this.endpoint}`;
  }

  get peerUrl(): string {
    return `http://${this.address}:${ETCD_PEER_PORT}`;
  }

  get running(): boolean {
    return this.process?.running ?? false;
  }
}

/** `--initial-cluster` for these members (containerlab's etcd-member.sh gets the same string). */
export function etcdInitialCluster(members: readonly EtcdMemberSpec[]): string {
  return members.map((m) => `${m.name}=http://${m.address}:${ETCD_PEER_PORT}`).join(',');
}

/** A real three-member etcd 3.4 cluster, one member per backend namespace, data under <lab dir>/etcd. */
export class EtcdCluster {
  readonly members: readonly EtcdMember[];
  private readonly token: string;
  private readonly clientNode: string;

  private constructor(
    private readonly lab: NetnsLab,
    specs: readonly EtcdMemberSpec[],
    private readonly opts: EtcdOptions,
  ) {
    const root = path.join(lab.dir, 'etcd');
    this.members = specs.map((s) => new EtcdMember(s.name, s.address, path.join(root, `${s.name}.data`)));
    // A per-lab token keeps members of two labs from ever joining each other's cluster.
    this.token = `vipd-lab-${lab.id}`;
    this.clientNode = opts.clientNode ?? 'client';
  }

  static async start(lab: NetnsLab, specs: readonly EtcdMemberSpec[], opts: EtcdOptions = {}): Promise<EtcdCluster> {
    const c = new EtcdCluster(lab, specs, opts);
    await fs.promises.mkdir(path.join(lab.dir, 'etcd'), { recursive: true, mode: 0o700 });
    for (const m of c.members) c.startMember(m.name);
    await c.waitHealthy();
    return c;
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.endpoint);
  }

  member(name: string): EtcdMember {
    const m = this.members.find((x) => x.name === name);
    if (!m) throw new Error(`no etcd member ${name} (have ${this.members.map((x) => x.name).join(', ')})`);
    return m;
  }

  /**
   * Starts (or restarts) a member on its data dir. `--initial-cluster-state new` is passed every time:
   * etcd ignores the initial-cluster flags once the data dir holds a WAL, so a restart rejoins as itself.
   */
  startMember(name: string): LabProcess {
    const m = this.member(name);
    if (m.running) throw new Error(`etcd ${name} is already running (pid ${m.process?.pid})`);
    const initialCluster = etcdInitialCluster(this.members);
    const argv = [
      'etcd',
      '--name',
      m.name,
      '--data-dir',
      m.dataDir,
      '--listen-client-urls',
      `${m.clientUrl},http://127.0.0.1:${ETCD_CLIENT_PORT}`,
      '--advertise-client-urls',
      m.clientUrl,
      '--listen-peer-urls',
      m.peerUrl,
      '--initial-advertise-peer-urls',
      m.peerUrl,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-token',
      this.token,
      '--initial-cluster-state',
      'new',
      '--heartbeat-interval',
      String(this.opts.heartbeatMs ?? 100),
      '--election-timeout',
      String(this.opts.electionMs ?? 1000),
      '--logger',
      'zap',
      '--log-outputs',
      'stderr',
    ];
    m.process = this.lab.spawn(m.name, argv, { name: 'etcd' });
    m.starts++;
    return m.process;
  }

  /** Graceful stop (SIGTERM, SIGKILL after timeoutMs). */
  async stop(name: string, timeoutMs = 5000): Promise<void> {
    await this.member(name).process?.stop(timeoutMs);
  }

  /** Crash: SIGKILL, and wait until the process is gone. */
  async kill(name: string): Promise<void> {
    const p = this.member(name).process;
    if (!p?.running) return;
    p.kill('SIGKILL');
    await p.exited;
  }

  /** Hang: SIGSTOP. The kernel still completes TCP handshakes on its ports; nothing answers. */
  pause(name: string): void {
    this.member(name).process?.kill('SIGSTOP');
  }

  resume(name: string): void {
    this.member(name).process?.kill('SIGCONT');
  }

  /** Stops the member if it runs (SIGTERM, or SIGKILL with crash: true) and starts it on the same data dir. */
  async restart(name: string, opts: { crash?: boolean } = {}): Promise<LabProcess> {
    if (opts.crash) await this.kill(name);
    else await this.stop(name);
    return this.startMember(name);
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.members.map((m) => m.process?.stop(1000)));
  }

  /** etcdctl (API v3) against the given endpoints (default: all members), run in the client namespace. */
  etcdctl(args: readonly string[], opts: { endpoints?: readonly string[]; node?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    const endpoints = (opts.endpoints ?? this.endpoints).join(',');
    return this.lab.exec(
      opts.node ?? this.clientNode,
      ['etcdctl', '--endpoints', endpoints, '--dial-timeout', '2s', '--command-timeout', '3s', ...args],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeoutMs: opts.timeoutMs ?? 15_000 },
    );
  }

  /** `etcdctl endpoint health`; exit code 0 only if every endpoint given is healthy. */
  health(endpoints?: readonly string[], node?: string): Promise<ExecResult> {
    return this.etcdctl(['endpoint', 'health'], { ...(endpoints ? { endpoints } : {}), ...(node ? { node } : {}) });
  }

  /** Waits until the named members (default: all) report healthy; returns the elapsed ms. */
  async waitHealthy(names?: readonly string[], timeoutMs = 30_000): Promise<number> {
    const endpoints = (names ?? this.members.map((m) => m.name)).map((n) => this.member(n).endpoint);
    return waitFor(
      async () => {
        for (const m of this.members) {
          if (endpoints.includes(m.endpoint) && !m.running) throw new WaitAborted(`etcd ${m.name} exited:\n${m.process?.logTail(15) ?? ''}`);
        }
        return (await this.health(endpoints)).code === 0;
      },
      timeoutMs,
      200,
      `etcd healthy on ${endpoints.join(', ')}`,
    );
  }
}
