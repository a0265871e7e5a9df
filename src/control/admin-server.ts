import * as fs from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Endpoint } from '../net/endpoint';
import { errorMessage, VipdError } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import {
  allowedHosts,
  bearerToken,
  checkHost,
  checkJsonContentType,
  checkOrigin,
  quoted,
  requestPath,
  type AdminRefusal,
  type AdminRefusalReason,
} from './admin-guard';
import { prepareSocketPath, resolveGroup, restrictSocket } from './admin-socket';
import { readAdminToken, tokenMatches } from './admin-token';
import { ADMIN_MAX_CONNECTIONS, AdminInputError, type AdminActions } from './control';
import { parseDrainBody } from './drain-request';
import { EventJournal } from './event-journal';
import { StatusFeed } from './status-page-feed';

export interface AdminTimeouts {
  /** Whole header section must arrive within this (slow headers, slowloris). */
  readonly headersMs: number;
  /** Whole request, body included, must arrive within this (truncated bodies). */
  readonly requestMs: number;
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveMs: number;
  /** A connection with no traffic at all is closed after this. */
  readonly idleMs: number;
}

export const DEFAULT_ADMIN_TIMEOUTS: AdminTimeouts = { headersMs: 5000, requestMs: 10_000, keepAliveMs: 5000, idleMs: 10_000 };

export interface AdminServerOptions {
  /** Loopback TCP listener: reads for anyone, mutations only with the bearer token. */
  readonly listen?: Endpoint;
  /** Unix socket: file permissions decide who connects; whoever connects may mutate. */
  readonly socket?: { readonly path: string; readonly group?: string | number };
  /** admin.tokenFile, read at start. Without it, TCP is read-only. */
  readonly tokenFile?: string;
  readonly actions: AdminActions;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Over both transports together; default ADMIN_MAX_CONNECTIONS (the fd budget reserves that many). */
  readonly maxConnections?: number;
  readonly timeouts?: Partial<AdminTimeouts>;
  /** Transitions the status page's timeline shows; the daemon records reloads in it. A private one when absent. */
  readonly journal?: EventJournal;
}

type Transport =
  | { readonly kind: 'tcp'; readonly hosts: ReadonlySet<string>; readonly source: string }
  | { readonly kind: 'socket'; readonly source: string };

interface Route {
  readonly method: 'GET' | 'POST';
  /** POST routes change the node: they need the socket or the token, JSON, and a checked body. */
  handle(res: ServerResponse, body: Record<string, unknown>, source: string, request: { req: IncomingMessage; transport: Transport['kind'] }): Promise<void>;
}

/** Connections of the cap that only the unix socket may use. */
export const SOCKET_RESERVED = 16;
/** Bodies are small JSON objects. Past this, 413. */
const MAX_BODY_BYTES = 16 * 1024;
/** A body this far past the limit is not drained to the end: the connection is cut after the 413. */
const MAX_DISCARD_BYTES = 1024 * 1024;
/** Warn lines about refusals per window; the rest are counted and summed up in one line. */
const REFUSAL_LOG_BURST = 20;
const REFUSAL_LOG_WINDOW_MS = 10_000;

const ROUTE_LIST = '/, /events, /timeline, /status, /metrics, /drain, /undrain, /backends/drain, /backends/undrain, /reload';

/**
 * The admin HTTP API, on a unix socket and a loopback TCP port. Nothing a client sends can stop the
 * daemon: every request is answered inside one try (a 4xx with a JSON message for bad input), and
 * errors below HTTP (garbage, overlong headers, timeouts) are answered on the raw socket.
 *
 * Who may change the node (see docs/admin.md): a client of the unix socket (mode 0660, so root and the
 * socket's group), or a TCP client presenting the bearer token. A TCP request must also name the
 * listener in Host (DNS rebinding) and carry no foreign Origin (CSRF); a mutation must be
 * application/json on both transports. A refused request changes nothing, is counted by reason and
 * logged. Connections are capped over both listeners, and every connection has header, request and
 * idle timeouts, so neither idle clients nor slow ones can pile up.
 */
