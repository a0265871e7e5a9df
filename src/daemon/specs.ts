import type { DampingSpec } from '../announce/damping';
import type { VipSource } from '../announce/reconciler';
import type { Config, PoolConfig, VipConfig } from '../config/config';
import { sessionFamilies } from '../config/schema';
import type { DataPath } from '../dataplane/data-plane';
import { parseProbeBytes } from '../health/check-files';
import type { CheckSpec } from '../health/health';
import { hostPrefix } from '../net/net';
import type { ListenerSpec, PoolSpec, ProxyLimitsSpec } from '../proxy/proxy';
import type { GobgpPeerOptions } from '../speaker/gobgp/gobgp-speaker';
import type { Advertisement } from '../speaker/speaker';

/**
 * The config mapped to what each module takes: pool and listener specs for the data planes, check
 * specs for health, paths and damping for announce, peers for gobgp. Pure: same config, same specs.
 */

/** The data path of a listener (`vips[].listeners[].dataPath`; `proxy` when the config has no such key). */
export function dataPathOf(l: VipConfig['listeners'][number]): DataPath {
  return 'dataPath' in l && l.dataPath === 'kernel' ? 'kernel' : 'proxy';
}

/** Every data path the config's listeners use (main.ts builds their planes before start). */
export function dataPathsOf(config: Config): Set<DataPath> {
  return new Set(config.vips.flatMap((v) => v.listeners.map(dataPathOf)));
}

export function listenerSpec(config: Config, vip: VipConfig, l: VipConfig['listeners'][number]): ListenerSpec {
  return {
    id: `${vip.name}:${l.port}`,
    vip: vip.name,
    address: vip.address,
    port: l.port,
    pool: toPoolSpec(l.pool, config.pools[l.pool]!),
    ...(l.maxConnections !== undefined ? { maxConnections: l.maxConnections } : {}),
  };
}

/** Process-wide client caps (proxy.maxConnections, proxy.maxConnectionsPerSource). */
export function proxyLimits(config: Config): ProxyLimitsSpec {
  return {
    ...(config.proxy.maxConnections !== undefined ? { maxConnections: config.proxy.maxConnections } : {}),
    ...(config.proxy.maxConnectionsPerSource !== undefined ? { maxConnectionsPerSource: config.proxy.maxConnectionsPerSource } : {}),
  };
}

/** The speaker's peers as gobgp takes them; families depend on the VIPs too (sessionFamilies). */
export function gobgpPeers(config: Config): GobgpPeerOptions[] {
  const s = config.speaker;
  const families = sessionFamilies(s, config.vips.map((v) => v.address));
  return s.peers.map((p, i) => ({
    address: p.address,
    asn: p.asn,
    families: families[i]!,
    ...(p.nextHopIpv6 !== undefined ? { nextHopIpv6: p.nextHopIpv6 } : {}),
    ...(p.nextHopIpv4 !== undefined ? { nextHopIpv4: p.nextHopIpv4 } : {}),
    holdTimeS: p.holdTime / 1000,
    keepaliveS: p.keepalive / 1000,
    connectRetryS: p.connectRetry / 1000,
    ...(p.password !== undefined ? { password: p.password } : {}),
    ...(p.passive ? { passive: true } : {}),
    ...(p.multihop !== undefined ? { ebgpMultihopTtl: p.multihop } : {}),
    ...(p.ttlSecurity !== undefined ? { ttlSecurityHops: p.ttlSecurity.hops } : {}),
    ...(p.localAddress !== undefined ? { localAddress: p.localAddress } : {}),
  }));
}

export function toPoolSpec(name: string, p: PoolConfig): PoolSpec {
  return {
    name,
    balance: p.balance,
    backends: p.backends.map((b) => ({
      endpoint: b.endpoint,
      weight: b.weight,
      ...((b.maxConnections ?? p.maxConnectionsPerBackend) !== undefined ? { maxConnections: (b.maxConnections ?? p.maxConnectionsPerBackend)! } : {}),
    })),
    slowStartMs: p.slowStart,
    connectTimeoutMs: p.connectTimeout,
    maxConnectAttempts: p.maxConnectAttempts,
    retryBeforeReply: p.retryBeforeReply,
    queue: { size: p.queue.size, timeoutMs: p.queue.timeout },
    timeouts: {
      firstByteMs: p.timeouts.firstByte,
      idleMs: p.timeouts.idle,
      maxConnectionAgeMs: p.timeouts.maxConnectionAge,
      maxConnectionAgeJitterMs: p.timeouts.maxConnectionAgeJitter,
    },
    tcpKeepaliveMs: p.tcpKeepalive,
    outlier: {
      consecutiveConnectFailures: p.outlierDetection.consecutiveConnectFailures,
      baseEjectionMs: p.outlierDetection.baseEjectionTime,
      maxEjectionMs: p.outlierDetection.maxEjectionTime,
    },
    closeOnBackendDown: p.closeOnBackendDown,
  };
}

