import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CheckSpec } from '../../src/health/health';
import { createProbe } from '../../src/health/probe';
import { endpoint, type Endpoint } from '../../src/net/endpoint';
import { makePki } from '../fakes/test-pki';

const base: CheckSpec = { kind: 'etcd', intervalMs: 1000, timeoutMs: 1000, rise: 1, fall: 1, path: '/', expectStatus: [200], insecureSkipVerify: false };

async function listen(server: HttpServer | HttpsServer): Promise<Endpoint> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return endpoint('127.0.0.1', (server.address() as AddressInfo).port);
}

/** What the fake etcd answers on /health; anything else is a 404, as etcd does. */
type Reply = { status: number; body: string | Buffer; chunked?: boolean };

describe('etcd check: GET /health, up iff 200 and "health":"true"', () => {
  let reply: Reply = { status: 200, body: '{"health":"true","reason":""}' };
  const paths: string[] = [];
  let server: HttpServer;
  let target: Endpoint;

  before(async () => {
    server = createHttpServer((req, res) => {
      paths.push(req.url ?? '');
      if (req.url !== '/health') return void res.writeHead(404).end();
      if (reply.chunked) {
        res.writeHead(reply.status, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(16 * 1024, 'x');
        let sent = 0;
        const pump = (): void => {
          while (sent < 1024 * 1024 && res.write(chunk)) sent += chunk.length;
          if (sent < 1024 * 1024) res.once('drain', pump);
          else res.end();
        };
        res.on('close', () => (sent = Infinity));
        pump();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(reply.body) }).end(reply.body);
    });
    target = await listen(server);
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const cases: Array<[name: string, reply: Reply, ok: boolean, detail: RegExp]> = [
    ['200 health=true', { status: 200, body: '{"health":"true","reason":""}' }, true, /^200 health="true"$/],
    ['200 with {"health":"false"} is down', { status: 200, body: '{"health":"false","reason":"RAFT NO LEADER"}' }, false, /^status 200 health="false" \(RAFT NO LEADER\)$/],
    ['503 without quorum (etcd 3.4)', { status: 503, body: '{"health":"false"}' }, false, /^status 503 health="false"$/],
    ['a boolean true is not the string "true"', { status: 200, body: '{"health":true}' }, false, /health=true/],
    ['no health key', { status: 200, body: '{"status":"ok"}' }, false, /no "health" in the reply/],
    ['not JSON', { status: 200, body: '<html>ok</html>' }, false, /reply is not JSON \(15 bytes: "<html>ok<\/html>"\)/],
    ['empty body', { status: 200, body: '' }, false, /reply is not JSON \(0 bytes\)/],
    ['huge with content-length', { status: 200, body: Buffer.alloc(100_000, 'a') }, false, /reply larger than 65536 bytes \(content-length 100000\)/],
    ['huge and chunked (no length)', { status: 200, body: '', chunked: true }, false, /reply larger than 65536 bytes \(over 65536 bytes sent\)/],
  ];
  for (const [name, r, ok, detail] of cases) {
    it(name, async () => {
      reply = r;
      const result = await createProbe(base).check(target, 1000);
      console.log(`etcd probe, ${name}: ok=${result.ok} "${result.detail}" in ${result.durationMs}ms`);
      assert.equal(result.ok, ok);
      assert.match(result.detail, detail);
      assert.equal(paths.at(-1), '/health');
    });
  }

  it('a reply that never finishes its body is a timeout naming the body, not a pass', async () => {
    const slow = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"health":');
    });
    const slowTarget = await listen(slow);
    try {
      const result = await createProbe(base).check(slowTarget, 300);
      assert.equal(result.ok, false);
      assert.match(result.detail, /^timeout after 300ms \(body, 10 bytes read, status 200\)$/);
    } finally {
      slow.closeAllConnections();
      slow.close();
    }
  });
});

describe('etcd check over TLS with --client-cert-auth (a CA and client certificate made by openssl)', () => {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  let server: HttpsServer;
  let target: Endpoint;
  let clientNames: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vipd-etcd-tls-'));
    pki = makePki(dir);
    // As etcd with --client-cert-auth: a client without a certificate from the CA is refused in the handshake.
    server = createHttpsServer({ ...pki.server, ca: readFileSync(pki.caFile), requestCert: true, rejectUnauthorized: true }, (req, res) => {
      clientNames.push(String((req.socket as import('node:tls').TLSSocket).getPeerCertificate().subject?.CN ?? ''));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"health":"true","reason":""}');
    });
    target = await listen(server);
  });
  after(() => {
    server.closeAllConnections();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes with the client certificate, which the server sees', async () => {
    clientNames = [];
    const result = await createProbe({ ...base, tls: true, caFile: pki.caFile, ...pki.client }).check(target, 1000);
    console.log(`etcd over TLS with client cert: ok=${result.ok} "${result.detail}"`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: '200 health="true"' });
    assert.deepEqual(clientNames, ['vipd-healthcheck']);
  });

  it('fails without it, with a detail that says the handshake (not the health) failed', async () => {
    const result = await createProbe({ ...base, tls: true, caFile: pki.caFile }).check(target, 1000);
    console.log(`etcd over TLS without client cert: ok=${result.ok} "${result.detail}"`);
    assert.equal(result.ok, false);
    assert.equal(result.detail, 'tls ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED (the server requires a client certificate: set tls.certFile and tls.keyFile)');
    assert.doesNotMatch(result.detail, /timeout/);
  });

  it('a key that is not the certificate\'s is refused when the probe is built, naming tls.keyFile', () => {
    assert.throws(() => createProbe({ ...base, tls: true, caFile: pki.caFile, certFile: pki.client.certFile, keyFile: pki.strangerKeyFile }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'VIPD_ERR_CONFIG_IO');
      assert.match(err.message, /tls\.keyFile: .*stranger\.key is not the key of .*client\.pem/);
      return true;
    });
  });
});
