import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { HttpProbe, type HttpProbeOptions } from '../../src/health/probe-http';
import { endpoint, type Endpoint } from '../../src/net/endpoint';

async function listen(server: Server): Promise<Endpoint> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return endpoint('127.0.0.1', (server.address() as AddressInfo).port);
}

function probe(options: Partial<HttpProbeOptions> = {}): HttpProbe {
  return new HttpProbe({ tls: false, path: '/healthz', expectStatus: [200], insecureSkipVerify: false, ...options });
}

/** An HTTP backend that records what it was asked and which connections it saw close. */
function recordingBackend(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const requests: Array<{ url: string; host: string | undefined; connection: string | undefined }> = [];
  const sockets: Socket[] = [];
  const server = createHttpServer((req, res) => {
    requests.push({ url: req.url ?? '', host: req.headers.host, connection: req.headers.connection });
    handler(req, res);
  });
  server.on('connection', (s: Socket) => sockets.push(s));
  return { server, requests, sockets, openSockets: () => sockets.filter((s) => !s.destroyed).length };
}

async function waitFor(condition: () => boolean, ms = 1000): Promise<boolean> {
  const until = performance.now() + ms;
  while (!condition() && performance.now() < until) await delay(5);
  return condition();
}

describe('HttpProbe against loopback', () => {
  const backend = recordingBackend((req, res) => {
    if (req.url === '/unavailable') {
      res.writeHead(503).end('not ready');
    } else if (req.url === '/empty') {
      res.writeHead(204).end();
    } else if (req.url === '/hang') {
      // never answers
    } else if (req.url === '/slow-body') {
      res.writeHead(200);
      res.write('partial');
    } else if (req.url === '/huge') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    } else {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    }
  });
  let target: Endpoint;
  before(async () => {
    target = await listen(backend.server);
  });
  after(() => {
    backend.server.closeAllConnections();
    backend.server.close();
  });

  it('passes on 200 and reports "200"', async () => {
    const result = await probe().check(target, 1000);
    console.log(`http probe 200: ${result.durationMs}ms`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: '200' });
  });

  it('fails on 503 with "status 503"', async () => {
    const result = await probe({ path: '/unavailable' }).check(target, 1000);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'status 503' });
  });

  it('sends the configured path and Host header, and asks the server to close', async () => {
    backend.requests.length = 0;
    await probe({ path: '/readyz?verbose', host: 'kubernetes.default.svc:6443' }).check(target, 1000);
    await probe().check(target, 1000);
    assert.deepEqual(backend.requests, [
      { url: '/readyz?verbose', host: 'kubernetes.default.svc:6443', connection: 'close' },
      { url: '/healthz', host: `127.0.0.1:${target.port}`, connection: 'close' },
    ]);
  });

  it('passes only on the expected statuses', async () => {
    assert.equal((await probe({ path: '/empty', expectStatus: [200, 204] }).check(target, 1000)).ok, true);
    const strict = await probe({ expectStatus: [204] }).check(target, 1000);
    assert.deepEqual({ ok: strict.ok, detail: strict.detail }, { ok: false, detail: 'status 200' });
    assert.equal((await probe({ path: '/empty', expectStatus: [] }).check(target, 1000)).ok, false, 'an empty list means [200]');
  });

  it('opens a new connection for every probe and leaves none open', async () => {
    const before = backend.sockets.length;
    for (let i = 0; i < 3; i++) assert.equal((await probe().check(target, 1000)).ok, true);
    assert.equal(backend.sockets.length - before, 3, 'no connection reuse');
    assert.ok(await waitFor(() => backend.openSockets() === 0), 'every probe connection is closed');
  });

  it('times out a server that never answers within timeout + 50 ms', async () => {
    const startedAt = performance.now();
    const result = await probe({ path: '/hang' }).check(target, 150);
    const elapsed = performance.now() - startedAt;
    console.log(`http probe against a silent server: ${result.detail} after ${elapsed.toFixed(1)}ms (timeout 150ms)`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'timeout after 150ms (headers)' });
    assert.ok(elapsed >= 149 && elapsed <= 200, `elapsed ${elapsed}`);
    assert.ok(await waitFor(() => backend.openSockets() === 0), 'the hung connection is closed');
  });

  it('judges on the status when headers arrive in time, even if the body never ends', async () => {
    const result = await probe({ path: '/slow-body' }).check(target, 150);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: '200' });
    assert.ok(await waitFor(() => backend.openSockets() === 0));
  });

  it('stops reading an endless body at the cap', async () => {
    const result = await probe({ path: '/huge' }).check(target, 2000);
    console.log(`http probe against an endless body: ${result.detail} in ${result.durationMs}ms`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: '200' });
    assert.ok(result.durationMs < 500);
    assert.ok(await waitFor(() => backend.openSockets() === 0));
  });

  it('fails with "connect ECONNREFUSED" on a closed port', async () => {
    const closed = createTcpServer();
    const dead = await listen(closed);
    closed.close();
    await once(closed, 'close');
    const result = await probe().check(dead, 1000);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'connect ECONNREFUSED' });
  });
});

describe('HttpProbe against broken servers', () => {
  async function rawServer(onConnection: (socket: Socket) => void): Promise<{ target: Endpoint; close: () => void }> {
    const sockets: Socket[] = [];
    const server = createTcpServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
      onConnection(socket);
    });
    const target = await listen(server);
    return {
      target,
      close: () => {
        for (const s of sockets) s.destroy();
        server.close();
      },
    };
  }

  it('fails cleanly on a reply that is not HTTP', async () => {
    const server = await rawServer((socket) => socket.once('data', () => socket.end('HELLO THERE\r\n\r\n')));
    const result = await probe().check(server.target, 1000);
    server.close();
    console.log(`http probe against garbage: ${result.detail}`);
    assert.equal(result.ok, false);
    assert.match(result.detail, /^headers HPE_[A-Z_]+$/);
  });

  it('fails with "headers ECONNRESET" when the server hangs up without answering', async () => {
    const server = await rawServer((socket) => socket.once('data', () => socket.end()));
    const result = await probe().check(server.target, 1000);
    server.close();
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'headers ECONNRESET' });
  });

  it('fails on headers larger than the parser accepts', async () => {
    const server = await rawServer((socket) =>
      socket.once('data', () => socket.end(`HTTP/1.1 200 OK\r\nx-junk: ${'a'.repeat(64 * 1024)}\r\n\r\n`)),
    );
    const result = await probe().check(server.target, 1000);
    server.close();
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'headers HPE_HEADER_OVERFLOW' });
  });
});