export function toCheckSpec(c: Config['pools'][string]['check']): CheckSpec {
  const tls = c.tls;
  return {
    kind: c.kind,
    intervalMs: c.interval,
    timeoutMs: c.timeout,
    ...(c.fastInterval !== undefined ? { fastIntervalMs: c.fastInterval } : {}),
    ...(c.downInterval !== undefined ? { downIntervalMs: c.downInterval } : {}),
    rise: c.rise,
    fall: c.fall,
    path: c.path ?? '/',
    expectStatus: c.expectStatus ?? [200],
    insecureSkipVerify: tls?.insecureSkipVerify ?? false,
    tls: tls !== undefined,
    ...(c.host !== undefined ? { host: c.host } : {}),
    ...(tls?.caFile !== undefined ? { caFile: tls.caFile } : {}),
    ...(tls?.certFile !== undefined ? { certFile: tls.certFile } : {}),
    ...(tls?.keyFile !== undefined ? { keyFile: tls.keyFile } : {}),
    ...(tls?.serverName !== undefined ? { serverName: tls.serverName } : {}),
    ...(c.expectBody !== undefined ? { expectBody: c.expectBody } : {}),
    ...(c.expectJson !== undefined ? { expectJson: c.expectJson } : {}),
    ...(c.send !== undefined ? { send: parseProbeBytes(c.send)! } : {}),
    ...(c.expect !== undefined ? { expect: parseProbeBytes(c.expect)! } : {}),
    ...(c.service !== undefined ? { service: c.service } : {}),
    ...(c.command !== undefined ? { command: c.command } : {}),
  };
}

/** The paths of one VIP per state: up (attributes.up), pessimized and draining (GRACEFUL_SHUTDOWN added by the reconciler). */
export function vipAdvertisements(vip: Config['vips'][number], ownAsn: number | undefined, peers: Config['speaker']['peers']): Pick<VipSource, 'advertisement' | 'pessimized' | 'draining'> {
  type AttributeSet = NonNullable<Config['vips'][number]['attributes']['up']>;
  const base = { prefix: hostPrefix(vip.address), ...(vip.nextHop !== undefined ? { nextHop: vip.nextHop } : {}) };
  const toAd = (a: AttributeSet): Advertisement => ({
    ...base,
    communities: a.communities,
    ...(a.largeCommunities.length > 0 ? { largeCommunities: a.largeCommunities } : {}),
    ...(a.med !== undefined ? { med: a.med } : {}),
    ...(a.localPref !== undefined ? { localPref: a.localPref } : {}),
    ...(a.asPathPrepend > 0 && ownAsn !== undefined ? { asPath: new Array<number>(a.asPathPrepend).fill(ownAsn) } : {}),
  });
  const up = toAd(vip.attributes.up);
  return {
    advertisement: up,
    pessimized: vip.attributes.pessimized ? toAd(vip.attributes.pessimized) : defaultPessimized(up, ownAsn, peers),
    ...(vip.attributes.draining ? { draining: toAd(vip.attributes.draining) } : {}),
  };
}

/**
 * Without attributes.pessimized, a pessimized path must still lose to any balancer whose gate passes:
 * three own-AS prepends (a longer AS path also leaves ECMP) toward eBGP peers, and a local-pref 50
 * under the default 100 toward iBGP peers (gobgpd sends LOCAL_PREF to iBGP peers only). Config refuses
 * a mix of both kinds of peers without explicit attributes, and prepends toward iBGP peers.
 */
function defaultPessimized(up: Advertisement, ownAsn: number | undefined, peers: Config['speaker']['peers']): Advertisement {
  if (ownAsn === undefined || peers.length === 0) return up;
  const ibgp = peers.filter((p) => p.asn === ownAsn).length;
  if (ibgp === 0) return { ...up, asPath: [...(up.asPath ?? []), ownAsn, ownAsn, ownAsn] };
  return { ...up, localPref: Math.min(up.localPref ?? 100, 100) > 50 ? 50 : 0 };
}

export function toDampingSpec(d: Config['vips'][number]['damping']): DampingSpec {
  return { enabled: d.enabled, penalty: d.penalty, halfLifeMs: d.halfLife, suppress: d.suppress, reuse: d.reuse, maxSuppressMs: d.maxSuppress };
}
