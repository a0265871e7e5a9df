import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { CheckSpec } from '../../src/health/health';
import { createProbe } from '../../src/health/probe';
import { endpoint, type Endpoint } from '../../src/net/endpoint';

const base: CheckSpec = { kind: 'http', intervalMs: 1000, timeoutMs: 1000, rise: 1, fall: 1, path: '/status', expectStatus: [200], insecureSkipVerify: false };

describe('http check with expectBody / expectJson', () => {
  let reply = { status: 200, body: '' };
  let server: Server;
  let target: Endpoint;
  before(async () => {
    server = createServer((_req, res) => res.writeHead(reply.status, { 'content-length': Buffer.byteLength(reply.body) }).end(reply.body));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    target = endpoint('127.0.0.1', (server.address() as AddressInfo).port);
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const json = JSON.stringify({ status: { ready: true, members: [{ name: 'a' }, { name: 'b' }] }, version: '3.5.9' });
  const cases: Array<[name: string, spec: Partial<CheckSpec>, reply: { status: number; body: string }, ok: boolean, detail: string]> = [
    ['substring present', { expectBody: 'ready' }, { status: 200, body: 'all ready' }, true, '200, body has "ready"'],
    ['substring absent', { expectBody: 'ready' }, { status: 200, body: 'starting' }, false, 'status 200, body lacks "ready" (8 bytes read)'],
    ['substring, but a status not expected', { expectBody: 'ready' }, { status: 500, body: 'ready' }, false, 'status 500'],
    ['JSON paths hold their values', { expectJson: { 'status.ready': true, 'status.members.1.name': 'b' } }, { status: 200, body: json }, true, '200, status.ready=true status.members.1.name="b"'],
    ['JSON value differs', { expectJson: { 'status.ready': true, version: '3.6.0' } }, { status: 200, body: json }, false, 'status 200, version="3.5.9" (want "3.6.0")'],
    ['JSON path missing', { expectJson: { 'status.members.5.name': 'a' } }, { status: 200, body: json }, false, 'status 200, status.members.5.name missing (want "a")'],
    ['JSON wanted, text came', { expectJson: { ready: true } }, { status: 200, body: 'OK' }, false, 'status 200, reply is not JSON (2 bytes: "OK")'],
    ['JSON reply over 64 KiB', { expectJson: { ready: true } }, { status: 200, body: JSON.stringify({ pad: 'x'.repeat(70_000), ready: true }) }, false, 'status 200, reply larger than 65536 bytes (content-length 70023); not read further'],
  ];
  for (const [name, spec, r, ok, detail] of cases) {
    it(name, async () => {
      reply = r;
      const result = await createProbe({ ...base, ...spec }).check(target, 1000);
      assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok, detail });
    });
  }
});