export class AdminServer {
  private tcp: Server | undefined;
  private unix: Server | undefined;
  private unixIno: number | undefined;
  private token: string | undefined;
  private readonly open = { tcp: 0, socket: 0 };
  /** Sockets whose current request has a response in progress: a parse error there must not write a second status line. */
  private readonly responding = new WeakSet<Socket>();
  private readonly routes: ReadonlyMap<string, Route>;
  private readonly timeouts: AdminTimeouts;
  private readonly maxConnections: number;
  private refusalLog = { windowStart: 0, logged: 0, suppressed: 0 };
  /** The status page and its live feed (read-only: served on both transports). */
  readonly feed: StatusFeed;

  constructor(private readonly options: AdminServerOptions) {
    this.timeouts = { ...DEFAULT_ADMIN_TIMEOUTS, ...options.timeouts };
    this.maxConnections = options.maxConnections ?? ADMIN_MAX_CONNECTIONS;
    const actions = options.actions;
    const journal = options.journal ?? new EventJournal();
    this.feed = new StatusFeed({ status: () => actions.status(), journal, logger: options.logger });
    this.routes = new Map<string, Route>([
      ['/', { method: 'GET', handle: async (res) => this.feed.servePage(res) }],
      ['/events', { method: 'GET', handle: async (res, _body, _source, { req, transport }) => void this.feed.serveEvents(req, res, transport) }],
      ['/timeline', { method: 'GET', handle: async (res) => sendJson(res, 200, { events: journal.list() }) }],
      ['/status', { method: 'GET', handle: async (res) => sendJson(res, 200, actions.status()) }],
      [
        '/metrics',
        {
          method: 'GET',
          handle: async (res) => {
            const m = await actions.metricsText();
            res.writeHead(200, { 'content-type': m.contentType, 'content-length': Buffer.byteLength(m.body), 'cache-control': 'no-store' }).end(m.body);
          },
        },
      ],
      ['/drain', { method: 'POST', handle: async (res, body, source) => { const r = parseDrainBody(body, true); await actions.drain(source, r); sendJson(res, 200, { drained: true, ...r }); } }],
      ['/undrain', { method: 'POST', handle: async (res, body, source) => { const r = parseDrainBody(body, false); await actions.undrain(source, r); sendJson(res, 200, { drained: false, ...r }); } }],
      ['/backends/drain', { method: 'POST', handle: (res, body, source) => this.drainBackend(res, body, true, source) }],
      ['/backends/undrain', { method: 'POST', handle: (res, body, source) => this.drainBackend(res, body, false, source) }],
      ['/reload', { method: 'POST', handle: (res, body, source) => this.reload(res, body, source) }],
    ]);
  }

