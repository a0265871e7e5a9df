import net from 'node:net';
import { Backoff } from '../../lib/backoff';
import { sleep, type Clock, type TimerHandle } from '../../lib/clock';
import { VipdError, errorMessage } from '../../lib/errors';
import { ListenerSet } from '../../lib/listener-set';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import { LatestOnlyQueue } from '../../lib/serial-queue';
import { StateMachine } from '../../lib/transition';
import type { AddressFamily, Advertisement, PeerStatus, Speaker, SpeakerEvent, SpeakerSync } from '../speaker';
import { GobgpApiError, GobgpClient, type GobgpApiClient, type PeerEventWatch } from './client';
import {
  UNICAST_FAMILIES,
  canonicalPrefix,
  decodeDestination,
  encodeAddPath,
  encodeDeletePath,
  offeredFamilies,
  prefixFamily,
  routeFromAdvertisement,
  sameRoute,
  type RibFamily,
  type RibRoute,
} from './codec';
import type { GobgpdConfig, GobgpdFamily, GobgpdGracefulRestart } from './gobgpd-config';
import { defaultIpv6NextHop, type NextHopProbes } from './next-hop';
import { PathGuardian } from './guardian';
import { carriesMark } from './ownership';
import { PeerTable, canonicalPeerAddress } from './peers';
import { DriftTracker } from './drift';
import { GobgpdSupervisor, type SupervisorEvent } from './supervisor';

export interface GobgpPeerOptions {
  readonly address: string;
  readonly asn: number;
  /** Default 3. */
  readonly holdTimeS?: number;
  /** Default 1. */
  readonly keepaliveS?: number;
  /** Default 5. */
  readonly connectRetryS?: number;
  /** TCP MD5 password. */
  readonly password?: string;
  /** Enables eBGP multihop with this TTL (peering with a loopback). */
  readonly ebgpMultihopTtl?: number;
  readonly localAddress?: string;
  /** Managed mode: wait for the peer to connect (needs listenPort >= 0). */
  readonly passive?: boolean;
  /** Managed mode: GTSM (RFC 5082) for a peer this many hops away; excludes ebgpMultihopTtl. */
  readonly ttlSecurityHops?: number;
  /**
   * Families the session carries (MP-BGP). Default: the family of the peer's address only. Managed
   * mode writes them into gobgpd's config; external mode takes them as what the session carries.
   */
  readonly families?: readonly GobgpdFamily[];
  /**
   * Managed mode, IPv4 session carrying ipv6-unicast: the next hop of its IPv6 paths. Default: a global
   * IPv6 address of this node on the interface towards the peer (next-hop.ts); gobgpd's own
   * ::ffff:a.b.c.d is never installed by FRR.
   */
  readonly nextHopIpv6?: string;
  /** Managed mode, IPv6 session carrying ipv4-unicast: the next hop of its IPv4 paths. Default: gobgpd's (the session's IPv6 address). */
  readonly nextHopIpv4?: string;
}

export interface GobgpSpeakerOptions {
  readonly asn: number;
  readonly routerId: string;
  /** true: vipd runs gobgpd as its child. false: an external gobgpd at `api`. */
  readonly manage: boolean;
  /**
   * "127.0.0.1:50051", "[::1]:50051" or "unix:/absolute/path". Required when manage is false.
   * Managed default: a unix socket in the daemon's private directory.
   */
  readonly api?: string;
  /** Managed mode: a TCP `api` is refused unless this is set (gobgpd's API is unauthenticated). */
  readonly allowTcpApi?: boolean;
  /** Managed mode: the unprivileged user gobgpd runs as. Default `nobody`. */
  readonly user?: string;
  readonly gobgpdPath?: string;
  readonly setprivPath?: string;
  /** Managed mode: how the default IPv6 next hop is found (tests inject the interfaces). */
  readonly nextHopProbes?: NextHopProbes;
  /** Managed mode: BGP listen port; default -1 (dial out only). */
  readonly listenPort?: number;
  /** Managed mode, with listenPort >= 1: the addresses gobgpd listens on (required then). */
  readonly listenAddresses?: readonly string[];
  /** Managed mode: graceful restart toward every peer; unset, off. */
  readonly gracefulRestart?: GobgpdGracefulRestart;
  /** Managed mode: written into gobgpd's config. External mode: the peers to report in peers(). */
  readonly peers: readonly GobgpPeerOptions[];
  /** Default 3000. */
  readonly reconcileIntervalMs?: number;
  /** Deadline of each API call. Default 5000. */
  readonly apiDeadlineMs?: number;
  /** How long start() waits for the API to answer. Default 10000. */
  readonly startTimeoutMs?: number;
  /** Managed mode: run gobgpd under a command that execs it, e.g. ["ip", "netns", "exec", "blue"]. */
  readonly commandPrefix?: readonly string[];
  /** Managed mode: delays between restarts of a gobgpd that exits. Default 500 ms .. 30 s. */
  readonly restartBackoff?: { readonly initialMs: number; readonly maxMs: number };
  /** Managed mode: where gobgpd's private directory is created; default os.tmpdir(). */
  readonly runtimeDir?: string;
  /**
   * Managed mode: stop gobgpd when vipd's event loop has been silent this long (GobgpdSupervisorOptions).
   * External mode with a guardian: the guardian deletes vipd's paths then.
   */
  readonly hangTimeoutMs?: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Lets tests put a fake in place of the gRPC client. */
  readonly clientFactory?: (address: string) => GobgpApiClient;
  /**
   * A gobgpd shared with others (external): vipd stamps this large community on every path it adds and
   * deletes only local paths that carry it (ownership.ts). Unset: every local path is vipd's, and one it
   * does not want is deleted whoever added it (the managed gobgpd, T27).
   */
  readonly ownerMark?: string;
  /** With ownerMark: run the path guardian (guardian.ts) that deletes the marked paths if vipd dies. */
  readonly guardian?: { readonly entryPath?: string };
  /** Delays between retries of a reconciliation that failed (gobgpd refused a call). Default 250 ms .. 10 s. */
  readonly retryBackoff?: { readonly initialMs: number; readonly maxMs: number };
}

