import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { HttpProbe, type HttpProbeOptions } from '../../src/health/probe-http';
import { makePki } from '../fakes/test-pki';
import { endpoint, type Endpoint } from '../../src/net/endpoint';

async function listen(server: Server | HttpsServer): Promise<Endpoint> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return endpoint('127.0.0.1', (server.address() as AddressInfo).port);
}

function probe(options: Partial<HttpProbeOptions>): HttpProbe {
  return new HttpProbe({ tls: true, path: '/readyz', expectStatus: [200], insecureSkipVerify: false, ...options });
}

describe('HttpProbe over TLS against loopback, with a CA made by openssl', () => {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  let good: HttpsServer;
  let expired: HttpsServer;
  let target: Endpoint;
  let expiredTarget: Endpoint;
  const seenServerNames: Array<string | false | null> = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vipd-health-tls-'));
    pki = makePki(dir);
    good = createHttpsServer(pki.server, (req, res) => {
      seenServerNames.push((req.socket as TLSSocket).servername);
      res.writeHead(200).end('ok');
    });
    expired = createHttpsServer(pki.expired, (_req, res) => res.writeHead(200).end('ok'));
    target = await listen(good);
    expiredTarget = await listen(expired);
  });
  after(() => {
    for (const server of [good, expired]) {
      server.closeAllConnections();
      server.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes with the CA file', async () => {
    const result = await probe({ caFile: pki.caFile }).check(target, 1000);
    console.log(`https probe with caFile: ${result.detail} in ${result.durationMs}ms`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: '200' });
  });

  it('fails without the CA file, naming the TLS error', async () => {
    const result = await probe({}).check(target, 1000);
    console.log(`https probe without caFile: ${result.detail}`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'tls UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  it('passes with insecureSkipVerify and no CA', async () => {
    const result = await probe({ insecureSkipVerify: true }).check(target, 1000);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: '200' });
  });

  it('sends serverName as SNI and verifies the certificate against it', async () => {
    seenServerNames.length = 0;
    assert.equal((await probe({ caFile: pki.caFile, serverName: 'backend.test' }).check(target, 1000)).ok, true);
    assert.deepEqual(seenServerNames, ['backend.test']);
    const wrong = await probe({ caFile: pki.caFile, serverName: 'other.test' }).check(target, 1000);
    assert.deepEqual({ ok: wrong.ok, detail: wrong.detail }, { ok: false, detail: 'tls ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('takes SNI from a Host header name and sends none for an IP target', async () => {
    seenServerNames.length = 0;
    assert.equal((await probe({ caFile: pki.caFile, host: 'backend.test:6443' }).check(target, 1000)).ok, true);
    assert.equal((await probe({ caFile: pki.caFile }).check(target, 1000)).ok, true);
    assert.deepEqual(seenServerNames, ['backend.test', false]);
  });

  it('fails on an expired certificate with "tls CERT_HAS_EXPIRED"', async () => {
    const result = await probe({ caFile: pki.caFile }).check(expiredTarget, 1000);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'tls CERT_HAS_EXPIRED' });
  });

  it('reads the CA file once, at construction', async () => {
    const copy = join(dir, 'ca-copy.pem');
    writeFileSync(copy, readFileSync(pki.caFile));
    const pinned = probe({ caFile: copy });
    rmSync(copy);
    assert.equal((await pinned.check(target, 1000)).ok, true);
  });

  it('times out a server that accepts but never completes the handshake, in the tls phase', async () => {
    const sockets: Socket[] = [];
    const silent = createTcpServer((socket) => sockets.push(socket));
    const silentTarget = await listen(silent);
    const startedAt = performance.now();
    const result = await probe({ caFile: pki.caFile }).check(silentTarget, 150);
    const elapsed = performance.now() - startedAt;
    for (const s of sockets) s.destroy();
    silent.close();
    console.log(`https probe against a silent TLS peer: ${result.detail} after ${elapsed.toFixed(1)}ms`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'timeout after 150ms (tls)' });
    assert.ok(elapsed <= 200);
  });
});
