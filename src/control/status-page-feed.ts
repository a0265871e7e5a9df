import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { DaemonStatus } from './control';
import type { EventJournal } from './event-journal';
import { renderStatusFragment, renderStatusPage } from './status-page';

/** Live page clients at once, over both transports. Well inside the TCP share of the admin cap (see admin-server.ts). */
export const SSE_MAX_CLIENTS = 32;
/**
 * Of those, at most this many over the unix socket: the socket's reserved connections are for
 * operators' mutations (a drain), so page viewers may hold only half of them.
 */
export const SSE_MAX_SOCKET_CLIENTS = 8;
/** A client that has not read this much of what was sent is dropped: a stalled reader costs no more memory. */
const SSE_MAX_BUFFERED_BYTES = 256 * 1024;

export interface StatusFeedOptions {
  readonly status: () => DaemonStatus;
  readonly journal: EventJournal;
  readonly logger: Logger;
  /** How often status is diffed into the journal and, with clients, re-rendered. Default 250 ms. */
  readonly tickMs?: number;
  /** A comment line this often keeps idle proxies and the admin idle timeout from cutting a quiet stream. Default 5 s. */
  readonly keepAliveMs?: number;
  readonly maxClients?: number;
  readonly maxSocketClients?: number;
}

interface Client {
  readonly res: ServerResponse;
  readonly transport: 'tcp' | 'socket';
}

/**
 * Feeds the status page: keeps the event journal current (a status diff each tick, with or without
 * viewers) and streams the rendered fragment to `/events` clients whenever it changes. Clients are
 * capped (503 at once past the cap) and a client that stops reading is dropped, so a thousand idle
 * viewers cost the daemon a refused connection each and nothing more.
 */
export class StatusFeed {
  private readonly clients = new Set<Client>();
  private timer: NodeJS.Timeout | undefined;
  private lastFragment = '';
  private lastSentAt = 0;
  private closed = false;

  constructor(private readonly options: StatusFeedOptions) {}

  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => this.tick(), this.options.tickMs ?? 250);
    this.timer.unref();
  }

  /** GET / : the whole page, rendered now. */
  servePage(res: ServerResponse): void {
    this.observe();
    const html = renderStatusPage(this.options.status(), this.options.journal.list());
    res
      .writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': Buffer.byteLength(html),
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        // Only its own inline style and script, and its own origin for the feed; nothing may frame it.
        'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        'x-frame-options': 'DENY',
      })
      .end(html);
  }

  /** GET /events : a server-sent event stream of `status` events (the page fragment), or 503 past the cap. */
  serveEvents(req: IncomingMessage, res: ServerResponse, transport: 'tcp' | 'socket'): 'streaming' | 'refused' {
    const onSocket = [...this.clients].filter((c) => c.transport === 'socket').length;
    const max = this.options.maxClients ?? SSE_MAX_CLIENTS;
    const maxSocket = this.options.maxSocketClients ?? SSE_MAX_SOCKET_CLIENTS;
    if (this.closed || this.clients.size >= max || (transport === 'socket' && onSocket >= maxSocket)) {
      const body = JSON.stringify({ error: `too many live page clients (cap ${max}, ${maxSocket} of them on the socket); reload later or use GET /status` }) + '\n';
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'retry-after': '5', connection: 'close' }).end(body);
      return 'refused';
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', connection: 'keep-alive' });
    // The stream has no request timeout: it ends when the client goes, the daemon stops, or the client stalls.
    req.socket.setTimeout(0);
    const client: Client = { res, transport };
    this.clients.add(client);
    res.once('close', () => this.clients.delete(client));
    this.observe();
    this.lastFragment = this.render();
    this.send(client, 'retry: 2000\n' + eventText(this.lastFragment));
    return 'streaming';
  }

  clientCount(): number {
    return this.clients.size;
  }

  /** Ends every stream and stops the tick. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const c of this.clients) c.res.end();
    this.clients.clear();
  }

  private tick(): void {
    try {
      this.observe();
      if (this.clients.size === 0) return;
      const fragment = this.render();
      const now = Date.now();
      if (fragment !== this.lastFragment) {
        this.lastFragment = fragment;
        this.broadcast(eventText(fragment));
      } else if (now - this.lastSentAt >= (this.options.keepAliveMs ?? 5000)) {
        this.broadcast(': keep-alive\n\n');
      }
    } catch (err) {
      this.options.logger.error({ event: 'statusFeed', err: errorMessage(err) }, 'status page feed failed; retrying on the next tick');
    }
  }

  private observe(): void {
    this.options.journal.observe(this.options.status());
  }

  private render(): string {
    // Whole seconds: the fragment (its clock and "ago" columns) changes at most once a second.
    return renderStatusFragment(this.options.status(), this.options.journal.list(), new Date(Math.floor(Date.now() / 1000) * 1000));
  }

  private broadcast(text: string): void {
    this.lastSentAt = Date.now();
    for (const c of this.clients) this.send(c, text);
  }

  private send(client: Client, text: string): void {
    if (client.res.writableLength > SSE_MAX_BUFFERED_BYTES) {
      this.clients.delete(client);
      client.res.destroy();
      return;
    }
    client.res.write(text);
  }
}

/** One SSE `status` event; every line of the payload is its own `data:` line. */
function eventText(payload: string): string {
  return `event: status\n${payload
    .split('\n')
    .map((line) => `data: ${line}`)
    .join('\n')}\n\n`;
}
