import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { endpoint } from '../../src/net/endpoint';
import type { ProxySession } from '../../src/proxy/session';
import { FakeClock } from '../fakes/fake-clock';
import { closedPort, closeReason, connectClient, dialAndAwaitEnd, echoOnce, startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

/** Resolves with the first data the socket receives, or 'none' after `ms`. */
function firstDataWithin(socket: Socket, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('none'), ms);
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer);
      resolve(chunk.toString());
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? err.message);
    });
  });
}

async function roundTrip(socket: Socket, text: string): Promise<void> {
  const reply = firstDataWithin(socket, 2_000);
  socket.write(text);
  assert.equal(await reply, text);
}

/** Opens `n` clients, each with a first round trip done, and returns them with their sessions. */
async function openSessions(port: number, sessions: () => IterableIterator<ProxySession>, n: number): Promise<Array<{ socket: Socket; session: ProxySession }>> {
  const opened: Array<{ socket: Socket; session: ProxySession }> = [];
  for (let i = 0; i < n; i++) {
    const socket = await connectClient(port);
    await roundTrip(socket, `open ${i}`);
    const session = [...sessions()].find((s) => Number(s.clientAddress.split(':').pop()) === socket.localPort)!;
    opened.push({ socket, session });
  }
  return opened;
}

describe('passive health: outlier ejection', () => {
  it('consecutive connect failures eject a backend for growing times; nobody notices but the metrics', { timeout: TEST_TIMEOUT_MS }, async () => {
    const clock = new FakeClock();
    const dead = await closedPort();
    const live = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [dead, live.endpoint],
      maxConnectAttempts: 2,
      outlier: { consecutiveConnectFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 4_000 },
      clock,
    });
    try {
      const ejections: number[] = [];
      for (let round = 1; round <= 4; round++) {
        const errorsBefore = proxy.load.counters(dead.key).connectErrors;
        // Round-robin sends every other connection to the dead backend until it is ejected.
        for (let i = 0; i < 12; i++) assert.deepEqual(await echoOnce(proxy.port, Buffer.from(`r${round} c${i}`)), Buffer.from(`r${round} c${i}`));
        const counters = proxy.load.counters(dead.key);
        assert.equal(counters.connectErrors - errorsBefore, 3, 'dialled after its ejection');
        assert.ok(counters.ejectedUntil !== undefined);
        ejections.push(counters.ejectedUntil - clock.wallNow());
        await clock.advance(counters.ejectedUntil - clock.wallNow());
        assert.equal(proxy.load.counters(dead.key).ejectedUntil, undefined);
      }
      console.log(`outlier ejection of a refusing backend, 3 failures each: ${ejections.join(', ')} ms (base 1000, max 4000); client failures 0, served by live ${live.accepted}`);
      assert.deepEqual(ejections, [1_000, 2_000, 4_000, 4_000]);
      assert.equal(await metricValue(proxy.metrics.backendEjections, { backend: dead.key }), 4);
      assert.equal(live.accepted, 48);
      assert.equal(proxy.listener.stats().refused, 0);
    } finally {
      proxy.listener.destroy();
      await live.close();
    }
  });
});