  /** Reads the token, opens the TCP listener, then the socket. A problem with any of them is a start error naming its key. */
  async start(): Promise<void> {
    const { listen, socket, tokenFile } = this.options;
    this.token = tokenFile !== undefined ? readAdminToken(tokenFile) : undefined;
    const gid = socket?.group !== undefined ? resolveGroup(socket.group) : undefined;
    try {
      if (listen) {
        // Known once bound (port 0 in tests); until then no Host matches.
        let hosts: ReadonlySet<string> = new Set();
        const server = this.createHttpServer('tcp', () => ({ kind: 'tcp', hosts, source: `admin tcp ${listen.key} (token)` }));
        this.tcp = server;
        await listenOn(server, `admin.listen ${listen.key}`, (cb) => server.listen(listen.port, listen.host, cb));
        hosts = allowedHosts(listen.host, this.port());
      }
      if (socket) {
        await prepareSocketPath(socket.path, gid);
        const transport: Transport = { kind: 'socket', source: `admin socket ${socket.path}` };
        const server = this.createHttpServer('socket', () => transport);
        this.unix = server;
        await listenOn(server, `admin.socket ${socket.path}`, (cb) => server.listen(socket.path, cb));
        restrictSocket(socket.path, gid);
        this.unixIno = fs.statSync(socket.path).ino;
      }
      this.feed.start();
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  /** The bound TCP port (useful when configured with port 0); 0 without TCP. */
  port(): number {
    const addr = this.tcp?.address();
    return addr && typeof addr === 'object' ? addr.port : 0;
  }

  /** Stops listening, lets requests in flight finish (1 s at most), removes the socket file. */
  async close(): Promise<void> {
    this.feed.close();
    const servers = [this.tcp, this.unix].filter((s): s is Server => s !== undefined);
    this.tcp = undefined;
    const unix = this.unix;
    this.unix = undefined;
    await Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            const force = setTimeout(() => server.closeAllConnections(), 1000);
            server.close(() => (clearTimeout(force), resolve()));
            server.closeIdleConnections();
          }),
      ),
    );
    if (unix) this.removeOwnSocket();
  }

  /** Cuts every connection now. */
  destroy(): void {
    this.feed.close();
    for (const server of [this.tcp, this.unix]) {
      if (!server) continue;
      server.close();
      server.closeAllConnections();
    }
    if (this.unix) this.removeOwnSocket();
    this.tcp = undefined;
    this.unix = undefined;
  }

  private removeOwnSocket(): void {
    const path = this.options.socket?.path;
    if (path === undefined || this.unixIno === undefined) return;
    try {
      // Only the file this server made: a vipd started since may own the path now.
      if (fs.lstatSync(path).ino === this.unixIno) fs.unlinkSync(path);
    } catch {
      // gone already
    }
    this.unixIno = undefined;
  }

  private createHttpServer(kind: Transport['kind'], transport: () => Transport): Server {
    const t = this.timeouts;
    const server = createServer(
      {
        headersTimeout: t.headersMs,
        requestTimeout: Math.max(t.requestMs, t.headersMs),
        keepAliveTimeout: t.keepAliveMs,
        // Header and request timeouts are enforced by this sweep; the default (30 s) would let slow clients stay far longer.
        connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(t.headersMs / 2))),
        // Checked here instead, on TCP, with a 421 that says why.
        requireHostHeader: false,
      },
      (req, res) => {
        this.responding.add(req.socket);
        res.once('close', () => this.responding.delete(req.socket));
        void this.dispatch(req, res, transport()).catch((err: unknown) => {
          // dispatch answers everything itself; this is the last guard so nothing escapes to the process.
          this.options.logger.error({ event: 'admin', err: errorMessage(err) }, 'admin request failed outside its handler');
          req.socket.destroy();
        });
      },
    );
    server.timeout = t.idleMs;
    // After listen(), a server error is an accept(2) failure (EMFILE...): logged, never an uncaught 'error' that ends the process.
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (server.listening) this.options.logger.error({ event: 'adminError', transport: kind, err: err.code ?? err.message }, `admin ${kind} listener: ${err.message}`);
    });
    server.on('connection', (socket: Socket) => this.admitConnection(kind, socket));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    // Without these listeners Node drops CONNECT and Upgrade requests without a word.
    server.on('connect', (req: IncomingMessage, socket: Socket) =>
      this.answerRaw(socket, { status: 405, reason: 'method', message: `${ROUTE_LIST} take GET or POST; CONNECT is not supported` }, req.url),
    );
    server.on('upgrade', (req: IncomingMessage, socket: Socket) =>
      this.answerRaw(socket, { status: 400, reason: 'malformed', message: 'protocol upgrades are not supported' }, req.url),
    );
    return server;
  }

  private answerRaw(socket: Socket, refusal: AdminRefusal, target: string | undefined): void {
    this.options.metrics.adminRequests.inc({ route: 'unknown', code: String(refusal.status) });
    this.refuse(refusal.reason, refusal.message, { path: truncate(target ?? '') });
    writeRawRefusal(socket, refusal);
  }

  /**
   * The cap is over both listeners; TCP may take all but SOCKET_RESERVED of it, so a flood of idle TCP
   * connections (any local user, any web page) never locks the operators on the socket out.
   */
  private admitConnection(kind: Transport['kind'], socket: Socket): void {
    const total = this.open.tcp + this.open.socket;
    const tcpCap = Math.max(1, this.maxConnections - SOCKET_RESERVED);
    if (total >= this.maxConnections || (kind === 'tcp' && this.open.tcp >= tcpCap)) {
      this.refuse('connectionLimit', `admin ${kind} connection refused: ${total} open (cap ${this.maxConnections}, of which TCP may hold ${tcpCap})`);
      socket.destroy();
      return;
    }
    this.open[kind]++;
    this.options.metrics.adminConnections.set(total + 1);
    socket.once('close', () => {
      this.open[kind]--;
      this.options.metrics.adminConnections.set(this.open.tcp + this.open.socket);
    });
  }

  /** Bytes that are not HTTP, headers too large, a request too slow: answered on the raw socket, then closed. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return void socket.destroy();
    const code = err.code ?? '';
    const refusal: AdminRefusal =
      code === 'HPE_HEADER_OVERFLOW'
        ? { status: 431, reason: 'malformed', message: 'request headers too large' }
        : code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'HPE_HEADER_TIMEOUT'
          ? { status: 408, reason: 'malformed', message: 'request not received in time' }
          : { status: 400, reason: 'malformed', message: `malformed HTTP request (${code || err.message})` };
    this.options.metrics.adminRequests.inc({ route: 'unknown', code: String(refusal.status) });
    this.refuse(refusal.reason, refusal.message);
    if (!this.responding.has(socket)) writeRawRefusal(socket, refusal);
    else socket.destroy();
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, transport: Transport): Promise<void> {
    let routeLabel = 'unknown';
    try {
      if (req.httpVersionMajor !== 1) return this.answerRefusal(req, res, routeLabel, { status: 400, reason: 'malformed', message: `HTTP/${quoted(req.httpVersion, 8)} is not supported; speak HTTP/1.1` });
      const target = requestPath(req.url);
      if ('status' in target) return this.answerRefusal(req, res, routeLabel, target);
      const path = target.path;
      if (transport.kind === 'tcp') {
        const badHost = checkHost(req.headers, req.httpVersion, transport.hosts, countHeader(req.rawHeaders, 'host'));
        if (badHost) return this.answerRefusal(req, res, routeLabel, badHost);
      }
      const badOrigin = checkOrigin(req.headers, transport.kind === 'tcp' ? transport.hosts : undefined);
      if (badOrigin) return this.answerRefusal(req, res, routeLabel, badOrigin);
      const route = this.routes.get(path);
      if (!route) return this.answerRefusal(req, res, routeLabel, { status: 404, reason: 'notFound', message: `no such endpoint ${quoted(path)}; try ${ROUTE_LIST}` });
      routeLabel = path;
      if (req.method !== route.method) {
        res.setHeader('allow', route.method);
        return this.answerRefusal(req, res, routeLabel, { status: 405, reason: 'method', message: `${path} accepts ${route.method} only` });
      }
      if (route.method === 'GET') {
        req.resume();
        await route.handle(res, {}, transport.source, { req, transport: transport.kind });
        return this.count(routeLabel, res.statusCode);
      }

      const denied = this.checkMutationAllowed(req, transport);
      if (denied) return this.answerRefusal(req, res, routeLabel, denied);
      const badType = checkJsonContentType(req.headers);
      if (badType) return this.answerRefusal(req, res, routeLabel, badType);
      const body = await readJsonBody(req);
      if ('status' in body) return this.answerRefusal(req, res, routeLabel, body);
      await route.handle(res, body.value, transport.source, { req, transport: transport.kind });
      this.count(routeLabel, res.statusCode);
      this.options.logger.info({ event: 'admin', op: path.slice(1), source: transport.source }, `admin ${path} (${transport.source})`);
    } catch (err) {
      if (err instanceof AdminInputError) {
        return this.answerRefusal(req, res, routeLabel, { status: err.status, reason: 'badInput', message: err.message });
      }
      this.count(routeLabel, 500);
      this.options.logger.error({ event: 'admin', op: routeLabel, err: errorMessage(err) }, 'admin request failed');
      if (!res.headersSent) sendJson(res, 500, { error: errorMessage(err) });
      else res.destroy();
    }
  }

  /** Socket: yes (its mode decided who got here). TCP: only with the token; 401 without one, 403 with a wrong one. */
  private checkMutationAllowed(req: IncomingMessage, transport: Transport): AdminRefusal | undefined {
    if (transport.kind === 'socket') return undefined;
    const presented = bearerToken(req.headers);
    const socketHint = this.options.socket ? ` or use the unix socket ${this.options.socket.path}` : '';
    if (presented === undefined) {
      return { status: 401, reason: 'noToken', message: `mutations over TCP need Authorization: Bearer <token from admin.tokenFile>${socketHint}` };
    }
    if (presented === null || this.token === undefined || !tokenMatches(presented, this.token)) {
      return { status: 403, reason: 'badToken', message: this.token === undefined ? `no admin.tokenFile is configured: TCP is read-only${socketHint}` : 'wrong token' };
    }
    return undefined;
  }

  /** 200 when applied or unchanged; 409 with the reason (and each refused key's line) otherwise. */
  private async reload(res: ServerResponse, body: Record<string, unknown>, source: string): Promise<void> {
    expectNoFields(body);
    const report = await this.options.actions.reload(source);
    const ok = report.result === 'applied' || report.result === 'unchanged';
    sendJson(res, ok ? 200 : 409, ok ? report : { error: report.reason ?? report.result, ...report });
  }

  private async drainBackend(res: ServerResponse, body: Record<string, unknown>, drained: boolean, source: string): Promise<void> {
    const unknownKeys = Object.keys(body).filter((k) => k !== 'pool' && k !== 'backend');
    if (unknownKeys.length) throw new AdminInputError(400, `unknown field(s) ${unknownKeys.map((k) => quoted(k, 32)).join(', ')}; expected {"pool": NAME, "backend": "IP:PORT"}`);
    const { pool, backend } = body;
    if (typeof pool !== 'string' || pool === '') throw new AdminInputError(400, 'field "pool" (string) is required');
    if (typeof backend !== 'string' || backend === '') throw new AdminInputError(400, 'field "backend" ("IP:PORT") is required');
    await this.options.actions.drainBackend(pool, backend, drained, source);
    sendJson(res, 200, { pool, backend, drained });
  }

  private answerRefusal(req: IncomingMessage, res: ServerResponse, route: string, refusal: AdminRefusal): void {
    this.count(route, refusal.status);
    this.refuse(refusal.reason, refusal.message, { method: truncate(req.method ?? ''), path: truncate(req.url ?? ''), status: refusal.status });
    if (res.headersSent) return void res.destroy();
    if (refusal.status === 401) res.setHeader('www-authenticate', 'Bearer realm="vipd admin"');
    // A body still arriving (refused before it was read) would otherwise be parsed as the next request.
    if (!req.complete) res.setHeader('connection', 'close');
    sendJson(res, refusal.status, { error: refusal.message });
    req.resume();
  }

  private count(route: string, code: number): void {
    this.options.metrics.adminRequests.inc({ route, code: String(code) });
  }

  /** Counts a refusal and logs it at warn; a flood is logged as a burst and then one summary line per window. */
  private refuse(reason: AdminRefusalReason, message: string, fields: Record<string, unknown> = {}): void {
    this.options.metrics.adminRefused.inc({ reason });
    const now = Date.now();
    const log = this.refusalLog;
    if (now - log.windowStart >= REFUSAL_LOG_WINDOW_MS) {
      if (log.suppressed > 0) {
        this.options.logger.warn({ event: 'adminRefused', suppressed: log.suppressed }, `${log.suppressed} more admin refusals not logged one by one (see vipd_admin_refused_total)`);
      }
      this.refusalLog = { windowStart: now, logged: 0, suppressed: 0 };
    }
    if (this.refusalLog.logged < REFUSAL_LOG_BURST) {
      this.refusalLog.logged++;
      this.options.logger.warn({ event: 'adminRefused', reason, ...fields }, `admin request refused (${reason}): ${message}`);
    } else {
      this.refusalLog.suppressed++;
    }
  }
}

