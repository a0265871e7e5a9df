import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';
import { AdminServer } from '../../src/control/admin-server';
import { AdminInputError, type AdminActions, type DaemonStatus } from '../../src/control/control';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';

function call(port: number, method: string, path: string, body?: string): Promise<{ status: number; allow?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: body !== undefined ? { 'content-type': 'application/json' } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers.allow ? { allow: res.headers.allow } : {}) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const status: DaemonStatus = { node: 'lb1', version: 't', drained: false, shuttingDown: false, vips: [], pools: [], peers: [] };

test('admin API: reads are GET, mutations POST only, wrong method 405, unknown 404, all counted', async () => {
  const calls: string[] = [];
  const metrics = createMetrics();
  const actions: AdminActions = {
    status: () => status,
    drain: async () => void calls.push('drain'),
    undrain: async () => void calls.push('undrain'),
    drainBackend: async (pool, backend, drained) => {
      if (pool !== 'etcd') throw new AdminInputError(404, `no pool "${pool}"`);
      calls.push(`${drained ? 'drain' : 'undrain'} ${pool} ${backend}`);
    },
    metricsText: async () => ({ contentType: 'text/plain', body: 'vipd_x 1\n' }),
  };
  const server = new AdminServer(endpoint('127.0.0.1', 0), actions, silentLogger(), metrics);
  await server.start();
  const port = server.port();
  try {
    assert.deepEqual(JSON.parse((await call(port, 'GET', '/status')).body), status);
    assert.equal((await call(port, 'GET', '/metrics')).body, 'vipd_x 1\n');

    const getDrain = await call(port, 'GET', '/drain');
    assert.equal(getDrain.status, 405);
    assert.equal(getDrain.allow, 'POST');
    assert.deepEqual(calls, [], 'a GET never drains');
    assert.equal((await call(port, 'POST', '/status')).status, 405);
    assert.equal((await call(port, 'GET', '/nope')).status, 404);

    assert.equal((await call(port, 'POST', '/drain')).status, 200);
    assert.equal((await call(port, 'POST', '/undrain')).status, 200);
    assert.deepEqual(calls, ['drain', 'undrain']);

    const ok = await call(port, 'POST', '/backends/drain', JSON.stringify({ pool: 'etcd', backend: '198.18.21.2:2379' }));
    assert.equal(ok.status, 200, ok.body);
    assert.equal((await call(port, 'POST', '/backends/undrain', JSON.stringify({ pool: 'etcd', backend: '198.18.21.2:2379' }))).status, 200);
    const refused: Array<[string, number, RegExp]> = [
      ['{not json', 400, /not JSON/],
      ['[1,2]', 400, /JSON object/],
      [JSON.stringify({ pool: 'etcd' }), 400, /"backend".*required/],
      [JSON.stringify({ backend: '198.18.21.2:2379' }), 400, /"pool".*required/],
      [JSON.stringify({ pool: 'etcd', backend: 'x', force: true }), 400, /unknown field\(s\) force/],
      [JSON.stringify({ pool: 'nope', backend: '198.18.21.2:2379' }), 404, /no pool "nope"/],
      ['x'.repeat(20_000), 400, /body over/],
    ];
    for (const [body, code, message] of refused) {
      const res = await call(port, 'POST', '/backends/drain', body).catch((err: Error) => ({ status: 400, body: `body over (connection closed: ${err.message})` }));
      assert.equal(res.status, code, `${body.slice(0, 40)} -> ${res.status} ${res.body}`);
      const error = res.body.startsWith('{') ? (JSON.parse(res.body) as { error: string }).error : res.body;
      assert.match(error, message);
    }
    assert.deepEqual(calls.slice(2), ['drain etcd 198.18.21.2:2379', 'undrain etcd 198.18.21.2:2379'], 'refused requests changed nothing');

    const text = await metrics.registry.metrics();
    assert.match(text, /vipd_admin_requests_total\{route="\/drain",code="405"\} 1/);
    assert.match(text, /vipd_admin_requests_total\{route="\/drain",code="200"\} 1/);
  } finally {
    await server.close();
  }
});

test('admin API: a failing action answers 500 with the error, and the server lives on', async () => {
  const actions: AdminActions = {
    status: () => status,
    drain: async () => {
      throw new Error('speaker unreachable');
    },
    undrain: async () => {},
    drainBackend: async () => {},
    metricsText: async () => ({ contentType: 'text/plain', body: '' }),
  };
  const server = new AdminServer(endpoint('127.0.0.1', 0), actions, silentLogger(), createMetrics());
  await server.start();
  try {
    const res = await call(server.port(), 'POST', '/drain');
    assert.equal(res.status, 500);
    assert.match(res.body, /speaker unreachable/);
    assert.equal((await call(server.port(), 'GET', '/status')).status, 200);
  } finally {
    await server.close();
  }
});
