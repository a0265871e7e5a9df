import net from 'node:net';
import { Address4, Address6 } from 'ip-address';
import type * as protobuf from 'protobufjs';
import type { Advertisement } from '../speaker';
import { VipdError } from '../../lib/errors';
import type { ApiAny, ApiDestination, ApiFamily, ApiPath } from './api-types';
import { gobgpRoot } from './proto';

/**
 * The only module that knows how GoBGP paths are encoded: NLRI and attributes packed into
 * google.protobuf.Any. Everything else works with RibRoute, a normalised value that compares with ===
 * on its fields: canonical prefix text, communities sorted, unspecified next hop left out.
 */

export type RibOrigin = 'igp' | 'egp' | 'incomplete';
export type RibFamily = 'ipv4' | 'ipv6';

export interface RibRoute {
  /** Canonical text: "198.19.0.10/32", "2001:db8:100::10/128". */
  readonly prefix: string;
  /** Unset when gobgpd is to use the session's local address (0.0.0.0 / :: on the wire). */
  readonly nextHop?: string;
  /** "65000:100" form, numerically sorted, no duplicates. */
  readonly communities: readonly string[];
  /** "ASN:X:Y" form (RFC 8092), sorted, no duplicates. */
  readonly largeCommunities: readonly string[];
  readonly med?: number;
  readonly localPref?: number;
  /** AS numbers in order; empty for locally originated paths. */
  readonly asPath: readonly number[];
  readonly origin: RibOrigin;
}

/** One path of a destination of gobgpd's global RIB. */
export interface RibEntry {
  readonly route: RibRoute;
  /** Originated in this gobgpd (through the API), not learned from a peer. */
  readonly local: boolean;
  readonly best: boolean;
  /** The peer it was learned from; unset when local. */
  readonly neighbor?: string;
}

export const UNICAST_FAMILIES: Readonly<Record<RibFamily, ApiFamily>> = {
  ipv4: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' },
  ipv6: { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' },
};

const UNSPECIFIED_NEXT_HOP: Readonly<Record<RibFamily, string>> = { ipv4: '0.0.0.0', ipv6: '::' };
const ORIGINS: readonly RibOrigin[] = ['igp', 'egp', 'incomplete'];
const TYPE_URL_PREFIX = 'type.googleapis.com/apipb.';
// gobgpd reports a locally originated path's source address as Go's nil net.IP.
const LOCAL_NEIGHBOR = new Set(['<nil>', '']);
const UINT32_MAX = 0xffff_ffff;

function codecError(message: string, cause?: unknown): VipdError {
  return new VipdError('VIPD_ERR_CODEC', message, cause === undefined ? undefined : { cause });
}

interface ParsedPrefix {
  readonly family: RibFamily;
  readonly address: string;
  readonly length: number;
}

function parsePrefix(text: string): ParsedPrefix {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m) throw codecError(`prefix ${JSON.stringify(text)}: expected address/length`);
  const length = Number(m[2]);
  const family = addressFamily(m[1]!);
  if (!family) throw codecError(`prefix ${JSON.stringify(text)}: not an IPv4 or IPv6 address`);
  const max = family === 'ipv4' ? 32 : 128;
  if (length > max) throw codecError(`prefix ${JSON.stringify(text)}: length above ${max}`);
  const address = canonicalAddress(m[1]!, family);
  const network =
    family === 'ipv4'
      ? new Address4(`${address}/${length}`).startAddress().correctForm()
      : new Address6(`${address}/${length}`).startAddress().correctForm();
  // A prefix with host bits set would be silently masked by gobgpd and then never match on reconcile.
  if (network !== address) throw codecError(`prefix ${JSON.stringify(text)}: host bits set (network is ${network}/${length})`);
  return { family, address, length };
}

function addressFamily(text: string): RibFamily | undefined {
  if (net.isIPv4(text)) return 'ipv4';
  if (net.isIPv6(text) && !text.includes('%')) return 'ipv6';
  return undefined;
}

