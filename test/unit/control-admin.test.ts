import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';
import { AdminServer } from '../../src/control/admin-server';
import type { AdminActions, DaemonStatus } from '../../src/control/control';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';

function call(port: number, method: string, path: string): Promise<{ status: number; allow?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers.allow ? { allow: res.headers.allow } : {}) }));
    });
    req.on('error', reject);
    req.end();
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