/**
 * A Speaker over gobgpd's gRPC API, optionally supervising gobgpd itself. It reconciles gobgpd's
 * global RIB (locally originated paths) with the desired set: after every setAdvertisements, when
 * the WatchEvent stream comes back, when it fails, and every reconcileIntervalMs. Local paths that are
 * not in the desired set are deleted whoever added them.
 */
/** A gobgp speaker, plus what a reload may change while it runs. */
export interface GobgpSpeakerHandle extends Speaker {
  /**
   * Reload: the BGP peers become `peers`. Managed: gobgpd's config is rewritten and gobgpd applies only
   * the changed neighbors (unchanged sessions stay up). External: only what vipd expects and reports
   * changes. Rejects, changing nothing, when gobgpd refuses the new neighbors or is not running.
   */
  setPeers(peers: readonly GobgpPeerOptions[]): Promise<void>;
}

export function createGobgpSpeaker(options: GobgpSpeakerOptions): GobgpSpeakerHandle {
  return new GobgpSpeaker(options);
}

type SpeakerState = 'new' | 'starting' | 'running' | 'closing' | 'closed';

/** Why a reconciliation ran, in the order used to label one that several asked for. */
const TRIGGERS = ['close', 'push', 'start', 'reconnect', 'watch-error', 'retry', 'interval', 'peers'] as const;
type Trigger = (typeof TRIGGERS)[number];

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

const FAMILIES: readonly RibFamily[] = ['ipv4', 'ipv6'];

function closedError(): VipdError {
  return new VipdError('VIPD_ERR_CLOSED', 'gobgp speaker is closed');
}

function toPeerFamilies(peer: GobgpPeerOptions): readonly GobgpdFamily[] {
  return peer.families ?? [net.isIPv6(peer.address) ? 'ipv6-unicast' : 'ipv4-unicast'];
}

const RIB_FAMILY: Readonly<Record<AddressFamily, RibFamily>> = { 'ipv4-unicast': 'ipv4', 'ipv6-unicast': 'ipv6' };
const NOT_CLOSED: readonly SpeakerState[] = ['new', 'starting', 'running', 'closing'];

class GobgpSpeaker implements GobgpSpeakerHandle {
  private readonly machine: StateMachine<SpeakerState>;
  private startPromise: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;
  private destroyPromise: Promise<void> | undefined;
  /** By peer: what its adj-RIB-out holds, for the families its session negotiated (advertised()). */
  private adjOut: ReadonlyMap<string, readonly string[]> = new Map();
  /** By established peer: the configured families its OPEN accepted. */
  private negotiated: ReadonlyMap<string, readonly AddressFamily[]> = new Map();
  private desired = new Map<string, RibRoute>();
  /** What vipd itself last put into gobgpd: tells a repair from an intended change. */
  private readonly applied = new Map<string, RibRoute>();
  private readonly queue = new LatestOnlyQueue();
  private waiters: Waiter[] = [];
  private triggers = new Set<Trigger>();
  private client: GobgpApiClient | undefined;
  private supervisor: GobgpdSupervisor | undefined;
  private watch: PeerEventWatch | undefined;
  private watchHasSynced = false;
  private watchTimer: TimerHandle | undefined;
  private intervalTimer: TimerHandle | undefined;
  private apiUp: boolean | undefined;
  private readonly watchBackoff = new Backoff(250, 5000);
  private readonly listeners: ListenerSet<SpeakerEvent>;
  private readonly peerTable: PeerTable;
  private readonly log: Logger;
  private readonly intervalMs: number;
  /** The configured peers; a reload replaces them (setPeers). */
  private peerOptions: readonly GobgpPeerOptions[];
  /** External gobgpd: deletes vipd's marked paths if vipd dies (guardian.ts). */
  private guardian: PathGuardian | undefined;
  private readonly drift = new DriftTracker();
  /** Bumped by every push: a read-back across a change of the desired set is not a drift. */
  private desiredVersion = 0;
  private lastReadBackVersion = -1;
  /** Prefixes vipd has added in this run: an extra one in an adj-RIB-out is vipd's to delete. */
  private readonly everAdded = new Set<string>();
  private readonly retryBackoff: Backoff;
  private retryTimer: TimerHandle | undefined;
  private syncState: { state: SpeakerSync['state']; since: number };
  private lastError: SpeakerSync['lastError'];
  /** Foreign local paths last logged (external gobgpd), so that they are logged when they change. */
  private foreignSeen = '';