describe('passive health: closeOnBackendDown (T02)', () => {
  for (const closeOnBackendDown of [true, false]) {
    it(`closeOnBackendDown ${closeOnBackendDown}: sessions of a backend marked down are ${closeOnBackendDown ? 'reset at once' : 'left to run'}`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const a = await startEchoBackend();
      const b = await startEchoBackend();
      const proxy = await startProxy({ healthy: [a.endpoint, b.endpoint], closeOnBackendDown });
      try {
        const opened = await openSessions(proxy.port, () => proxy.listener.sessions(), 4);
        const onA = opened.filter((o) => o.session.backend?.key === a.endpoint.key);
        const onB = opened.filter((o) => o.session.backend?.key === b.endpoint.key);
        assert.equal(onA.length, 2);
        const ends = Promise.all(onA.map((o) => closeReason(o.socket).then((how) => ({ how, at: performance.now() }))));
        const markedDownAt = performance.now();
        proxy.setHealthy([b.endpoint], [a.endpoint]);
        if (closeOnBackendDown) {
          const results = await ends;
          const slowest = Math.max(...results.map((r) => r.at - markedDownAt));
          console.log(`closeOnBackendDown: ${results.length} sessions of the backend marked down reset within ${slowest.toFixed(1)} ms`);
          assert.deepEqual(results.map((r) => r.how), ['ECONNRESET', 'ECONNRESET']);
          assert.ok(slowest < 1_000);
          await waitFor(() => proxy.ended.length === 2, 2_000, 'the sessions to end');
          assert.deepEqual(proxy.ended.map((s) => s.outcome), ['backendDown', 'backendDown']);
          assert.equal(await metricValue(proxy.metrics.sessionsClosed, { reason: 'backendDown' }), 2);
        } else {
          for (const o of onA) await roundTrip(o.socket, 'still relayed');
        }
        for (const o of onB) await roundTrip(o.socket, 'untouched');
        const aBefore = a.accepted;
        for (let i = 0; i < 6; i++) await echoOnce(proxy.port, Buffer.from(`new ${i}`));
        assert.equal(a.accepted, aBefore, 'a backend marked down got a new connection');
        for (const o of opened) o.socket.destroy();
      } finally {
        proxy.listener.destroy();
        await a.close();
        await b.close();
      }
    });
  }

  it('a backend that completes the handshake but never answers: once marked down its sessions go, and new ones never wait for it', { timeout: TEST_TIMEOUT_MS }, async () => {
    // Like a SIGSTOPped process: the kernel completes handshakes, nobody ever reads or writes.
    const hungSockets = new Set<Socket>();
    const hungServer = createServer({ pauseOnConnect: true }, (socket) => hungSockets.add(socket));
    await new Promise<void>((resolve) => hungServer.listen(0, '127.0.0.1', resolve));
    const hung = endpoint('127.0.0.1', (hungServer.address() as AddressInfo).port);
    const good = await startEchoBackend();
    const CONNECT_TIMEOUT_MS = 500;
    const proxy = await startProxy({ healthy: [hung, good.endpoint], closeOnBackendDown: true, connectTimeoutMs: CONNECT_TIMEOUT_MS });
    try {
      const clients = await Promise.all(Array.from({ length: 6 }, () => connectClient(proxy.port)));
      const replies = await Promise.all(clients.map((c, i) => {
        const reply = firstDataWithin(c, 300);
        c.write(`request ${i}`);
        return reply;
      }));
      const stuck = clients.filter((_, i) => replies[i] === 'none');
      assert.equal(stuck.length, 3, 'round-robin should have sent half of them to the hung backend');
      const stuckEnds = Promise.all(stuck.map((c) => closeReason(c).then(() => performance.now())));
      // Health notices (interval x fall + timeout later, in vipd): the pool hears of it at once.
      const markedDownAt = performance.now();
      proxy.setHealthy([good.endpoint], [hung]);
      const closedWithin = Math.max(...(await stuckEnds)) - markedDownAt;
      const hungAccepted = hungSockets.size;
      const timings: number[] = [];
      for (let i = 0; i < 20; i++) {
        const started = performance.now();
        assert.deepEqual(await echoOnce(proxy.port, Buffer.from(`after ${i}`)), Buffer.from(`after ${i}`));
        timings.push(performance.now() - started);
      }
      const slowest = Math.max(...timings);
      console.log(
        `T02 hung backend: ${stuck.length} sessions waiting on it reset ${closedWithin.toFixed(1)} ms after mark-down; ` +
          `20 new connections served in at most ${slowest.toFixed(1)} ms (connect timeout ${CONNECT_TIMEOUT_MS} ms)`,
      );
      assert.ok(closedWithin < 1_000);
      assert.ok(slowest < CONNECT_TIMEOUT_MS);
      assert.equal(hungSockets.size, hungAccepted, 'a new connection went to the hung backend');
      for (const c of clients) c.destroy();
    } finally {
      proxy.listener.destroy();
      for (const socket of hungSockets) socket.destroy();
      hungServer.close();
      await good.close();
    }
  });
});

describe('operator drain of one backend', () => {
  it('a drained backend gets no new connections, its sessions carry on, and undrain brings it back', { timeout: TEST_TIMEOUT_MS }, async () => {
    const a = await startEchoBackend();
    const b = await startEchoBackend();
    const proxy = await startProxy({ healthy: [a.endpoint, b.endpoint] });
    try {
      const opened = await openSessions(proxy.port, () => proxy.listener.sessions(), 4);
      assert.equal(proxy.load.drainBackend(a.endpoint.key, true), true);
      assert.equal(proxy.load.counters(a.endpoint.key).drained, true);
      assert.equal(await metricValue(proxy.metrics.backendDrained, { backend: a.endpoint.key }), 1);
      const aBefore = a.accepted;
      for (let i = 0; i < 10; i++) await echoOnce(proxy.port, Buffer.from(`drained ${i}`));
      assert.equal(a.accepted, aBefore, 'a drained backend got a new connection');
      for (const o of opened) await roundTrip(o.socket, 'carry on');
      proxy.load.drainBackend(a.endpoint.key, false);
      for (let i = 0; i < 4; i++) await echoOnce(proxy.port, Buffer.from(`undrained ${i}`));
      assert.ok(a.accepted > aBefore, 'undrained backend never picked again');
      for (const o of opened) o.socket.destroy();
    } finally {
      proxy.listener.destroy();
      await a.close();
      await b.close();
    }
  });

  it('draining every backend refuses new clients at once, as no backend is there to take them', { timeout: TEST_TIMEOUT_MS }, async () => {
    const a = await startEchoBackend();
    const proxy = await startProxy({ healthy: [a.endpoint] });
    try {
      proxy.load.drainBackend(a.endpoint.key, true);
      assert.equal(await dialAndAwaitEnd(proxy.port, 'anyone?'), 'ECONNRESET');
      await waitFor(() => proxy.ended.length === 1, 2_000, 'the refusal');
      assert.equal(proxy.ended[0]!.outcome, 'noHealthyBackend');
    } finally {
      proxy.listener.destroy();
      await a.close();
    }
  });
});
