import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { GRACEFUL_CLOSE_LIMIT_MS } from '../../src/proxy/session';
import { FakeClock } from '../fakes/fake-clock';
import { closeReason, connectClient, seededRandom, startBackend, startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 30_000;

/** Sends `text` and waits for its echo. */
function roundTrip(client: Socket, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (chunk: Buffer): void => {
      got += chunk.toString();
      if (got.length < text.length) return;
      client.removeListener('data', onData);
      if (got === text) resolve();
      else reject(new Error(`echo ${got}`));
    };
    client.on('data', onData);
    client.write(text);
  });
}

/** Resolves with how the socket ended and when (performance.now()). */
function endOf(socket: Socket): Promise<{ how: string; at: number }> {
  return closeReason(socket).then((how) => ({ how, at: performance.now() }));
}

describe('idle timeout', () => {
  const IDLE_MS = 300;

  it('a session with no bytes either way is closed with a FIN at idleMs', { timeout: TEST_TIMEOUT_MS }, async () => {
    let backendEnd!: Promise<string>;
    const backend = await startBackend((socket) => {
      socket.pipe(socket);
      backendEnd = closeReason(socket);
    });
    const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { idleMs: IDLE_MS } });
    try {
      const client = await connectClient(proxy.port);
      await roundTrip(client, 'last words');
      const quietFrom = performance.now();
      const ended = await endOf(client);
      const after = ended.at - quietFrom;
      console.log(`idle ${IDLE_MS} ms: closed (${ended.how}) ${after.toFixed(0)} ms after the last byte`);
      assert.equal(ended.how, 'end');
      assert.equal(await backendEnd, 'end');
      assert.ok(after >= IDLE_MS - 5 && after < IDLE_MS + 250, `closed after ${after} ms`);
      await waitFor(() => proxy.ended.length === 1, 2_000, 'the session to end');
      assert.equal(proxy.ended[0]!.outcome, 'idleTimeout');
      assert.equal(await metricValue(proxy.metrics.sessionsClosed, { reason: 'idleTimeout' }), 1);
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  for (const direction of ['client->backend', 'backend->client'] as const) {
    it(`bytes in one direction only (${direction}) keep the session alive`, { timeout: TEST_TIMEOUT_MS }, async () => {
      let backendSocket!: Socket;
      const backend = await startBackend((socket) => {
        backendSocket = socket;
        socket.resume();
      });
      const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { idleMs: IDLE_MS } });
      try {
        const client = await connectClient(proxy.port);
        client.resume();
        await waitFor(() => backendSocket !== undefined, 2_000, 'the upstream');
        const ended = endOf(client);
        let closedEarly = false;
        void ended.then(() => (closedEarly = true));
        // A byte every 100 ms for 1.2 s: four idle periods, never a quiet one.
        const sender = direction === 'client->backend' ? client : backendSocket;
        let quietFrom = 0;
        for (let i = 0; i < 12; i++) {
          sender.write('.');
          quietFrom = performance.now();
          await new Promise((resolve) => setTimeout(resolve, 100));
          assert.equal(closedEarly, false, `closed after ${i + 1} keep-alive bytes`);
        }
        const { how, at } = await ended;
        console.log(`idle ${IDLE_MS} ms, ${direction} traffic for 1.2 s: kept, then closed (${how}) ${(at - quietFrom).toFixed(0)} ms after it stopped`);
        assert.equal(how, 'end');
        assert.ok(at - quietFrom >= IDLE_MS - 5, `closed ${at - quietFrom} ms after the last byte`);
      } finally {
        proxy.listener.destroy();
        await backend.close();
      }
    });
  }
});

