import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Endpoint } from '../net/endpoint';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { AdminActions } from './control';

interface Route {
  readonly method: 'GET' | 'POST';
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/**
 * The admin HTTP API, on a loopback address only (config refuses anything else). Reads are GET,
 * mutations are POST; the wrong method gets 405 with Allow, so a stray GET never drains a node.
 */
export class AdminServer {
  private server: Server | undefined;
  private readonly routes: ReadonlyMap<string, Route>;

  constructor(
    private readonly listen: Endpoint,
    private readonly actions: AdminActions,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {
    this.routes = new Map<string, Route>([
      ['/status', { method: 'GET', handle: async (_req, res) => sendJson(res, 200, this.actions.status()) }],
      ['/metrics', {
        method: 'GET',
        handle: async (_req, res) => {
          const m = await this.actions.metricsText();
          res.writeHead(200, { 'content-type': m.contentType }).end(m.body);
        },
      }],
      ['/drain', { method: 'POST', handle: async (_req, res) => { await this.actions.drain(); sendJson(res, 200, { drained: true }); } }],
      ['/undrain', { method: 'POST', handle: async (_req, res) => { await this.actions.undrain(); sendJson(res, 200, { drained: false }); } }],
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

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    const route = this.routes.get(path);
    const count = (code: number) => this.metrics.adminRequests.inc({ route: route ? path : 'unknown', code: String(code) });
    if (!route) {
      count(404);
      return sendJson(res, 404, { error: `no such endpoint ${path}; try /status, /metrics, /drain, /undrain` });
    }
    if (req.method !== route.method) {
      count(405);
      res.setHeader('allow', route.method);
      return sendJson(res, 405, { error: `${path} accepts ${route.method} only` });
    }
    // Bodies are not used; drain them so keep-alive clients behave.
    req.resume();
    try {
      await route.handle(req, res);
      count(res.statusCode);
      if (route.method === 'POST') this.logger.info({ event: 'admin', op: path.slice(1) }, `admin ${path}`);
    } catch (err) {
      count(500);
      this.logger.error({ event: 'admin', op: path, err: errorMessage(err) }, 'admin request failed');
      if (!res.headersSent) sendJson(res, 500, { error: errorMessage(err) });
    }
  }
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body, null, 2) + '\n');
}