function canonicalAddress(text: string, family: RibFamily): string {
  try {
    if (family === 'ipv4') return new Address4(text).correctForm();
    const a6 = new Address6(text);
    // Go prints IPv4-mapped addresses as plain IPv4, so they could never round-trip.
    if (a6.is4()) throw codecError(`address ${JSON.stringify(text)}: IPv4-mapped IPv6 is not supported`);
    return a6.correctForm();
  } catch (err) {
    if (err instanceof VipdError) throw err;
    throw codecError(`address ${JSON.stringify(text)}: ${err instanceof Error ? err.message : String(err)}`, err);
  }
}

/** Canonical text of a prefix; throws VIPD_ERR_CODEC when it is not a valid IPv4/IPv6 prefix. */
export function canonicalPrefix(prefix: string): string {
  const p = parsePrefix(prefix);
  return `${p.address}/${p.length}`;
}

export function prefixFamily(prefix: string): RibFamily {
  return parsePrefix(prefix).family;
}

export function parseCommunity(text: string): number {
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(text);
  const high = m ? Number(m[1]) : NaN;
  const low = m ? Number(m[2]) : NaN;
  if (!(high <= 0xffff && low <= 0xffff)) throw codecError(`community ${JSON.stringify(text)}: expected "asn:value" with both parts in 0..65535`);
  return high * 0x10000 + low;
}

export function formatCommunity(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > UINT32_MAX) throw codecError(`community value ${value} is not a uint32`);
  return `${Math.floor(value / 0x10000)}:${value % 0x10000}`;
}

interface LargeCommunity {
  readonly global_admin: number;
  readonly local_data1: number;
  readonly local_data2: number;
}

export function parseLargeCommunity(text: string): LargeCommunity {
  const m = /^(\d{1,10}):(\d{1,10}):(\d{1,10})$/.exec(text);
  const parts = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [];
  if (parts.length !== 3 || parts.some((n) => n > UINT32_MAX)) throw codecError(`large community ${JSON.stringify(text)}: expected "asn:x:y" with each part in 0..${UINT32_MAX}`);
  return { global_admin: parts[0]!, local_data1: parts[1]!, local_data2: parts[2]! };
}

function formatLargeCommunity(c: LargeCommunity): string {
  return `${c.global_admin}:${c.local_data1}:${c.local_data2}`;
}

function normaliseLargeCommunities(values: readonly LargeCommunity[]): string[] {
  const sorted = [...values].sort((a, b) => a.global_admin - b.global_admin || a.local_data1 - b.local_data1 || a.local_data2 - b.local_data2);
  return [...new Set(sorted.map(formatLargeCommunity))];
}

function normaliseCommunities(values: readonly number[]): string[] {
  return [...new Set(values)].sort((a, b) => a - b).map(formatCommunity);
}

function checkUint32(name: string, value: number | undefined): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < 0 || value > UINT32_MAX) throw codecError(`${name} ${value}: expected an integer in 0..${UINT32_MAX}`);
}

/**
 * Validates an Advertisement and returns the route vipd wants in gobgpd's RIB.
 * Throws VIPD_ERR_CODEC on a bad prefix, next hop, community, MED or local-pref.
 */
export function routeFromAdvertisement(ad: Advertisement): RibRoute {
  const prefix = parsePrefix(ad.prefix);
  let nextHop: string | undefined;
  if (ad.nextHop !== undefined) {
    const family = addressFamily(ad.nextHop);
    if (family !== prefix.family) throw codecError(`${ad.prefix}: next hop ${JSON.stringify(ad.nextHop)} is not an ${prefix.family} address`);
    nextHop = canonicalAddress(ad.nextHop, family);
    if (nextHop === UNSPECIFIED_NEXT_HOP[family]) nextHop = undefined;
  }
  checkUint32('med', ad.med);
  checkUint32('localPref', ad.localPref);
  for (const asn of ad.asPath ?? []) if (!Number.isInteger(asn) || asn < 1 || asn > UINT32_MAX) throw codecError(`${ad.prefix}: AS ${asn} in the AS path is not 1..${UINT32_MAX}`);
  return {
    prefix: `${prefix.address}/${prefix.length}`,
    ...(nextHop !== undefined && { nextHop }),
    communities: normaliseCommunities(ad.communities.map(parseCommunity)),
    largeCommunities: normaliseLargeCommunities((ad.largeCommunities ?? []).map(parseLargeCommunity)),
    ...(ad.med !== undefined && { med: ad.med }),
    ...(ad.localPref !== undefined && { localPref: ad.localPref }),
    asPath: [...(ad.asPath ?? [])],
    origin: 'igp',
  };
}

