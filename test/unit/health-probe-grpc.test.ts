import assert from 'node:assert/strict';
import { ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as protobuf from 'protobufjs';
import type { CheckSpec } from '../../src/health/health';
import { createProbe } from '../../src/health/probe';
import { decodeHealthCheckResponse, encodeHealthCheckRequest, GrpcProbe, SERVING_STATUS } from '../../src/health/probe-grpc';
import { endpoint } from '../../src/net/endpoint';
import { GrpcHealthServer, healthProtoFile } from '../fakes/grpc-health-server';
import { makePki } from '../fakes/test-pki';

const base: CheckSpec = { kind: 'grpc', intervalMs: 1000, timeoutMs: 1000, rise: 1, fall: 1, path: '/', expectStatus: [200], insecureSkipVerify: false };

describe('grpc.health.v1 codec against the upstream health.proto', () => {
  const root = protobuf.loadSync(healthProtoFile());
  const Request = root.lookupType('grpc.health.v1.HealthCheckRequest');
  const Response = root.lookupType('grpc.health.v1.HealthCheckResponse');

  it('encodes HealthCheckRequest as protobufjs does, and protobufjs reads it back', () => {
    for (const service of ['etcdserverpb.KV', 'x'.repeat(300)]) {
      assert.deepEqual(encodeHealthCheckRequest({ service }), Buffer.from(Request.encode(Request.create({ service })).finish()), service);
    }
    for (const service of ['', 'etcdserverpb.KV', 'x'.repeat(300)]) {
      assert.equal((Request.toObject(Request.decode(encodeHealthCheckRequest({ service })), { defaults: true }) as { service: string }).service, service);
    }
  });

  it('decodes every ServingStatus, and skips fields it does not know', () => {
    const enumValues = Response.lookupEnum('ServingStatus').values;
    assert.deepEqual(Object.keys(enumValues), [...SERVING_STATUS]);
    for (const [name, number] of Object.entries(enumValues)) {
      assert.equal(decodeHealthCheckResponse(Buffer.from(Response.encode(Response.create({ status: number })).finish())).status, number, name);
    }
    // field 7 (a string) and field 9 (fixed64) before status=2.
    const withUnknown = Buffer.from([0x3a, 0x02, 0x68, 0x69, 0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x02]);
    assert.equal(decodeHealthCheckResponse(withUnknown).status, 2);
    assert.throws(() => decodeHealthCheckResponse(Buffer.from([0x0a, 0x05, 0x01])), /truncated/);
  });

  it('proto-loader agrees on the method path', () => {
    const definition = loadSync(healthProtoFile());
    const service = definition['grpc.health.v1.Health'] as Record<string, { path: string }>;
    assert.equal(service['Check']!.path, '/grpc.health.v1.Health/Check');
  });
});

describe('grpc check against a grpc-js health server on loopback', () => {
  const server = new GrpcHealthServer();
  let probe: GrpcProbe;
  let port: number;

  before(async () => {
    port = await server.listen('127.0.0.1');
    probe = createProbe(base) as GrpcProbe;
  });
  after(() => {
    probe.close();
    server.close();
  });

  it('SERVING passes, NOT_SERVING fails, and back (one channel throughout)', async () => {
    const target = endpoint('127.0.0.1', port);
    const seen: string[] = [];
    for (const status of ['SERVING', 'NOT_SERVING', 'SERVING'] as const) {
      server.statuses.set('', status);
      const result = await probe.check(target, 1000);
      seen.push(`${result.ok}:${result.detail}`);
    }
    console.log(`grpc probe both ways: ${seen.join(', ')}`);
    assert.deepEqual(seen, ['true:SERVING', 'false:NOT_SERVING', 'true:SERVING']);
    assert.equal((probe as unknown as { clients: Map<string, unknown> }).clients.size, 1);
  });

  it('asks about the configured service; an unknown service is NOT_FOUND', async () => {
    const target = endpoint('127.0.0.1', port);
    server.statuses.set('etcdserverpb.KV', 'SERVING');
    const named = createProbe({ ...base, service: 'etcdserverpb.KV' });
    const unknown = createProbe({ ...base, service: 'nope' });
    try {
      const ok = await named.check(target, 1000);
      const missing = await unknown.check(target, 1000);
      assert.deepEqual([ok.ok, ok.detail], [true, 'SERVING (etcdserverpb.KV)']);
      assert.deepEqual([missing.ok, missing.detail], [false, 'grpc NOT_FOUND: unknown service']);
      assert.ok(server.seenServices.includes('etcdserverpb.KV'));
    } finally {
      named.close?.();
      unknown.close?.();
    }
  });

  it('nothing listening fails with UNAVAILABLE within the timeout', async () => {
    const result = await probe.check(endpoint('127.0.0.1', 1), 1000);
    console.log(`grpc probe, nothing listening: ${result.detail} in ${result.durationMs}ms`);
    assert.equal(result.ok, false);
    assert.equal(result.detail, 'grpc UNAVAILABLE: connect ECONNREFUSED');
    assert.ok(result.durationMs < 1000);
  });

  it('after close() probes fail at once and the channels are gone', async () => {
    const closing = createProbe(base) as GrpcProbe;
    await closing.check(endpoint('127.0.0.1', port), 1000);
    closing.close();
    closing.close();
    const result = await closing.check(endpoint('127.0.0.1', port), 1000);
    assert.deepEqual([result.ok, result.detail], [false, 'probe closed']);
  });
});

describe('grpc check over TLS that asks for a client certificate', () => {
  let dir: string;
  let pki: ReturnType<typeof makePki>;
  const server = new GrpcHealthServer();
  let port: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vipd-grpc-tls-'));
    pki = makePki(dir);
    const credentials = ServerCredentials.createSsl(readFileSync(pki.caFile), [{ private_key: pki.server.key, cert_chain: pki.server.cert }], true);
    port = await server.listen('127.0.0.1', 0, credentials);
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes with the client certificate and fails without it', async () => {
    const target = endpoint('127.0.0.1', port);
    const withCert = createProbe({ ...base, tls: true, caFile: pki.caFile, ...pki.client, serverName: 'backend.test' });
    const withoutCert = createProbe({ ...base, tls: true, caFile: pki.caFile, serverName: 'backend.test' });
    try {
      const good = await withCert.check(target, 1000);
      const bad = await withoutCert.check(target, 1000);
      console.log(`grpc over TLS: with client cert "${good.detail}", without "${bad.detail}"`);
      assert.deepEqual([good.ok, good.detail], [true, 'SERVING']);
      assert.equal(bad.ok, false);
      assert.match(bad.detail, /^grpc UNAVAILABLE: tls .*certificate required/);
    } finally {
      withCert.close?.();
      withoutCert.close?.();
    }
  });
});
