import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { closeReason, connectClient, randomPayload, readToEnd, sha256, startBackend, waitFor, type TestBackend } from '../fakes/proxy-backends';
import { metricValue, startProxy, type ProxyUnderTest } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

const MB = 1024 * 1024;

/** Resolves with what the backend read (to EOF) once it has answered with `answer` and ended. */
function readThenAnswer(answer: Buffer): { onConnection: (socket: Socket) => void; received: Promise<Buffer> } {
  let deliver!: (data: Buffer) => void;
  const received = new Promise<Buffer>((resolve) => (deliver = resolve));
  return {
    received,
    onConnection: (socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.once('end', () => {
        const data = Buffer.concat(chunks);
        // Answer only after EOF: the proxy must keep this direction open after the client's FIN.
        socket.end(answer, () => deliver(data));
      });
    },
  };
}

async function closeAll(proxy: ProxyUnderTest, backend: TestBackend): Promise<void> {
  await proxy.listener.close(1_000);
  await backend.close();
}

describe('half-close (T06)', () => {
  it('client sends 1 MB and shuts down writing; backend reads to EOF, answers 1 MB, ends', { timeout: TEST_TIMEOUT_MS }, async () => {
    const request = randomPayload(MB);
    const answer = randomPayload(MB);
    const script = readThenAnswer(answer);
    const backend = await startBackend(script.onConnection);
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const client = await connectClient(proxy.port);
      const reply = readToEnd(client);
      const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      client.end(request);

      const backendGot = await script.received;
      const clientGot = await reply;
      await clientClosed;
      await proxy.listener.close(1_000);
      const session = proxy.ended[0]!;
      const bytesOut = await metricValue(proxy.metrics.backendBytes, { direction: 'out' });
      const bytesIn = await metricValue(proxy.metrics.backendBytes, { direction: 'in' });
      console.log(
        `T06 client->backend ${backendGot.length} B, backend->client ${clientGot.length} B; ` +
          `session counters out ${session.bytesFromClient} in ${session.bytesFromUpstream}; metrics out ${bytesOut} in ${bytesIn}; outcome ${session.outcome}`,
      );
      assert.equal(sha256(backendGot), sha256(request), 'request corrupted or truncated');
      assert.equal(sha256(clientGot), sha256(answer), 'answer corrupted or truncated');
      assert.equal(session.outcome, 'completed');
      assert.equal(session.bytesFromClient, MB);
      assert.equal(session.bytesFromUpstream, MB);
      assert.equal(bytesOut, MB);
      assert.equal(bytesIn, MB);
      assert.equal(proxy.listener.stats().active, 0);
      assert.equal(proxy.load.counters(backend.endpoint.key).active, 0);
    } finally {
      await closeAll(proxy, backend);
    }
  });

  it('backend sends 1 MB and ends first; client keeps sending 1 MB after EOF, then ends', { timeout: TEST_TIMEOUT_MS }, async () => {
    const fromBackend = randomPayload(MB);
    const fromClient = randomPayload(MB);
    let backendGot!: Promise<Buffer>;
    const backend = await startBackend((socket) => {
      backendGot = readToEnd(socket);
      socket.end(fromBackend);
    });
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const client = await connectClient(proxy.port);
      const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      const clientGot = await readToEnd(client);
      // Our side of the client connection is still writable after the backend's FIN was relayed.
      assert.equal(client.writable, true);
      client.end(fromClient);
      assert.equal(sha256(clientGot), sha256(fromBackend));
      assert.equal(sha256(await backendGot), sha256(fromClient));
      await clientClosed;
      await proxy.listener.close(1_000);
      const session = proxy.ended[0]!;
      assert.equal(session.outcome, 'completed');
      assert.equal(session.bytesFromClient, MB);
      assert.equal(session.bytesFromUpstream, MB);
    } finally {
      await closeAll(proxy, backend);
    }
  });

  it('a backend reset reaches the client as a reset, not as a clean EOF', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startBackend((socket) => {
      socket.write('partial answer');
      setTimeout(() => socket.resetAndDestroy(), 20);
    });
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const client = await connectClient(proxy.port);
      client.write('request');
      assert.equal(await closeReason(client), 'ECONNRESET');
      await proxy.listener.close(1_000);
      assert.equal(proxy.ended[0]!.outcome, 'upstreamReset');
      assert.equal(proxy.listener.stats().errors, 1);
    } finally {
      await closeAll(proxy, backend);
    }
  });

  it('a client reset reaches the backend as a reset', { timeout: TEST_TIMEOUT_MS }, async () => {
    let backendEnd!: Promise<string>;
    const backend = await startBackend((socket) => {
      backendEnd = closeReason(socket);
    });
    const proxy = await startProxy({ healthy: [backend.endpoint] });
    try {
      const client = await connectClient(proxy.port);
      client.write('request');
      await new Promise((resolve) => setTimeout(resolve, 50));
      client.resetAndDestroy();
      assert.equal(await backendEnd, 'ECONNRESET');
      await proxy.listener.close(1_000);
      assert.equal(proxy.ended[0]!.outcome, 'clientReset');
    } finally {
      await closeAll(proxy, backend);
    }
  });

  // Regression: libuv refuses uv_tcp_close_reset while a shutdown is pending (EINVAL), and Node 20 has
  // already let go of the handle by then: the fd leaked, 'close' never came, the session never ended,
  // and epoll spun at 100% CPU on the orphaned socket. It struck when a session was aborted in the very
  // turn of the event loop in which a FIN had been relayed (listener.destroy() during a half-close).
  it('an abort in the same turn as a relayed FIN closes the leg instead of leaking it', { timeout: TEST_TIMEOUT_MS }, async () => {
    let backendEnd!: Promise<string>;
    const backend = await startBackend((socket) => {
      socket.resume();
      backendEnd = closeReason(socket);
    });
    const proxy = await startProxy({ healthy: [backend.endpoint], closeOnBackendDown: true });
    try {
      const client = await connectClient(proxy.port);
      await waitFor(() => backendEnd !== undefined, 2_000, 'the upstream');
      const session = proxy.listener.sessions().next().value!;
      // Reaching into the session to act right after its own 'end' handler has called upstream.end().
      const clientLeg = (session as unknown as { client: Socket }).client;
      clientLeg.once('end', () => proxy.setHealthy([], [backend.endpoint]));
      const clientEnd = closeReason(client);
      client.end();
      assert.equal(await clientEnd, 'ECONNRESET');
      assert.equal(await backendEnd, 'end');
      await waitFor(() => proxy.listener.stats().active === 0, 2_000, 'the aborted session to end');
      assert.equal(proxy.ended[0]!.outcome, 'backendDown');
      // The kernel may keep the orphaned socket in FIN-WAIT-2 for a while, but no fd of ours holds it.
      const upstreamPort = [...backend.sockets][0]!.remotePort;
      const owned = execFileSync('ss', ['-tanpH'], { encoding: 'utf8' })
        .split('\n')
        .filter((line) => line.trim().split(/\s+/)[3] === `127.0.0.1:${upstreamPort}` && line.includes(`pid=${process.pid},`));
      assert.deepEqual(owned, [], 'vipd still holds the upstream socket');
    } finally {
      await closeAll(proxy, backend);
    }
  });
});