  constructor(private readonly options: GobgpSpeakerOptions) {
    this.log = options.logger;
    this.intervalMs = options.reconcileIntervalMs ?? 3000;
    this.peerOptions = options.peers;
    this.retryBackoff = new Backoff(options.retryBackoff?.initialMs ?? 250, options.retryBackoff?.maxMs ?? 10_000);
    this.syncState = { state: 'applying', since: options.clock.wallNow() };
    if (!(this.intervalMs > 0)) throw new VipdError('VIPD_ERR_GOBGP_API', `reconcileIntervalMs ${this.intervalMs} must be positive`);
    this.machine = new StateMachine<SpeakerState>('new', { machine: 'speaker', logger: options.logger, level: 'info' });
    this.listeners = new ListenerSet((err) => this.log.error({ event: 'listener', err: errorMessage(err) }, 'speaker event listener failed'));
    this.peerTable = new PeerTable({
      configured: options.peers.map((p) => ({ address: p.address, asn: p.asn, families: toPeerFamilies(p) })),
      clock: options.clock,
      logger: options.logger,
      metrics: options.metrics,
      emit: (e) => {
        if (e.type === 'peer' && e.from === 'established') {
          this.forgetAdvertised(e.peer);
          this.drift.forgetPeer(e.peer);
        }
        this.emit(e);
        if (e.type === 'peer' && e.to === 'established' && this.state === 'running') this.reconcileInBackground('reconnect');
      },
    });
  }

  private get state(): SpeakerState {
    return this.machine.state;
  }

