import type { IncomingHttpHeaders } from 'node:http';

/**
 * The admin API's checks on a request, as pure functions of what arrived: they never throw, whatever
 * the bytes, and each refusal names its reason (the `reason` label of vipd_admin_refused_total).
 *
 * Why they exist: a browser on the node is an attacker. A page can make it send a "simple" cross-site
 * POST (text/plain, no preflight) to 127.0.0.1, and DNS rebinding can make it send same-origin requests
 * under a hostname the attacker controls. So on TCP a request must name the admin's own Host, carry no
 * foreign Origin, and a mutation must be application/json (which a page can only send after a CORS
 * preflight that this server never answers).
 */
export type AdminRefusalReason =
  | 'badTarget'
  | 'host'
  | 'origin'
  | 'notFound'
  | 'method'
  | 'noToken'
  | 'badToken'
  | 'contentType'
  | 'bodyTooLarge'
  | 'badBody'
  | 'badInput'
  | 'malformed'
  | 'connectionLimit';

export interface AdminRefusal {
  readonly status: 400 | 401 | 403 | 404 | 405 | 408 | 409 | 413 | 415 | 421 | 431;
  readonly reason: AdminRefusalReason;
  readonly message: string;
}

/** Longest request target worth looking at; every route is far shorter. */
const MAX_TARGET_LENGTH = 256;

/**
 * The path of a request target, without its query, or a refusal. No URL parsing and no
 * percent-decoding: routes are plain ASCII, so `/%73tatus`, `//` or `/%zz` simply match nothing.
 */
export function requestPath(target: string | undefined): { path: string } | AdminRefusal {
  if (target === undefined || target === '') return { status: 400, reason: 'badTarget', message: 'empty request target' };
  if (target.length > MAX_TARGET_LENGTH) return { status: 400, reason: 'badTarget', message: `request target over ${MAX_TARGET_LENGTH} characters` };
  if (target[0] !== '/') return { status: 400, reason: 'badTarget', message: 'the request target must be a path starting with /' };
  const query = target.indexOf('?');
  return { path: query === -1 ? target : target.slice(0, query) };
}

/** JSON-safe echo of a client-supplied string for an error message: short, printable. */
export function quoted(text: string, max = 64): string {
  const clipped = text.length > max ? `${text.slice(0, max)}…` : text;
  return JSON.stringify(clipped);
}

/**
 * The Host values a TCP admin listener answers to: `localhost`, or a loopback literal, with its port.
 * IP literals cannot be rebound; any other name may be an attacker's.
 */
export function allowedHosts(listenHost: string, port: number): ReadonlySet<string> {
  const names = ['localhost', '127.0.0.1', '[::1]', listenHost.includes(':') ? `[${listenHost}]` : listenHost];
  const hosts = new Set<string>();
  for (const name of names) {
    hosts.add(`${name}:${port}`.toLowerCase());
    if (port === 80) hosts.add(name.toLowerCase());
  }
  return hosts;
}

/** Host check on TCP (DNS rebinding): 421 unless Host names this listener. HTTP/1.0 may omit it. */
export function checkHost(headers: IncomingHttpHeaders, httpVersion: string, hosts: ReadonlySet<string>, hostHeaders = 1): AdminRefusal | undefined {
  // Node keeps the first of several; a proxy in between might use another. Ambiguous is refused.
  if (hostHeaders > 1) return { status: 421, reason: 'host', message: 'more than one Host header' };
  const host = headers.host;
  if (host === undefined || host === '') {
    if (httpVersion === '1.0') return undefined;
    return { status: 421, reason: 'host', message: 'a Host header is required' };
  }
  if (!hosts.has(host.toLowerCase())) {
    return { status: 421, reason: 'host', message: `Host ${quoted(host)} is not this admin listener; use one of ${[...hosts].join(', ')}` };
  }
  return undefined;
}

/**
 * Cross-site check: an Origin that is present must be this listener's own (`http://` + an allowed
 * host). A unix socket has no web origin, so any Origin there is refused. `Sec-Fetch-Site` from a
 * browser that says the request is cross-site is refused too, Origin or not.
 */
export function checkOrigin(headers: IncomingHttpHeaders, hosts: ReadonlySet<string> | undefined): AdminRefusal | undefined {
  const origin = headers.origin;
  if (origin !== undefined) {
    const own = hosts !== undefined && origin.toLowerCase().startsWith('http://') && hosts.has(origin.slice('http://'.length).toLowerCase());
    if (!own) return { status: 403, reason: 'origin', message: `cross-origin request from ${quoted(origin)} refused` };
  }
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    return { status: 403, reason: 'origin', message: `cross-site request (Sec-Fetch-Site: ${quoted(site)}) refused` };
  }
  return undefined;
}

/** Mutations must say application/json: a browser sends that cross-site only after a CORS preflight, which never succeeds here. */
export function checkJsonContentType(headers: IncomingHttpHeaders): AdminRefusal | undefined {
  const type = headers['content-type'];
  const media = type?.split(';')[0]?.trim().toLowerCase();
  if (media === 'application/json') return undefined;
  return {
    status: 415,
    reason: 'contentType',
    message: `a mutation needs Content-Type: application/json (got ${type === undefined ? 'none' : quoted(type)})`,
  };
}

/** The token of `Authorization: Bearer <token>`, undefined when there is no such header, null when it is not a bearer token. */
export function bearerToken(headers: IncomingHttpHeaders): string | undefined | null {
  const auth = headers.authorization;
  if (auth === undefined) return undefined;
  const m = /^Bearer[ \t]+([!-~]+)[ \t]*$/i.exec(auth);
  return m ? m[1]! : null;
}
