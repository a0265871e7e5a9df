import { isIP } from 'node:net';
import { Address4, Address6 } from 'ip-address';

/**
 * The one place vipd turns address text into a comparable form. Two texts name the same address
 * exactly when their canonical forms are equal:
 * - IPv4 as four decimal octets ("198.19.0.10"; leading zeros are not an address, as in Node and Go);
 * - IPv6 in RFC 5952 form, lower case and zero-compressed ("2001:db8:100::10" for "2001:DB8:100:0::10");
 * - an IPv4-mapped IPv6 address ("::ffff:198.19.0.10", "::ffff:c613:a") as the IPv4 address it maps:
 *   a socket dialling it reaches that IPv4 address, and Go (gobgpd) prints it that way too;
 * - a zone ("fe80::1%eth0") kept after the canonical address.
 * Every address in the config goes through here, so keys, drains, status and the config's own
 * cross-checks (a backend equal to a VIP, loopback on a listener port, duplicates) all compare the
 * same text whatever notation the operator wrote.
 */
export function canonicalAddress(text: string): string | undefined {
  const family = isIP(text);
  if (family === 4) return new Address4(text).correctForm();
  if (family !== 6) return undefined;
  const zoneAt = text.indexOf('%');
  const address = new Address6(zoneAt < 0 ? text : text.slice(0, zoneAt));
  const zone = zoneAt < 0 ? '' : text.slice(zoneAt);
  if (zone === '' && address.isInSubnet(IPV4_MAPPED)) return address.to4().correctForm();
  return address.correctForm() + zone;
}

/** True when both texts are addresses and name the same one (canonicalAddress). */
export function sameAddress(a: string, b: string): boolean {
  const ca = canonicalAddress(a);
  return ca !== undefined && ca === canonicalAddress(b);
}

/** True for text written as an IPv4-mapped IPv6 address (::ffff:0:0/96), in any notation. */
export function isIpv4Mapped(text: string): boolean {
  return isIP(text) === 6 && !text.includes('%') && new Address6(text).isInSubnet(IPV4_MAPPED);
}

/** 127.0.0.0/8 or ::1, in any notation (IPv4-mapped included). */
export function isLoopbackAddress(text: string): boolean {
  const address = canonicalAddress(text);
  if (address === undefined) return false;
  return isIP(address) === 4 ? address.startsWith('127.') : address === '::1';
}

/** 0.0.0.0 or ::, in any notation: dialling it reaches this node. */
export function isUnspecifiedAddress(text: string): boolean {
  const address = canonicalAddress(text);
  return address === '0.0.0.0' || address === '::';
}

const IPV4_MAPPED = new Address6('::ffff:0:0/96');