/** True when gobgpd holding `a` is as good as holding `b`. */
export function sameRoute(a: RibRoute, b: RibRoute): boolean {
  return (
    a.prefix === b.prefix &&
    a.nextHop === b.nextHop &&
    a.med === b.med &&
    a.localPref === b.localPref &&
    a.origin === b.origin &&
    sameList(a.communities, b.communities) &&
    sameList(a.largeCommunities, b.largeCommunities) &&
    sameList(a.asPath, b.asPath)
  );
}

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function messageType(name: string): protobuf.Type {
  return gobgpRoot().lookupType(`apipb.${name}`);
}

function pack(name: string, fields: Record<string, unknown>): ApiAny {
  const type = messageType(name);
  return { type_url: TYPE_URL_PREFIX + name, value: type.encode(type.fromObject(fields)).finish() };
}

function unpack(any: ApiAny): { name: string; fields: Record<string, unknown> } {
  if (!any.type_url.startsWith(TYPE_URL_PREFIX)) return { name: any.type_url, fields: {} };
  const name = any.type_url.slice(TYPE_URL_PREFIX.length);
  const type = gobgpRoot().lookup(`apipb.${name}`);
  // Attribute types that vipd does not define are skipped: they are never part of what vipd compares.
  if (!type || !('decode' in type)) return { name, fields: {} };
  try {
    const t = type as protobuf.Type;
    return { name, fields: t.toObject(t.decode(any.value), { defaults: true, enums: String, longs: Number }) };
  } catch (err) {
    throw codecError(`${name}: cannot decode: ${err instanceof Error ? err.message : String(err)}`, err);
  }
}

function nlriOf(prefix: ParsedPrefix): ApiAny {
  return pack('IPAddressPrefix', { prefix_len: prefix.length, prefix: prefix.address });
}

/** gobgpd reads the next hop of IPv4 unicast from NEXT_HOP and of IPv6 unicast only from MP_REACH_NLRI. */
function nextHopAttribute(prefix: ParsedPrefix, nlri: ApiAny, nextHop: string | undefined): ApiAny {
  const address = nextHop ?? UNSPECIFIED_NEXT_HOP[prefix.family];
  if (prefix.family === 'ipv4') return pack('NextHopAttribute', { next_hop: address });
  return pack('MpReachNLRIAttribute', { family: UNICAST_FAMILIES.ipv6, next_hops: [address], nlris: [nlri] });
}

/** The Path of an AddPathRequest that makes gobgpd originate `route`. */
export function encodeAddPath(route: RibRoute): ApiPath {
  const prefix = parsePrefix(route.prefix);
  const nlri = nlriOf(prefix);
  const pattrs: ApiAny[] = [pack('OriginAttribute', { origin: ORIGINS.indexOf(route.origin) })];
  if (route.asPath.length > 0) pattrs.push(pack('AsPathAttribute', { segments: [{ type: 'AS_SEQUENCE', numbers: route.asPath }] }));
  pattrs.push(nextHopAttribute(prefix, nlri, route.nextHop));
  if (route.med !== undefined) pattrs.push(pack('MultiExitDiscAttribute', { med: route.med }));
  if (route.localPref !== undefined) pattrs.push(pack('LocalPrefAttribute', { local_pref: route.localPref }));
  if (route.communities.length > 0) pattrs.push(pack('CommunitiesAttribute', { communities: route.communities.map(parseCommunity) }));
  if (route.largeCommunities.length > 0) pattrs.push(pack('LargeCommunitiesAttribute', { communities: route.largeCommunities.map(parseLargeCommunity) }));
  return { nlri, pattrs, family: UNICAST_FAMILIES[prefix.family] };
}

/**
 * The Path of a DeletePathRequest that withdraws the locally originated path for `prefix`, whatever
 * its attributes. gobgpd wants a next hop even here ("nexthop not found" otherwise).
 */
export function encodeDeletePath(prefix: string): ApiPath {
  const parsed = parsePrefix(prefix);
  const nlri = nlriOf(parsed);
  return { nlri, pattrs: [nextHopAttribute(parsed, nlri, undefined)], family: UNICAST_FAMILIES[parsed.family] };
}

