import { isIP } from 'node:net';
import { canonicalAddress } from './address';

/**
 * A host:port pair. An IP host is kept in canonical form (canonicalAddress: RFC 5952 IPv6, IPv4-mapped
 * as IPv4), so `key` ("198.18.21.2:2379", "[2001:db8::2]:2379") is the same for every notation of the
 * same address and may be compared as text: drains, status, metrics labels, health.
 */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly key: string;
}

export function endpoint(host: string, port: number): Endpoint {
  const canonical = canonicalAddress(host) ?? host;
  return { host: canonical, port, key: isIP(canonical) === 6 ? `[${canonical}]:${port}` : `${canonical}:${port}` };
}

/** Parses "host:port" or "[v6]:port"; returns undefined when it is not an IP literal with a port. */
export function parseEndpoint(text: string): Endpoint | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text) ?? /^([0-9.]+):(\d+)$/.exec(text);
  if (!m) return undefined;
  const host = m[1]!;
  const port = Number(m[2]);
  if (isIP(host) === 0 || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return endpoint(host, port);
}
