import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { TcpProbe } from '../../src/health/probe-tcp';
import { endpoint } from '../../src/net/endpoint';

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

describe('TcpProbe against loopback', () => {
  it('passes when the port accepts, and resets the connection it opened (RST, as HAProxy does)', async () => {
    const server = createServer();
    let reset = false;
    const closed = new Promise<boolean>((resolve) =>
      server.on('connection', (s) => {
        s.on('error', (err: NodeJS.ErrnoException) => (reset = err.code === 'ECONNRESET'));
        s.on('close', () => resolve(true));
      }),
    );
    const port = await listen(server);
    const result = await new TcpProbe().check(endpoint('127.0.0.1', port), 1000);
    const closedByProbe = await Promise.race([closed, delay(1000, false, { ref: false })]);
    server.close();
    console.log(`tcp probe ok: ${result.durationMs}ms (${result.detail})`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: true, detail: 'connected' });
    assert.ok(result.durationMs < 1000);
    assert.ok(closedByProbe);
    assert.ok(reset, 'the backend saw an RST');
  });

  it('fails with "connect ECONNREFUSED" on a closed port', async () => {
    const server = createServer();
    const port = await listen(server);
    server.close();
    await once(server, 'close');
    const result = await new TcpProbe().check(endpoint('127.0.0.1', port), 1000);
    console.log(`tcp probe refused: ${result.durationMs}ms (${result.detail})`);
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'connect ECONNREFUSED' });
  });

  it('fails with a timeout when the connection is not up by the deadline', async () => {
    const server = createServer();
    const port = await listen(server);
    const pending = new TcpProbe().check(endpoint('127.0.0.1', port), 1);
    // Holding the event loop past the 1 ms deadline makes the deadline deterministic: timers run
    // before the poll phase that would deliver the connect.
    const until = performance.now() + 20;
    while (performance.now() < until);
    const result = await pending;
    server.close();
    assert.deepEqual({ ok: result.ok, detail: result.detail }, { ok: false, detail: 'timeout after 1ms (connect)' });
  });
});