/** A refusal written on the raw socket (below HTTP: parse errors, CONNECT, upgrades), then the connection closed. */
function writeRawRefusal(socket: Socket, refusal: AdminRefusal): void {
  if (!socket.writable) return void socket.destroy();
  const body = JSON.stringify({ error: refusal.message }) + '\n';
  socket.end(
    `HTTP/1.1 ${refusal.status} ${STATUS_TEXT[refusal.status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  // A client that never reads must not keep the descriptor.
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** listen(), with an error that names the config key (`admin.listen 127.0.0.1:9180: EADDRINUSE`). */
function listenOn(server: Server, what: string, listen: (cb: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException) => reject(new VipdError('VIPD_ERR_ADMIN', `${what}: cannot listen: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', fail);
    listen(() => {
      server.off('error', fail);
      resolve();
    });
  });
}

function countHeader(rawHeaders: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) n++;
  return n;
}

function expectNoFields(body: Record<string, unknown>): void {
  const keys = Object.keys(body);
  if (keys.length) throw new AdminInputError(400, `unknown field(s) ${keys.map((k) => quoted(k, 32)).join(', ')}; this endpoint takes an empty body or {}`);
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

/**
 * The JSON object of a mutation's body (empty means {}), or a refusal: 413 over MAX_BODY_BYTES, 400
 * for anything else. Settles whatever the client does: sends too much, stops half-way, disconnects.
 */
function readJsonBody(req: IncomingMessage): Promise<{ value: Record<string, unknown> } | AdminRefusal> {
  const tooLarge: AdminRefusal = { status: 413, reason: 'bodyTooLarge', message: `body over ${MAX_BODY_BYTES} bytes` };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) return Promise.resolve(tooLarge);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (result: { value: Record<string, unknown> } | AdminRefusal) => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
      // Read on (and discard) so the 413 reaches a client still writing; past this, give up on it.
      else if (size > MAX_BODY_BYTES + MAX_DISCARD_BYTES) settle(tooLarge);
    });
    req.on('error', () => settle({ status: 400, reason: 'badBody', message: 'the request body did not arrive' }));
    req.on('close', () => settle({ status: 400, reason: 'badBody', message: 'the connection closed before the body was complete' }));
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return settle(tooLarge);
      const text = Buffer.concat(chunks).toString('utf8');
      let parsed: unknown;
      try {
        parsed = text.trim() === '' ? {} : JSON.parse(text);
      } catch (err) {
        return settle({ status: 400, reason: 'badBody', message: `body is not JSON: ${errorMessage(err).slice(0, 120)}` });
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return settle({ status: 400, reason: 'badBody', message: 'body must be a JSON object' });
      settle({ value: parsed as Record<string, unknown> });
    });
  });
}

const STATUS_TEXT: Record<AdminRefusal['status'], string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  421: 'Misdirected Request',
  431: 'Request Header Fields Too Large',
};

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res
    .writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' })
    .end(text);
}
