import * as grpc from '@grpc/grpc-js';
import type { ApiAny, ApiDestination, ApiFamily, ApiGlobal, ApiPath, ApiPeer, ApiPeerEvent, ApiSessionState } from '../../src/speaker/gobgp/api-types';
import { GobgpApiError, type GobgpApiClient, type PeerEventHandlers, type PeerEventWatch } from '../../src/speaker/gobgp/client';
import { decodeDestination, encodeAddPath, encodeMultiProtocolCapability, prefixFamily, type RibFamily, type RibRoute } from '../../src/speaker/gobgp/codec';

/**
 * An in-memory gobgpd behind the GobgpApiClient interface. It behaves like gobgpd where vipd depends
 * on it (paths keyed by prefix, a re-add replaces, a restart forgets every path, WatchEvent sends
 * INIT.. END_OF_INIT) and records every breach of the contract as a violation, which the test then
 * asserts empty: RIB calls overlapping (pushes must be serialised), DeletePath without a path (gobgpd
 * would delete everything), paths gobgpd would reject, a second watch stream, use after close().
 */

type RibMethod = 'listPath' | 'addPath' | 'deletePath';
export type FakeCall = { readonly method: 'getBgp' | 'listPeer' | 'listAdjOut' | 'watch' | RibMethod; readonly prefix?: string };

interface StoredPath {
  readonly path: ApiPath;
  readonly route: RibRoute;
  readonly neighbor: string;
}

const TYPE_URL_PREFIX = 'type.googleapis.com/apipb.';
const RPC_NAMES: Readonly<Record<RibMethod, string>> = { listPath: 'ListPath', addPath: 'AddPath', deletePath: 'DeletePath' };

export interface FakeGobgpOptions {
  readonly asn?: number;
  readonly routerId?: string;
  readonly peers?: ReadonlyArray<{
    readonly address: string;
    readonly asn: number;
    readonly state?: ApiSessionState;
    /** Families gobgpd is configured to send this neighbor (its ADJ_OUT). Default: the address's own. */
    readonly configured?: readonly RibFamily[];
    /** Families the peer offered in its OPEN (MultiProtocol capabilities). Default: the address's own. */
    readonly offered?: readonly RibFamily[];
  }>;
}

interface FakePeer {
  asn: number;
  state: ApiSessionState;
  readonly configured: readonly RibFamily[];
  readonly offered: readonly RibFamily[];
}

export class FakeGobgpClient implements GobgpApiClient {
  readonly violations: string[] = [];
  readonly calls: FakeCall[] = [];
  private readonly local = new Map<string, StoredPath>();
  private readonly learned = new Map<string, StoredPath>();
  private readonly peerStates = new Map<string, FakePeer>();
  private reachable = true;
  private closed = false;
  private ribCallsInFlight = 0;
  private maxRibConcurrency = 0;
  private watch: { handlers: PeerEventHandlers; live: boolean } | undefined;
  private gate: Promise<void> | undefined;
  private failures: Array<{ method: RibMethod; code: grpc.status }> = [];
  /** "neighbor prefix" -> the adj-RIB-out lies about it until vipd adds (hidden) or deletes (stale) it again. */
  private readonly hiddenFromAdjOut = new Set<string>();
  private readonly staleInAdjOut = new Map<string, StoredPath>();

  constructor(private readonly options: FakeGobgpOptions = {}) {
    for (const p of options.peers ?? []) {
      const own: RibFamily = p.address.includes(':') ? 'ipv6' : 'ipv4';
      this.peerStates.set(p.address, { asn: p.asn, state: p.state ?? 'ACTIVE', configured: p.configured ?? [own], offered: p.offered ?? [own] });
    }
  }

  // ---- GobgpApiClient -------------------------------------------------------------------------