  start(): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return Promise.reject(closedError());
    this.startPromise ??= this.doStart();
    return this.startPromise;
  }

  setAdvertisements(ads: readonly Advertisement[]): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return Promise.reject(closedError());
    let next: Map<string, RibRoute>;
    try {
      next = this.toDesired(ads);
    } catch (err) {
      return Promise.reject(err);
    }
    this.desired = next;
    this.desiredVersion++;
    this.log.debug({ event: 'push', prefixes: [...next.keys()] }, 'desired advertisements recorded');
    if (this.state === 'new') return Promise.resolve();
    if (this.state === 'starting') return this.startPromise!.then(() => this.reconcile('push'));
    return this.reconcile('push');
  }

  peers(): readonly PeerStatus[] {
    return this.peerTable.list().map((p) => {
      const negotiated = p.state === 'established' ? this.negotiated.get(p.address) : undefined;
      return negotiated ? { ...p, negotiated } : p;
    });
  }

  advertised(): ReadonlyMap<string, readonly string[]> {
    return this.adjOut;
  }

  sync(): SpeakerSync {
    const pendingAdd: string[] = [];
    const pendingDelete: string[] = [];
    if (this.syncState.state !== 'in-sync') {
      for (const [prefix, route] of this.desired) {
        const applied = this.applied.get(prefix);
        if (!applied || !sameRoute(applied, route)) pendingAdd.push(prefix);
      }
      for (const prefix of this.applied.keys()) if (!this.desired.has(prefix)) pendingDelete.push(prefix);
    }
    const desired = new Map<string, readonly string[]>();
    for (const peer of this.peerTable.list()) desired.set(peer.address, this.expectedFor(peer.address, peer.families));
    return {
      ...this.syncState,
      pendingAdd: pendingAdd.sort(),
      pendingDelete: pendingDelete.sort(),
      ...(this.lastError !== undefined && { lastError: this.lastError }),
      desired,
      drift: this.drift.byPeer(),
    };
  }

  /** The desired prefixes a peer's session carries: those of the families it negotiated (else configured). */
  private expectedFor(peer: string, families: readonly AddressFamily[]): string[] {
    const carried = new Set((this.negotiated.get(peer) ?? families).map((f) => RIB_FAMILY[f]));
    return [...this.desired.keys()].filter((p) => carried.has(prefixFamily(p))).sort();
  }

  onEvent(listener: (event: SpeakerEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  close(): Promise<void> {
    this.closePromise ??= this.doClose();
    return this.closePromise;
  }

  destroy(): Promise<void> {
    if (this.destroyPromise) return this.destroyPromise;
    if (this.state === 'closed') return this.closePromise ?? Promise.resolve();
    this.peerTable.forgetStates('speaker destroyed');
    this.adjOut = new Map();
    this.machine.transition(NOT_CLOSED, 'closed', 'destroy');
    this.stopBackgroundWork();
    this.rejectWaiters(closedError());
    // Stopped without withdrawing: the guardian deletes vipd's paths from the external gobgpd.
    this.guardian?.trigger();
    this.client?.close();
    this.options.metrics.daemonUp.set(0);
    this.destroyPromise = this.supervisor?.destroy() ?? Promise.resolve();
    return this.destroyPromise;
  }

  private toDesired(ads: readonly Advertisement[]): Map<string, RibRoute> {
    const routes = new Map<string, RibRoute>();
    const mark = this.options.ownerMark;
    for (const ad of ads) {
      const route = routeFromAdvertisement(mark === undefined ? ad : { ...ad, largeCommunities: [...(ad.largeCommunities ?? []), mark] });
      const earlier = routes.get(route.prefix);
      if (earlier && !sameRoute(earlier, route)) {
        throw new VipdError('VIPD_ERR_CODEC', `${route.prefix} is advertised twice with different attributes`);
      }
      routes.set(route.prefix, route);
    }
    return routes;
  }

  async setPeers(peers: readonly GobgpPeerOptions[]): Promise<void> {
    if (this.state !== 'running') throw new VipdError('VIPD_ERR_GOBGP_API', `the speaker is ${this.state}: its peers cannot change now`);
    if (this.options.manage) await this.reloadNeighbors(await this.neighborsOf(peers));
    this.peerOptions = peers;
    const removed = this.peerTable.setConfigured(peers.map((p) => ({ address: p.address, asn: p.asn, families: toPeerFamilies(p) })));
    for (const peer of removed) this.forgetAdvertised(peer);
    if (!this.options.manage) await this.checkExternalPeers().catch((err) => this.log.warn({ event: 'peer', err: errorMessage(err) }, 'cannot list the external gobgpd\'s peers'));
    this.reconcileInBackground('peers');
  }

  /**
   * gobgpd's SIGHUP reload re-creates a neighbor whose OPEN would change (password, transport, families,
   * graceful restart) but only copies the timers of the others: a changed multihop or GTSM TTL would be
   * dropped without a word (config.NeedsResendOpenMessage in gobgpd 3.10). Such peers are taken out in a
   * first reload, and put back with their new TTL in the second, once gobgpd no longer lists them.
   */
  private async reloadNeighbors(next: GobgpdConfig['neighbors']): Promise<void> {
    const supervisor = this.supervisor!;
    const current = new Map(supervisor.neighbors.map((n) => [canonicalPeerAddress(n.address), n]));
    const ttlChanged = next.filter((n) => {
      const before = current.get(canonicalPeerAddress(n.address));
      return before !== undefined && (before.ebgpMultihopTtl !== n.ebgpMultihopTtl || before.ttlSecurityHops !== n.ttlSecurityHops);
    });
    if (ttlChanged.length === 0) return supervisor.reloadNeighbors(next);
    const readd = new Set(ttlChanged.map((n) => canonicalPeerAddress(n.address)));
    this.log.info({ event: 'peer', op: 'reset', peers: [...readd] }, 'multihop or GTSM TTL changed: these sessions are re-created (gobgpd applies a TTL only to a new neighbor)');
    await supervisor.reloadNeighbors([...current.values()].filter((n) => !readd.has(canonicalPeerAddress(n.address))));
    let gone = false;
    for (let waited = 0; !gone && waited < 5000; waited += 100) {
      const listed = (await this.client!.listPeer()).map((p) => canonicalPeerAddress(p.conf?.neighbor_address ?? p.state?.neighbor_address ?? ''));
      gone = !listed.some((a) => readd.has(a));
      if (!gone) await sleep(this.options.clock, 100);
    }
    await supervisor.reloadNeighbors(next);
    if (!gone) throw new VipdError('VIPD_ERR_GOBGP_API', `gobgpd still lists ${[...readd].join(', ')} 5 s after their removal: their new multihop/GTSM TTL may not be applied; restart vipd to be sure`);
  }

  private async neighborsOf(peers: readonly GobgpPeerOptions[]): Promise<GobgpdConfig['neighbors']> {
    const neighbors = [];
    for (const p of peers) {
      const crossFamilyNextHop = await this.crossFamilyNextHop(p);
      neighbors.push({
        address: p.address,
        asn: p.asn,
        connectRetryS: p.connectRetryS ?? 5,
        holdTimeS: p.holdTimeS ?? 3,
        keepaliveS: p.keepaliveS ?? 1,
        families: toPeerFamilies(p),
        ...(crossFamilyNextHop !== undefined && { crossFamilyNextHop }),
        ...(p.password !== undefined && { password: p.password }),
        ...(p.ebgpMultihopTtl !== undefined && { ebgpMultihopTtl: p.ebgpMultihopTtl }),
        ...(p.localAddress !== undefined && { localAddress: p.localAddress }),
        ...(p.passive !== undefined && { passive: p.passive }),
        ...(p.ttlSecurityHops !== undefined && { ttlSecurityHops: p.ttlSecurityHops }),
        ...(this.options.gracefulRestart !== undefined && { gracefulRestart: this.options.gracefulRestart }),
      });
    }
    return neighbors;
  }

  /** Managed mode: the next hop of each session's paths of the other family, where one is needed. */
  private async crossFamilyNextHop(p: GobgpPeerOptions): Promise<string | undefined> {
    const families = toPeerFamilies(p);
    if (net.isIPv6(p.address)) return families.includes('ipv4-unicast') ? p.nextHopIpv4 : undefined;
    if (!families.includes('ipv6-unicast')) return undefined;
    if (p.nextHopIpv6 !== undefined) return p.nextHopIpv6;
    const hop = await defaultIpv6NextHop(p.address, p.localAddress, this.options.nextHopProbes);
    this.log.info({ event: 'peer', peer: p.address, nextHopIpv6: hop }, 'IPv6 paths over this IPv4 session use a global IPv6 address of the link as next hop');
    return hop;
  }

  private async doStart(): Promise<void> {
    this.machine.transition(['new'], 'starting', 'start');
    const { options } = this;
    let address = options.api;
    try {
      if (options.manage) {
        const neighbors = await this.neighborsOf(this.peerOptions);
        if (this.state !== 'starting') throw closedError();
        const supervisor = new GobgpdSupervisor({
          config: {
            asn: options.asn,
            routerId: options.routerId,
            listenPort: options.listenPort ?? -1,
            ...(options.listenAddresses !== undefined && { listenAddresses: options.listenAddresses }),
            neighbors,
          },
          ...(options.api !== undefined && { api: options.api }),
          ...(options.allowTcpApi !== undefined && { allowTcpApi: options.allowTcpApi }),
          ...(options.user !== undefined && { user: options.user }),
          ...(options.gobgpdPath !== undefined && { gobgpdPath: options.gobgpdPath }),
          ...(options.setprivPath !== undefined && { setprivPath: options.setprivPath }),
          ...(options.commandPrefix !== undefined && { commandPrefix: options.commandPrefix }),
          ...(options.restartBackoff !== undefined && { restartBackoff: options.restartBackoff }),
          ...(options.runtimeDir !== undefined && { runtimeDir: options.runtimeDir }),
          ...(options.hangTimeoutMs !== undefined && { hangTimeoutMs: options.hangTimeoutMs }),
          clock: options.clock,
          logger: options.logger,
          metrics: options.metrics,
        });
        this.supervisor = supervisor;
        supervisor.onEvent((e) => this.onSupervisorEvent(e));
        await supervisor.start();
        address = supervisor.apiAddress;
      }
      if (!address) throw new VipdError('VIPD_ERR_GOBGP_API', 'api address is required when gobgpd is not managed');
      this.client = options.clientFactory
        ? options.clientFactory(address)
        : new GobgpClient({ address, deadlineMs: options.apiDeadlineMs ?? 5000 });
      let armed: Promise<void> = Promise.resolve();
      if (!options.manage && options.ownerMark !== undefined && options.guardian) {
        this.guardian = new PathGuardian({
          api: address,
          mark: options.ownerMark,
          clock: options.clock,
          logger: options.logger,
          ...(options.guardian.entryPath !== undefined && { entryPath: options.guardian.entryPath }),
          ...(options.hangTimeoutMs !== undefined && { hangTimeoutMs: options.hangTimeoutMs }),
        });
        armed = this.guardian.start();
        // Handled below; a rejection while waitForApi runs must not be reported as unhandled.
        armed.catch(() => undefined);
      }
      await this.waitForApi(options.startTimeoutMs ?? 10_000);
      // Deleting is safe without the guardian: a previous vipd's paths need not wait for it.
      if (this.guardian) await this.removeStaleOwn().catch((err: unknown) => this.log.warn({ event: 'reconcile', err: errorMessage(err) }, 'stale paths not removed yet; the first reconciliation will'));
      // Armed before the first path is added: from then on, vipd's death takes its paths with it.
      await armed;
    } catch (err) {
      if (this.state !== 'starting') throw closedError();
      await this.destroy();
      throw err;
    }
    if (!this.machine.transition(['starting'], 'running', 'gobgpd API answers')) throw closedError();
    this.openWatch();
    this.scheduleInterval();
    try {
      await this.reconcile('start');
    } catch (err) {
      // A managed gobgpd that answered a moment ago and now fails is broken; an external one may
      // simply not be up yet, and the background reconciliations will catch up with it.
      if (options.manage) {
        await this.destroy();
        throw err;
      }
    }
  }

  /**
   * A fresh gobgpd needs a moment before its API listens. An external one may come up after vipd:
   * then start() still resolves and the speaker keeps trying in the background.
   */
  private async waitForApi(timeoutMs: number): Promise<void> {
    const { clock } = this.options;
    const deadline = clock.now() + timeoutMs;
    for (let delayMs = 50; ; delayMs = Math.min(delayMs * 2, 1000)) {
      try {
        const global = await this.client!.getBgp();
        this.markApi(true, 'api answers');
        if (global.asn !== this.options.asn || global.router_id !== this.options.routerId) {
          this.log.warn(
            { event: 'daemon', daemonAsn: global.asn, daemonRouterId: global.router_id, asn: this.options.asn, routerId: this.options.routerId },
            'gobgpd global config differs from vipd config',
          );
        }
        if (!this.options.manage) await this.checkExternalPeers();
        return;
      } catch (err) {
        if (this.state !== 'starting') throw closedError();
        if (clock.now() + delayMs > deadline) {
          if (this.options.manage) {
            throw new VipdError('VIPD_ERR_GOBGP_API', `gobgpd API did not answer within ${timeoutMs} ms: ${errorMessage(err)}`, { cause: err });
          }
          this.markApi(false, errorMessage(err));
          this.log.warn({ event: 'daemon', err: errorMessage(err) }, 'external gobgpd does not answer yet; will keep trying');
          return;
        }
        await sleep(clock, delayMs);
      }
    }
  }

  /** An external gobgpd is configured by someone else: say so when it lacks a peer vipd expects. */
  private async checkExternalPeers(): Promise<void> {
    const known = new Set((await this.client!.listPeer()).map((p) => canonicalPeerAddress(p.conf?.neighbor_address ?? p.state?.neighbor_address ?? '')));
    for (const peer of this.peerOptions) {
      const address = canonicalPeerAddress(peer.address);
      if (!known.has(address)) this.log.warn({ event: 'peer', peer: address }, 'external gobgpd has no such neighbor; its session will stay unknown');
    }
  }

  private async doClose(): Promise<void> {
    if (this.state === 'closed') return this.destroyPromise;
    if (this.machine.transition(['new'], 'closed', 'closed before start')) return;
    if (this.state === 'starting') await this.startPromise!.catch(() => undefined);
    // start() may have failed, or destroy() run, meanwhile.
    if (!this.machine.transition(['running'], 'closing', 'close')) return this.destroyPromise;
    this.stopBackgroundWork();
    // Pushes still waiting were never applied; the withdrawal below replaces them.
    this.rejectWaiters(closedError());
    this.desired = new Map();
    try {
      await this.reconcile('close');
      this.log.info({ event: 'withdraw', reason: 'close' }, 'withdrew every path before stopping');
      this.guardian?.release();
    } catch (err) {
      this.log.warn({ event: 'withdraw', reason: 'close', err: errorMessage(err) }, 'could not withdraw paths before stopping');
      // The guardian keeps trying after vipd has gone.
      this.guardian?.trigger();
    }
    this.peerTable.forgetStates('speaker closed');
    this.adjOut = new Map();
    // destroy() during the withdrawal has already stopped everything.
    if (!this.machine.transition(['closing'], 'closed', 'withdrawn')) return this.destroyPromise;
    this.client?.close();
    await this.supervisor?.close();
    this.options.metrics.daemonUp.set(0);
    this.options.metrics.pathsAdvertised.set(0);
  }

  private stopBackgroundWork(): void {
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.intervalTimer?.cancel();
    this.intervalTimer = undefined;
    this.watchTimer?.cancel();
    this.watchTimer = undefined;
    this.watch?.cancel();
    this.watch = undefined;
  }

  private rejectWaiters(err: unknown): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** Queues a reconciliation; resolves once one that started after this call has succeeded. */
  private reconcile(trigger: Trigger): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.triggers.add(trigger);
      this.queue.pushLatest(() => this.runReconcile());
    });
  }

  private reconcileInBackground(trigger: Trigger): void {
    // Failures are logged and counted by runReconcile; the next trigger retries.
    this.reconcile(trigger).catch(() => undefined);
  }

  private async runReconcile(): Promise<void> {
    const waiters = this.waiters.splice(0);
    const trigger = TRIGGERS.find((t) => this.triggers.has(t)) ?? 'interval';
    const pushed = this.triggers.has('push');
    this.triggers.clear();
    const { metrics } = this.options;
    try {
      if (this.state === 'closed' || (this.state === 'closing' && trigger !== 'close')) throw closedError();
      this.setSyncState('applying');
      const version = this.desiredVersion;
      const { added, deleted, owned } = await this.applyDesired(trigger);
      await this.refreshAdvertised(trigger, { quiet: added + deleted === 0 && version === this.desiredVersion, owned });
      metrics.reconciles.inc({ trigger, result: 'ok' });
      if (pushed) metrics.pushes.inc({ result: 'ok' });
      this.retryBackoff.reset();
      this.retryTimer?.cancel();
      this.retryTimer = undefined;
      this.lastError = undefined;
      this.setSyncState('in-sync');
      if (added + deleted > 0 || trigger !== 'interval') this.emit({ type: 'reconciled', trigger, added, deleted });
      for (const w of waiters) w.resolve();
    } catch (err) {
      metrics.reconciles.inc({ trigger, result: 'error' });
      if (pushed) metrics.pushes.inc({ result: 'error' });
      if (err instanceof GobgpApiError && err.unreachable) this.markApi(false, err.message);
      this.log.warn({ event: 'reconcile', trigger, err: errorMessage(err) }, 'reconciliation failed');
      if (this.state === 'running') {
        this.setSyncState('failing');
        this.scheduleRetry();
      }
      for (const w of waiters) w.reject(err);
    }
  }

  /** After a failure: try again with back-off rather than wait for the interval (a refusal may be brief). */
  private scheduleRetry(): void {
    if (this.retryTimer) return;
    const delayMs = this.retryBackoff.next();
    this.retryTimer = this.options.clock.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state === 'running') this.reconcileInBackground('retry');
    }, delayMs);
  }

  private setSyncState(state: SpeakerSync['state']): void {
    if (this.syncState.state === state) return;
    // "applying" is a moment inside every reconciliation; only a way out of failing is worth a line.
    if (state === 'failing' || this.syncState.state === 'failing') {
      this.log[state === 'failing' ? 'warn' : 'info']({ event: 'sync', from: this.syncState.state, to: state }, `gobgpd ${state === 'failing' ? 'does not hold what vipd wants' : 'holds what vipd wants again'}`);
    }
    this.syncState = { state, since: this.options.clock.wallNow() };
  }

  /**
   * One gobgpd API call that may be refused: logs the call and gobgpd's reply, counts it
   * (vipd_speaker_api_errors_total) and keeps it for status, then rethrows.
   */
  private async call<T>(call: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof GobgpApiError) {
        this.options.metrics.apiErrors.inc({ method: err.method, code: err.codeName });
        this.lastError = { at: this.options.clock.wallNow(), call, reply: err.message };
        this.log.warn({ event: 'api', call, reply: err.message, code: err.codeName }, `gobgpd ${err.unreachable ? 'did not answer' : 'refused'} ${call}`);
      }
      throw err;
    }
  }

  /**
   * One pass: read what gobgpd really has, add what is missing or different, delete the rest of what is
   * vipd's. With an ownerMark (external gobgpd), a local path without the mark is someone else's and is
   * left alone; one with the mark that is not wanted (a previous vipd's, or one put in by hand with the
   * mark) is deleted. Without it, every local path is vipd's.
   */
  private async applyDesired(trigger: Trigger): Promise<{ added: number; deleted: number; owned: ReadonlySet<string> }> {
    const client = this.client;
    if (!client) throw closedError();
    const desired = this.desired;
    const mark = this.options.ownerMark;
    const local = await this.call('ListPath GLOBAL', () => this.readLocalRib(client));
    this.markApi(true, 'api answers');
    const actual = new Map<string, RibRoute | undefined>();
    const foreign: string[] = [];
    for (const [prefix, route] of local) {
      if (mark === undefined || (route !== undefined && carriesMark(route, mark))) actual.set(prefix, route);
      else foreign.push(prefix);
    }
    this.logForeign(foreign);
    const { metrics } = this.options;
    let added = 0;
    let deleted = 0;
    for (const [prefix, route] of desired) {
      const have = actual.get(prefix);
      if (have && sameRoute(have, route)) {
        // Already there (a previous vipd's, kept as it is): vipd's from now on.
        this.applied.set(prefix, route);
        this.everAdded.add(prefix);
        continue;
      }
      const believed = this.applied.get(prefix);
      const repair = believed !== undefined && sameRoute(believed, route);
      if (!have && foreign.includes(prefix)) {
        this.log.warn({ event: 'announce', prefix, reason: 'replaces-foreign' }, `${prefix} is also originated by someone else in gobgpd; vipd's path replaces it (gobgpd keeps one local path per prefix)`);
      }
      await this.call(`AddPath ${prefix}`, () => client.addPath(encodeAddPath(route)));
      this.applied.set(prefix, route);
      this.everAdded.add(prefix);
      added++;
      if (repair) metrics.pathsRepaired.inc({ op: 'added' });
      const reason = repair ? (have ? 'changed-behind-vipd' : 'missing') : have ? 'attributes-changed' : 'desired';
      this.log.info({ event: 'announce', op: have ? 'replace' : 'add', prefix, reason, trigger, route }, `announce ${prefix}`);
    }
    for (const prefix of actual.keys()) {
      if (desired.has(prefix)) continue;
      const ownedNow = this.applied.has(prefix);
      await this.call(`DeletePath ${prefix}`, () => client.deletePath(encodeDeletePath(prefix)));
      this.applied.delete(prefix);
      deleted++;
      if (!ownedNow) metrics.pathsRepaired.inc({ op: 'deleted' });
      // With a mark, a marked path vipd did not add in this run is a previous vipd's.
      const reason = ownedNow ? (trigger === 'close' ? 'close' : 'not-desired') : mark !== undefined ? 'stale-own' : 'not-owned';
      this.log[ownedNow ? 'info' : 'warn']({ event: 'withdraw', op: 'delete', prefix, reason, trigger }, `withdraw ${prefix}`);
    }
    for (const prefix of [...this.applied.keys()]) if (!desired.has(prefix)) this.applied.delete(prefix);
    metrics.pathsAdvertised.set(desired.size);
    const level = added + deleted > 0 ? 'info' : 'debug';
    this.log[level]({ event: 'reconcile', trigger, added, deleted, desired: desired.size }, 'gobgpd RIB reconciled');
    const owned = new Set([...this.everAdded].filter((p) => !foreign.includes(p)));
    return { added, deleted, owned };
  }

  /** At start, before any path is added: deletes marked paths that are not desired (a previous vipd's). */
  private async removeStaleOwn(): Promise<void> {
    const client = this.client!;
    const mark = this.options.ownerMark!;
    for (const [prefix, route] of await this.call('ListPath GLOBAL', () => this.readLocalRib(client))) {
      if (route === undefined || !carriesMark(route, mark) || this.desired.has(prefix)) continue;
      await this.call(`DeletePath ${prefix}`, () => client.deletePath(encodeDeletePath(prefix)));
      this.options.metrics.pathsRepaired.inc({ op: 'deleted' });
      this.log.warn({ event: 'withdraw', op: 'delete', prefix, reason: 'stale-own', trigger: 'start' }, `withdraw ${prefix}`);
    }
  }

  private logForeign(foreign: readonly string[]): void {
    const seen = [...foreign].sort().join(',');
    if (seen === this.foreignSeen) return;
    this.foreignSeen = seen;
    this.log.info({ event: 'reconcile', foreign: foreign.length, prefixes: foreign.slice(0, 20) }, "local paths in gobgpd without vipd's mark: someone else's, left alone");
  }

  /**
   * Reads, for every established session, the families it negotiated (the peer's MultiProtocol
   * capabilities, within what vipd configured) and what gobgpd's adj-RIB-out holds in each. gobgpd
   * computes ADJ_OUT from the configured families whatever the session's state, so both filters are
   * needed for "announced" to mean the peer was sent the path. A peer that cannot be read counts as
   * having nothing. On a quiet pass (nothing applied, no push meanwhile), a difference from the desired
   * set is a drift candidate (drift.ts): confirmed, it is logged, counted and repaired.
   */
  private async refreshAdvertised(trigger: Trigger, readBack: { quiet: boolean; owned: ReadonlySet<string> }): Promise<void> {
    const client = this.client;
    if (!client || trigger === 'close') return;
    const next = new Map<string, readonly string[]>();
    const negotiated = new Map<string, readonly AddressFamily[]>();
    const readable = new Set<string>();
    for (const peer of this.peerTable.list()) {
      if (peer.state !== 'established') {
        next.set(peer.address, []);
        continue;
      }
      const prefixes: string[] = [];
      try {
        const [info] = await client.listPeer(peer.address);
        const offered = offeredFamilies(info?.state?.remote_cap ?? []);
        negotiated.set(peer.address, peer.families.filter((f) => offered.includes(RIB_FAMILY[f])));
        for (const family of peer.families) {
          const rib = RIB_FAMILY[family];
          if (!offered.includes(rib)) continue;
          for (const d of await client.listAdjOut(peer.address, UNICAST_FAMILIES[rib])) prefixes.push(canonicalPrefix(d.prefix));
        }
        readable.add(peer.address);
      } catch (err) {
        this.log.warn({ event: 'reconcile', peer: peer.address, err: errorMessage(err) }, "cannot read the peer's adj-RIB-out; status shows nothing sent to it");
        prefixes.length = 0;
      }
      next.set(peer.address, prefixes.sort());
    }
    this.adjOut = next;
    this.negotiated = negotiated;
    const chained = readBack.quiet && this.lastReadBackVersion === this.desiredVersion;
    this.lastReadBackVersion = readBack.quiet ? this.desiredVersion : -1;
    if (!chained) {
      this.drift.interrupt();
      if (!readBack.quiet) return;
    }
    await this.checkDrift(client, readable, readBack.owned);
  }

  private async checkDrift(client: GobgpApiClient, peers: ReadonlySet<string>, owned: ReadonlySet<string>): Promise<void> {
    const { metrics } = this.options;
    for (const peer of this.peerTable.list()) {
      if (!peers.has(peer.address)) continue;
      const expected = this.expectedFor(peer.address, peer.families);
      const { confirmed, cleared } = this.drift.observe(peer.address, expected, this.adjOut.get(peer.address) ?? [], owned);
      for (const d of cleared) this.log.info({ event: 'drift', peer: d.peer, kind: d.kind, prefix: d.prefix }, `drift cleared: ${d.prefix} ${d.kind === 'missing' ? 'now sent to' : 'no longer sent to'} ${d.peer}`);
      for (const d of confirmed) {
        metrics.drift.inc({ peer: d.peer, kind: d.kind });
        this.log.warn(
          { event: 'drift', peer: d.peer, kind: d.kind, prefix: d.prefix },
          `drift: ${d.peer} ${d.kind === 'missing' ? 'was not sent' : 'was sent'} ${d.prefix} ${d.kind === 'missing' ? 'though vipd wants it' : 'though vipd does not want it'}; repairing`,
        );
        const route = this.desired.get(d.prefix);
        // Missing: add the path again, which makes gobgpd send it anew. Extra: delete it again.
        if (d.kind === 'missing' && route) await this.call(`AddPath ${d.prefix} (drift repair)`, () => client.addPath(encodeAddPath(route)));
        else if (d.kind === 'extra') await this.call(`DeletePath ${d.prefix} (drift repair)`, () => client.deletePath(encodeDeletePath(d.prefix)));
        this.drift.repaired(d);
        metrics.pathsRepaired.inc({ op: d.kind === 'missing' ? 'added' : 'deleted' });
      }
    }
  }

  /** Locally originated paths of the global RIB, by canonical prefix; undefined when unreadable. */
  private async readLocalRib(client: GobgpApiClient): Promise<Map<string, RibRoute | undefined>> {
    const local = new Map<string, RibRoute | undefined>();
    for (const family of FAMILIES) {
      for (const destination of await client.listPath(UNICAST_FAMILIES[family])) {
        try {
          for (const entry of decodeDestination(destination)) if (entry.local) local.set(entry.route.prefix, entry.route);
        } catch (err) {
          // Unreadable means it cannot equal a desired route: it gets re-added or deleted by prefix
          // (managed), or, its mark unread, left alone (external).
          if (!destination.paths.some((p) => p.neighbor_ip === '<nil>' || p.neighbor_ip === '')) continue;
          this.log.warn({ event: 'reconcile', prefix: destination.prefix, err: errorMessage(err) }, 'cannot decode a local path');
          local.set(canonicalPrefix(destination.prefix), undefined);
        }
      }
    }
    return local;
  }

  private openWatch(): void {
    if (this.state !== 'running' || this.watch || !this.client) return;
    this.watchTimer?.cancel();
    this.watchTimer = undefined;
    let synced = false;
    this.watch = this.client.watchPeerEvents({
      onEvent: (event) => {
        if (event.type !== 'END_OF_INIT') {
          this.peerTable.apply(event);
          return;
        }
        if (synced) return;
        synced = true;
        this.watchBackoff.reset();
        this.markApi(true, 'watch stream open');
        // The first stream opens right after start(), which reconciles anyway.
        if (this.watchHasSynced) this.reconcileInBackground('reconnect');
        this.watchHasSynced = true;
      },
      onError: (err) => {
        this.watch = undefined;
        if (this.state !== 'running') return;
        this.log.warn({ event: 'daemon', err: err.message }, 'gobgpd WatchEvent stream failed');
        if (err.unreachable) {
          this.markApi(false, err.message);
          this.peerTable.forgetStates('gobgpd API unreachable');
        }
        this.reconcileInBackground('watch-error');
        this.scheduleWatch(this.watchBackoff.next());
      },
    });
  }

  private scheduleWatch(delayMs: number): void {
    if (this.state !== 'running' || this.watch) return;
    this.watchTimer?.cancel();
    this.watchTimer = this.options.clock.setTimeout(() => {
      this.watchTimer = undefined;
      this.openWatch();
    }, delayMs);
  }

  private scheduleInterval(): void {
    this.intervalTimer = this.options.clock.setTimeout(() => {
      this.intervalTimer = undefined;
      if (this.state !== 'running') return;
      if (!this.watch && !this.watchTimer) this.openWatch();
      this.reconcileInBackground('interval');
      this.scheduleInterval();
    }, this.intervalMs);
  }

  private onSupervisorEvent(event: SupervisorEvent): void {
    if (event.type === 'exited' && !event.expected) {
      const how = event.signal ? `signal ${event.signal}` : `code ${event.code}`;
      this.markApi(false, `gobgpd exited (${how})`);
      this.peerTable.forgetStates('gobgpd exited');
    } else if (event.type === 'started' && event.restart && this.state === 'running') {
      // Look for the new daemon now rather than at the end of the current back-off.
      this.watchBackoff.reset();
      this.scheduleWatch(100);
    }
  }

  /** A session that left established has been sent nothing that still counts. */
  private forgetAdvertised(peer: string): void {
    if (!this.adjOut.has(peer)) return;
    const next = new Map(this.adjOut);
    next.set(peer, []);
    this.adjOut = next;
  }

  private markApi(up: boolean, reason: string): void {
    this.options.metrics.daemonUp.set(up ? 1 : 0);
    if (this.apiUp === up) return;
    this.apiUp = up;
    this.log[up ? 'info' : 'warn']({ event: 'daemon', up, reason }, up ? 'gobgpd API up' : 'gobgpd API down');
    this.emit({ type: 'daemon', up, reason });
  }

  private emit(event: SpeakerEvent): void {
    if (this.state === 'closed') return;
    this.listeners.emit(event);
  }
}