function decodePath(path: ApiPath, destinationPrefix: string): RibEntry {
  const nlri = unpack(path.nlri);
  if (nlri.name !== 'IPAddressPrefix') throw codecError(`${destinationPrefix}: NLRI ${nlri.name} is not an IP prefix`);
  const prefix = canonicalPrefix(`${String(nlri.fields.prefix)}/${String(nlri.fields.prefix_len)}`);
  let nextHop: string | undefined;
  const communities: number[] = [];
  const largeCommunities: LargeCommunity[] = [];
  const asPath: number[] = [];
  let med: number | undefined;
  let localPref: number | undefined;
  let origin: RibOrigin = 'incomplete';
  for (const attr of path.pattrs) {
    const { name, fields } = unpack(attr);
    switch (name) {
      case 'OriginAttribute':
        origin = ORIGINS[Number(fields.origin)] ?? 'incomplete';
        break;
      case 'NextHopAttribute':
        nextHop = String(fields.next_hop);
        break;
      case 'MpReachNLRIAttribute': {
        const hops = fields.next_hops as string[];
        if (hops.length > 0) nextHop = hops[0];
        break;
      }
      case 'MultiExitDiscAttribute':
        med = Number(fields.med);
        break;
      case 'LocalPrefAttribute':
        localPref = Number(fields.local_pref);
        break;
      case 'CommunitiesAttribute':
        communities.push(...(fields.communities as number[]));
        break;
      case 'LargeCommunitiesAttribute':
        largeCommunities.push(...(fields.communities as LargeCommunity[]));
        break;
      case 'AsPathAttribute':
        for (const segment of fields.segments as Array<{ numbers: number[] }>) asPath.push(...segment.numbers);
        break;
    }
  }
  if (nextHop !== undefined) {
    const hopFamily = addressFamily(nextHop);
    if (!hopFamily) throw codecError(`${prefix}: next hop ${JSON.stringify(nextHop)} is not an IP address`);
    nextHop = canonicalAddress(nextHop, hopFamily);
    if (nextHop === UNSPECIFIED_NEXT_HOP[hopFamily]) nextHop = undefined;
  }
  const neighbor = path.neighbor_ip ?? '';
  const local = LOCAL_NEIGHBOR.has(neighbor);
  return {
    route: {
      prefix,
      ...(nextHop !== undefined && { nextHop }),
      communities: normaliseCommunities(communities),
      largeCommunities: normaliseLargeCommunities(largeCommunities),
      ...(med !== undefined && { med }),
      ...(localPref !== undefined && { localPref }),
      asPath,
      origin,
    },
    local,
    best: path.best ?? false,
    ...(!local && { neighbor }),
  };
}

/**
 * The families a peer offered in its OPEN (MultiProtocol capabilities among `remoteCap`). A peer that
 * sent none speaks IPv4 unicast only (RFC 4760 section 8).
 */
export function offeredFamilies(remoteCap: readonly ApiAny[]): RibFamily[] {
  const offered = new Set<RibFamily>();
  let multiProtocol = false;
  for (const cap of remoteCap) {
    const { name, fields } = unpack(cap);
    if (name !== 'MultiProtocolCapability') continue;
    multiProtocol = true;
    const family = fields.family as { afi?: string; safi?: string } | undefined;
    if (family?.safi !== 'SAFI_UNICAST') continue;
    if (family.afi === 'AFI_IP') offered.add('ipv4');
    else if (family.afi === 'AFI_IP6') offered.add('ipv6');
  }
  return multiProtocol ? [...offered] : ['ipv4'];
}

/** Packs a MultiProtocolCapability, as a peer's OPEN carries it (for fakes and tests). */
export function encodeMultiProtocolCapability(family: RibFamily): ApiAny {
  return pack('MultiProtocolCapability', { family: UNICAST_FAMILIES[family] });
}

/** Every path of one ListPath destination. Throws VIPD_ERR_CODEC on an NLRI or attribute it cannot read. */
export function decodeDestination(destination: ApiDestination): RibEntry[] {
  return destination.paths.map((p) => decodePath(p, destination.prefix));
}