  async getBgp(): Promise<ApiGlobal> {
    this.enter('getBgp');
    this.throwIfUnreachable('GetBgp');
    return { asn: this.options.asn ?? 65001, router_id: this.options.routerId ?? '198.18.0.1', listen_port: -1, listen_addresses: [] };
  }

  async addPath(path: ApiPath): Promise<Uint8Array> {
    return this.ribCall('addPath', path, () => {
      const route = this.validate('AddPath', path);
      this.local.set(route.prefix, { path, route, neighbor: '<nil>' });
      for (const key of this.hiddenFromAdjOut) if (key.endsWith(` ${route.prefix}`)) this.hiddenFromAdjOut.delete(key);
      return new Uint8Array(16);
    });
  }

  async deletePath(path: ApiPath): Promise<void> {
    return this.ribCall('deletePath', path, () => {
      if (!path || !path.nlri || !path.family) {
        this.violation('DeletePath without a path: gobgpd would delete every local path');
        throw new GobgpApiError('DeletePath', grpc.status.INVALID_ARGUMENT, 'no path');
      }
      const route = this.validate('DeletePath', path);
      this.local.delete(route.prefix);
      for (const key of this.staleInAdjOut.keys()) if (key.endsWith(` ${route.prefix}`)) this.staleInAdjOut.delete(key);
    });
  }

  async listPath(family: ApiFamily): Promise<ApiDestination[]> {
    return this.ribCall('listPath', undefined, () => {
      const byPrefix = new Map<string, ApiPath[]>();
      for (const stored of [...this.local.values(), ...this.learned.values()]) {
        if (stored.path.family.afi !== family.afi) continue;
        const paths = byPrefix.get(stored.route.prefix) ?? [];
        paths.push({ ...stored.path, neighbor_ip: stored.neighbor, best: paths.length === 0 });
        byPrefix.set(stored.route.prefix, paths);
      }
      return [...byPrefix].map(([prefix, paths]) => ({ prefix, paths }));
    });
  }

  async listPeer(address?: string): Promise<ApiPeer[]> {
    this.enter('listPeer');
    this.throwIfUnreachable('ListPeer');
    return [...this.peerStates].filter(([a]) => !address || a === address).map(([a, p]) => apiPeer(a, p.asn, p.state, p.offered));
  }

  /** As gobgpd computes ADJ_OUT: the local best paths of the neighbor's configured families, whatever its session's state. */
  async listAdjOut(neighbor: string, family: ApiFamily): Promise<ApiDestination[]> {
    this.enter('listAdjOut');
    this.throwIfUnreachable('ListPath');
    const peer = this.peerStates.get(neighbor);
    if (!peer) throw new GobgpApiError('ListPath', grpc.status.UNKNOWN, `neighbor that has ${neighbor} doesn't exist`);
    const rib: RibFamily = family.afi === 'AFI_IP6' ? 'ipv6' : 'ipv4';
    if (!peer.configured.includes(rib)) return [];
    const sent = [...this.local.values()].filter((p) => !this.hiddenFromAdjOut.has(`${neighbor} ${p.route.prefix}`));
    for (const [key, stale] of this.staleInAdjOut) if (key.startsWith(`${neighbor} `) && !this.local.has(stale.route.prefix)) sent.push(stale);
    return sent.filter((p) => p.path.family.afi === family.afi).map((p) => ({ prefix: p.route.prefix, paths: [{ ...p.path, neighbor_ip: '<nil>', best: true }] }));
  }

  watchPeerEvents(handlers: PeerEventHandlers): PeerEventWatch {
    this.enter('watch');
    if (this.watch?.live) this.violation('a second WatchEvent stream while one is live');
    const watch = { handlers, live: true };
    this.watch = watch;
    queueMicrotask(() => {
      if (!watch.live) return;
      if (!this.reachable) return this.failWatch(new GobgpApiError('WatchEvent', grpc.status.UNAVAILABLE, 'UNAVAILABLE: connection refused'));
      for (const [address, p] of this.peerStates) handlers.onEvent(peerEvent('INIT', address, p.asn, p.state));
      handlers.onEvent({ type: 'END_OF_INIT', peer: null });
    });
    return { cancel: () => void (watch.live = false) };
  }