describe('maximum connection age (fake clock)', () => {
  const AGE_MS = 10_000;
  const JITTER_MS = 5_000;

  /** Advances the fake clock in steps, letting real socket I/O run between them. */
  async function advance(clock: FakeClock, ms: number, step = 250): Promise<void> {
    for (let t = 0; t < ms; t += step) {
      await clock.advance(step);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  it('each session ends within [age, age + jitter] (plus one sweep), gracefully, and the jitter spreads them', { timeout: TEST_TIMEOUT_MS }, async () => {
    const clock = new FakeClock();
    const backend = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [backend.endpoint],
      timeouts: { maxConnectionAgeMs: AGE_MS, maxConnectionAgeJitterMs: JITTER_MS },
      clock,
      random: seededRandom(42),
    });
    try {
      const clients = await Promise.all(Array.from({ length: 20 }, () => connectClient(proxy.port)));
      await Promise.all(clients.map((c, i) => roundTrip(c, `hello ${i}`)));
      const sessions = [...proxy.listener.sessions()];
      const endedAt = new Map<Socket, { how: string; fakeAt: number }>();
      for (const client of clients) {
        void closeReason(client).then((how) => {
          endedAt.set(client, { how, fakeAt: clock.now() });
          // As a real client does on EOF: finish its side too.
          client.end();
        });
      }
      await advance(clock, AGE_MS + JITTER_MS + 2_000);
      await waitFor(() => endedAt.size === clients.length, 2_000, 'every client to see the end');
      const closeAts = sessions.map((s) => s.closeAt - s.startedAt).sort((x, y) => x - y);
      const sweepMs = AGE_MS / 10;
      for (const [index, client] of clients.entries()) {
        const session = sessions[index]!;
        const { how, fakeAt } = endedAt.get(client)!;
        assert.equal(how, 'end', 'max age must end a session with a FIN, not a reset');
        assert.ok(session.closeAt - session.startedAt >= AGE_MS && session.closeAt - session.startedAt <= AGE_MS + JITTER_MS);
        assert.ok(fakeAt >= session.closeAt && fakeAt <= session.closeAt + sweepMs + 250, `ended at ${fakeAt}, due at ${session.closeAt}`);
      }
      console.log(
        `max age ${AGE_MS} ms + jitter ${JITTER_MS} ms, 20 sessions: ages at close ${closeAts[0]!.toFixed(0)}..${closeAts.at(-1)!.toFixed(0)} ms`,
      );
      assert.ok(closeAts.at(-1)! - closeAts[0]! > JITTER_MS / 2, 'the jitter did not spread the closes');
      await waitFor(() => proxy.ended.length === 20, 2_000, 'every session to end');
      assert.ok(proxy.ended.every((s) => s.outcome === 'maxAge'));
      assert.equal(await metricValue(proxy.metrics.sessionsClosed, { reason: 'maxAge' }), 20);
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });

  it('flushes what vipd holds before its FIN, and resets a peer that never finishes', { timeout: TEST_TIMEOUT_MS }, async () => {
    const clock = new FakeClock();
    let backendSocket!: Socket;
    const backend = await startBackend((socket) => {
      backendSocket = socket;
      // Never ends its side: the session must still go away by the graceful-close limit.
      socket.resume();
    });
    const proxy = await startProxy({ healthy: [backend.endpoint], timeouts: { maxConnectionAgeMs: AGE_MS }, clock, highWaterMark: 16 * 1024 });
    try {
      const client = await connectClient(proxy.port);
      client.pause();
      await waitFor(() => backendSocket !== undefined, 2_000, 'the upstream');
      // 4 MB towards a client that is not reading: most of it sits in vipd's and the kernel's buffers.
      const block = Buffer.alloc(4 * 1024 * 1024, 1);
      backendSocket.write(block);
      await waitFor(() => proxy.listener.sessions().next().value!.bufferedBytes() > 0, 2_000, 'vipd to hold bytes');
      const session = proxy.listener.sessions().next().value!;
      await advance(clock, AGE_MS + 1_000);
      assert.equal(session.state, 'closing');
      const relayedAtCut = session.bytesFromUpstream;
      let received = 0;
      client.on('data', (chunk: Buffer) => (received += chunk.length));
      const ended = closeReason(client);
      client.resume();
      assert.equal(await ended, 'end');
      console.log(`max age with a stalled reader: vipd had read ${relayedAtCut} B from the backend at the cut; the client got ${received} B, then a FIN`);
      assert.equal(received, relayedAtCut, 'bytes vipd had taken in were lost');
      // The backend got our FIN but never sends its own: vipd resets its leg at the graceful-close limit.
      assert.equal(backendSocket.readableEnded, true, 'the backend never saw the FIN');
      await advance(clock, GRACEFUL_CLOSE_LIMIT_MS + 1_000);
      // A backend past EOF no longer reads; its next write meets the reset.
      const backendWrite = new Promise<string>((resolve) => backendSocket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message)));
      backendSocket.write('anyone?');
      assert.match(await backendWrite, /^(ECONNRESET|EPIPE)$/);
      await waitFor(() => proxy.ended.length === 1, 2_000, 'the session to end');
      assert.equal(proxy.ended[0]!.outcome, 'maxAge');
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });
});

describe('TCP keepalive', () => {
  it('both legs carry keepalive with pool.tcpKeepaliveMs as idle time', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    const proxy = await startProxy({ healthy: [backend.endpoint], tcpKeepaliveMs: 7_000 });
    try {
      const client = await connectClient(proxy.port);
      await roundTrip(client, 'hi');
      // ss -o shows each socket's timer: timer:(keepalive,6.9sec,0) while keepalive is armed.
      const lines = execFileSync('ss', ['-tnoH', 'state', 'established'], { encoding: 'utf8' }).split('\n');
      const socketLine = (local: string, peer: string): string | undefined =>
        lines.find((line) => {
          const fields = line.trim().split(/\s+/);
          return fields[2] === local && fields[3] === peer;
        });
      const upstreamPort = [...backend.sockets][0]!.remotePort;
      const clientLeg = socketLine(`127.0.0.1:${proxy.port}`, `127.0.0.1:${client.localPort}`);
      const upstreamLeg = socketLine(`127.0.0.1:${upstreamPort}`, `127.0.0.1:${backend.endpoint.port}`);
      console.log(`ss, vipd's client leg: ${clientLeg?.trim()}\nss, vipd's upstream leg: ${upstreamLeg?.trim()}`);
      // iproute2 6.1 prints seconds with an "ms" suffix (6.984ms is 6.984 s); the kernel default would be 7200.
      assert.match(clientLeg ?? '', /timer:\(keepalive,6\.\d+m?s(ec)?,0\)/);
      assert.match(upstreamLeg ?? '', /timer:\(keepalive,6\.\d+m?s(ec)?,0\)/);
      client.destroy();
    } finally {
      proxy.listener.destroy();
      await backend.close();
    }
  });
});
