import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import type { CheckSpec } from '../../src/health/health';
import { createProbe } from '../../src/health/probe';
import { HttpProbe } from '../../src/health/probe-http';
import { TcpProbe } from '../../src/health/probe-tcp';
import { VipdError } from '../../src/lib/errors';
import { endpoint } from '../../src/net/endpoint';

const base: CheckSpec = {
  kind: 'tcp',
  intervalMs: 1000,
  timeoutMs: 1000,
  rise: 2,
  fall: 2,
  path: '/readyz',
  expectStatus: [200],
  insecureSkipVerify: false,
};

describe('createProbe', () => {
  it('maps each check kind to its probe', () => {
    assert.ok(createProbe(base) instanceof TcpProbe);
    const http = createProbe({ ...base, kind: 'http' });
    assert.ok(http instanceof HttpProbe);
    assert.equal(http.kind, 'http');
    assert.equal(createProbe({ ...base, kind: 'https', insecureSkipVerify: true }).kind, 'https');
  });

  it('passes path, Host and expected statuses through to the http probe', async () => {
    const seen: Array<{ url?: string; host?: string }> = [];
    const server: Server = createServer((req, res) => {
      seen.push({ url: req.url, host: req.headers.host });
      res.writeHead(202).end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const target = endpoint('127.0.0.1', (server.address() as AddressInfo).port);
    const result = await createProbe({ ...base, kind: 'http', path: '/livez', host: 'api.test', expectStatus: [202] }).check(target, 1000);
    server.close();
    assert.equal(result.ok, true);
    assert.deepEqual(seen, [{ url: '/livez', host: 'api.test' }]);
  });

  it('fails at build time, with a stable code, when the https CA file cannot be read', () => {
    assert.throws(
      () => createProbe({ ...base, kind: 'https', caFile: '/nonexistent/vipd-ca.pem' }),
      (err: unknown) => err instanceof VipdError && err.code === 'VIPD_ERR_CONFIG_IO' && /\/nonexistent\/vipd-ca\.pem/.test(err.message),
    );
  });
});