  close(): void {
    this.closed = true;
    if (this.watch) this.watch.live = false;
  }

  // ---- test controls --------------------------------------------------------------------------

  /** Locally originated routes, as gobgpd would list them. */
  localRoutes(): RibRoute[] {
    return [...this.local.values()].map((s) => s.route).sort((a, b) => a.prefix.localeCompare(b.prefix));
  }

  ribCalls(): FakeCall[] {
    return this.calls.filter((c) => c.method === 'addPath' || c.method === 'deletePath' || c.method === 'listPath');
  }

  clearCalls(): void {
    this.calls.length = 0;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get watchLive(): boolean {
    return this.watch?.live ?? false;
  }

  /** A path added behind vipd's back (the `gobgp global rib add` case). */
  injectLocal(route: RibRoute): void {
    this.local.set(route.prefix, { path: encodeAddPath(route), route, neighbor: '<nil>' });
  }

  /** A path received from a BGP peer: never vipd's to delete. */
  injectLearned(route: RibRoute, neighbor: string): void {
    this.learned.set(route.prefix, { path: encodeAddPath(route), route, neighbor });
  }

  /** gobgpd's adj-RIB-out for `neighbor` lacks `prefix` (a drift) until the path is added again. */
  hideFromAdjOut(neighbor: string, prefix: string): void {
    this.hiddenFromAdjOut.add(`${neighbor} ${prefix}`);
  }

  /** gobgpd's adj-RIB-out for `neighbor` still holds `route` though the RIB does not, until it is deleted again. */
  staleAdjOut(neighbor: string, route: RibRoute): void {
    this.staleInAdjOut.set(`${neighbor} ${route.prefix}`, { path: encodeAddPath(route), route, neighbor: '<nil>' });
  }

  /** gobgpd went away (or came back); a live watch stream fails as grpc-js would report it. */
  setReachable(reachable: boolean): void {
    this.reachable = reachable;
    if (!reachable) this.failWatch(new GobgpApiError('WatchEvent', grpc.status.UNAVAILABLE, 'UNAVAILABLE: Connection dropped'));
  }

  /** gobgpd restarted quickly: the stream breaks and every API path is forgotten. */
  restartDaemon(): void {
    this.local.clear();
    this.failWatch(new GobgpApiError('WatchEvent', grpc.status.UNAVAILABLE, 'UNAVAILABLE: Connection dropped'));
  }

  setPeerState(address: string, state: ApiSessionState): void {
    const peer = this.peerStates.get(address);
    if (!peer) throw new Error(`fake: unknown peer ${address}`);
    peer.state = state;
    if (this.watch?.live) this.watch.handlers.onEvent(peerEvent('STATE', address, peer.asn, state));
  }

  /** RIB calls wait until the returned function is called. */
  hold(): () => void {
    let release!: () => void;
    this.gate = new Promise((resolve) => (release = resolve));
    return () => {
      this.gate = undefined;
      release();
    };
  }

  failNext(method: RibMethod, code: grpc.status): void {
    this.failures.push({ method, code });
  }

  /** Highest number of RIB calls that were in flight at once. */
  get ribConcurrency(): number {
    return this.maxRibConcurrency;
  }

  // ---- internals ------------------------------------------------------------------------------

  private violation(message: string): void {
    this.violations.push(message);
  }

  private enter(method: FakeCall['method'], prefix?: string): void {
    this.calls.push(prefix === undefined ? { method } : { method, prefix });
    if (this.closed) this.violation(`${method} after close()`);
  }

  private throwIfUnreachable(method: string): void {
    if (!this.reachable) throw new GobgpApiError(method, grpc.status.UNAVAILABLE, 'UNAVAILABLE: connection refused');
  }

  private async ribCall<T>(method: RibMethod, path: ApiPath | undefined, body: () => T): Promise<T> {
    this.enter(method, path ? this.prefixOf(path) : undefined);
    this.ribCallsInFlight++;
    this.maxRibConcurrency = Math.max(this.maxRibConcurrency, this.ribCallsInFlight);
    if (this.ribCallsInFlight > 1) this.violation(`${method} while another RIB call is in flight: pushes must be serialised`);
    try {
      while (this.gate) await this.gate;
      this.throwIfUnreachable(RPC_NAMES[method]);
      const failure = this.failures.findIndex((f) => f.method === method);
      if (failure >= 0) {
        const [f] = this.failures.splice(failure, 1);
        throw new GobgpApiError(RPC_NAMES[method], f!.code, `${grpc.status[f!.code]}: injected`);
      }
      return body();
    } finally {
      this.ribCallsInFlight--;
    }
  }

  private prefixOf(path: ApiPath): string | undefined {
    try {
      return decodeDestination({ prefix: '', paths: [{ ...path, neighbor_ip: '<nil>' }] })[0]?.route.prefix;
    } catch {
      return undefined;
    }
  }

  /** What gobgpd's api2Path would refuse, plus anything the codec cannot read back. */
  private validate(method: string, path: ApiPath): RibRoute {
    const reject = (message: string): never => {
      this.violation(`${method}: ${message}`);
      throw new GobgpApiError(method, grpc.status.UNKNOWN, message);
    };
    let route: RibRoute | undefined;
    try {
      route = decodeDestination({ prefix: '', paths: [{ ...path, neighbor_ip: '<nil>' }] })[0]?.route;
    } catch (err) {
      return reject(`undecodable path: ${(err as Error).message}`);
    }
    if (!route) return reject('no path');
    const family = prefixFamily(route.prefix);
    const expectedAfi = family === 'ipv4' ? 'AFI_IP' : 'AFI_IP6';
    if (path.family.afi !== expectedAfi || path.family.safi !== 'SAFI_UNICAST') reject(`family ${JSON.stringify(path.family)} for ${route.prefix}`);
    const types = path.pattrs.map((a: ApiAny) => a.type_url.replace(TYPE_URL_PREFIX, ''));
    if (new Set(types).size !== types.length) reject(`duplicated path attribute type in ${types.join(',')}`);
    const nextHopType = family === 'ipv4' ? 'NextHopAttribute' : 'MpReachNLRIAttribute';
    if (!types.includes(nextHopType)) reject(`nexthop not found (${family} needs ${nextHopType})`);
    if (family === 'ipv6' && types.includes('NextHopAttribute')) reject('IPv6 path with a NEXT_HOP attribute');
    return route;
  }

  private failWatch(error: GobgpApiError): void {
    const watch = this.watch;
    if (!watch?.live) return;
    watch.live = false;
    watch.handlers.onError(error);
  }
}

function apiPeer(address: string, asn: number, state: ApiSessionState, offered: readonly RibFamily[] = []): ApiPeer {
  // gobgpd lists a peer's capabilities only once its OPEN has arrived.
  const remoteCap = state === 'ESTABLISHED' ? offered.map(encodeMultiProtocolCapability) : [];
  return {
    conf: { description: '', local_asn: 65001, neighbor_address: address, peer_asn: asn, neighbor_interface: '', admin_down: false },
    state: { local_asn: 65001, neighbor_address: address, peer_asn: asn, session_state: state, admin_state: 'UP', flops: 0, router_id: '', remote_cap: remoteCap },
    timers: null,
    transport: null,
  };
}

function peerEvent(type: 'INIT' | 'STATE', address: string, asn: number, state: ApiSessionState): ApiPeerEvent {
  return { type, peer: apiPeer(address, asn, state) };
}
