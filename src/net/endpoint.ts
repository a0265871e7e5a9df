import { isIP } from 'node:net';

/** A host:port pair with a canonical key ("198.18.21.2:2379", "[2001:db8::2]:2379"). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly key: string;
}

export function endpoint(host: string, port: number): Endpoint {
  return { host, port, key: isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}` };
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
