import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Endpoint } from '../net/endpoint';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { AdminInputError, type AdminActions } from './control';
import { parseDrainBody } from './drain-request';

interface Route {
  readonly method: 'GET' | 'POST';
  /** Routes that take a body read it themselves; the others discard it so keep-alive clients behave. */
  readonly readsBody?: boolean;
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/**
 * The admin HTTP API, on a loopback address only (config refuses anything else). Reads are GET,
 * mutations are POST; the wrong method gets 405 with Allow, so a stray GET never drains a node.
 */
export class AdminServer {
  private server: Server | undefined;
  private readonly routes: ReadonlyMap<string, Route>;
  /** Who a mutation came from, as logged and kept with a drain. */
  private readonly source: string;

  constructor(
    private readonly listen: Endpoint,
    private readonly actions: AdminActions,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.source = `admin http ${listen.key}`;
    this.routes = new Map<string, Route>([
      ['/status', { method: 'GET', handle: async (_req, res) => sendJson(res, 200, this.actions.status()) }],
      ['/metrics', {
        method: 'GET',
        handle: async (_req, res) => {
          const m = await this.actions.metricsText();
          res.writeHead(200, { 'content-type': m.contentType }).end(m.body);
        },
      }],
      ['/drain', { method: 'POST', readsBody: true, handle: async (req, res) => { const r = parseDrainBody(await readJsonBody(req), true); await this.actions.drain(this.source, r); sendJson(res, 200, { drained: true, ...r }); } }],
      ['/undrain', { method: 'POST', readsBody: true, handle: async (req, res) => { const r = parseDrainBody(await readJsonBody(req), false); await this.actions.undrain(this.source, r); sendJson(res, 200, { drained: false, ...r }); } }],
      ['/backends/drain', { method: 'POST', readsBody: true, handle: (req, res) => this.drainBackend(req, res, true) }],
      ['/backends/undrain', { method: 'POST', readsBody: true, handle: (req, res) => this.drainBackend(req, res, false) }],
    ]);
  }

  start(): Promise<void> {
    const server = createServer((req, res) => void this.dispatch(req, res));
    server.headersTimeout = 5000;
    server.requestTimeout = 10_000;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.listen.port, this.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  /** The bound port (useful when configured with port 0). */
  port(): number {
    const addr = this.server?.address();
    return addr && typeof addr === 'object' ? addr.port : 0;
  }

  close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return Promise.resolve();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  private async drainBackend(req: IncomingMessage, res: ServerResponse, drained: boolean): Promise<void> {
    const body = await readJsonBody(req);
    const unknownKeys = Object.keys(body).filter((k) => k !== 'pool' && k !== 'backend');
    if (unknownKeys.length) throw new AdminInputError(400, `unknown field(s) ${unknownKeys.join(', ')}; expected {"pool": NAME, "backend": "IP:PORT"}`);
    const { pool, backend } = body;
    if (typeof pool !== 'string' || pool === '') throw new AdminInputError(400, 'field "pool" (string) is required');
    if (typeof backend !== 'string' || backend === '') throw new AdminInputError(400, 'field "backend" ("IP:PORT") is required');
    await this.actions.drainBackend(pool, backend, drained, this.source);
    sendJson(res, 200, { pool, backend, drained });
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    const route = this.routes.get(path);
    const count = (code: number) => this.metrics.adminRequests.inc({ route: route ? path : 'unknown', code: String(code) });
    if (!route) {
      count(404);
      return sendJson(res, 404, { error: `no such endpoint ${path}; try /status, /metrics, /drain, /undrain, /backends/drain, /backends/undrain` });
    }
    if (req.method !== route.method) {
      count(405);
      res.setHeader('allow', route.method);
      return sendJson(res, 405, { error: `${path} accepts ${route.method} only` });
    }
    try {
      if (!route.readsBody) req.resume();
      await route.handle(req, res);
      count(res.statusCode);
      if (route.method === 'POST') this.logger.info({ event: 'admin', op: path.slice(1) }, `admin ${path}`);
    } catch (err) {
      if (err instanceof AdminInputError) {
        count(err.status);
        this.logger.warn({ event: 'admin', op: path, err: err.message }, 'admin request refused');
        return sendJson(res, err.status, { error: err.message });
      }
      count(500);
      this.logger.error({ event: 'admin', op: path, err: errorMessage(err) }, 'admin request failed');
      if (!res.headersSent) sendJson(res, 500, { error: errorMessage(err) });
    }
  }
}

/** Bodies are small JSON objects; anything else is refused before it is acted on. */
const MAX_BODY_BYTES = 16 * 1024;

function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new AdminInputError(400, `body over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let parsed: unknown;
      try {
        parsed = text.trim() === '' ? {} : JSON.parse(text);
      } catch (err) {
        return reject(new AdminInputError(400, `body is not JSON: ${errorMessage(err)}`));
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return reject(new AdminInputError(400, 'body must be a JSON object'));
      resolve(parsed as Record<string, unknown>);
    });
  });
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2) + '\n');
}
