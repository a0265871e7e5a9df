import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import type { ProxySession } from '../../src/proxy/session';
import { seededRandom, startEchoBackend, waitFor } from '../fakes/proxy-backends';
import { metricValue, startProxy } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

/** Override with VIPD_CHURN_SEED to replay a failing run. */
const SEED = Number(process.env.VIPD_CHURN_SEED ?? 0x5eed_0011);
const CLIENTS = 50;
const STEPS = 500;

type Action = 'open' | 'write' | 'halfClose' | 'close' | 'reset';

/** One client slot: what it sent, what came back, how it ended. */
interface ChurnClient {
  readonly socket: Socket;
  sent: number;
  received: number;
  halfClosed: boolean;
  /** Clean EOF from the proxy after our own FIN: the echo must then be complete. */
  gracefulEnd: boolean;
  aborted: boolean;
  closed: boolean;
  localPort?: number;
}

/**
 * plain: dial at accept, no caps. gated: every state a client can pass through before relaying is on
 * the path: waiting for its first byte, and, with 2 x 10 slots for 50 clients, queued for a slot.
 */
const VARIANTS = [
  { name: 'plain', firstByteMs: 0, maxConnections: undefined },
  { name: 'gated', firstByteMs: 5_000, maxConnections: 10 },
] as const;

describe('random churn (T11)', () => {
  for (const variant of VARIANTS) {
    it(`${variant.name}, seed ${SEED.toString(16)}: ${CLIENTS} clients, ${STEPS} steps of open/write/half-close/close/reset`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const random = seededRandom(SEED);
      const backends = [await startEchoBackend(), await startEchoBackend()];
      const proxy = await startProxy({
        healthy: backends.map((b) => b.endpoint),
        balance: 'least-conn',
        backends: backends.map((b) => ({ endpoint: b.endpoint, weight: 1, ...(variant.maxConnections === undefined ? {} : { maxConnections: variant.maxConnections }) })),
        timeouts: { firstByteMs: variant.firstByteMs },
        queue: { size: 100, timeoutMs: 10_000 },
      });
      let maxQueued = 0;
      const queueSampler = setInterval(() => (maxQueued = Math.max(maxQueued, proxy.load.queued())), 1);
      const slots: Array<ChurnClient | undefined> = new Array(CLIENTS).fill(undefined);
      const everyClient: ChurnClient[] = [];
      const actions: Record<Action, number> = { open: 0, write: 0, halfClose: 0, close: 0, reset: 0 };
      const clientErrors = new Map<string, number>();

      const open = (): ChurnClient => {
        const socket = connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
        const client: ChurnClient = { socket, sent: 0, received: 0, halfClosed: false, gracefulEnd: false, aborted: false, closed: false };
        socket.once('connect', () => (client.localPort = socket.localPort));
        socket.on('data', (chunk: Buffer) => (client.received += chunk.length));
        socket.on('end', () => {
          if (client.halfClosed) client.gracefulEnd = true;
          socket.end();
        });
        socket.on('error', (err: NodeJS.ErrnoException) => {
          const code = err.code ?? err.message;
          clientErrors.set(code, (clientErrors.get(code) ?? 0) + 1);
        });
        socket.on('close', () => (client.closed = true));
        everyClient.push(client);
        return client;
      };

      try {
        for (let step = 0; step < STEPS; step++) {
          const index = Math.floor(random() * CLIENTS);
          const client = slots[index];
          let action: Action;
          if (client === undefined || client.closed) action = 'open';
          else if (client.halfClosed) action = random() < 0.5 ? 'close' : 'reset';
          else {
            const r = random();
            action = r < 0.55 ? 'write' : r < 0.75 ? 'halfClose' : r < 0.9 ? 'close' : 'reset';
          }
          actions[action]++;
          switch (action) {
            case 'open':
              slots[index] = open();
              break;
            case 'write': {
              const size = 1 + Math.floor(random() * 64 * 1024);
              client!.socket.write(Buffer.alloc(size, step & 0xff));
              client!.sent += size;
              break;
            }
            case 'halfClose':
              client!.halfClosed = true;
              client!.socket.end();
              break;
            case 'close':
              // destroy() sends a FIN, or an RST if the kernel still holds unread bytes.
              client!.aborted = true;
              client!.socket.destroy();
              break;
            case 'reset':
              client!.aborted = true;
              if (client!.socket.connecting) client!.socket.destroy();
              else client!.socket.resetAndDestroy();
              break;
          }
          // Let I/O interleave with the steps, sometimes more than one loop turn.
          await new Promise((resolve) => (random() < 0.2 ? setTimeout(resolve, 1) : setImmediate(resolve)));
        }

        // Every survivor finishes politely: half-close, then wait for the echo's EOF.
        for (const client of slots) {
          if (client !== undefined && !client.closed && !client.halfClosed) {
            client.halfClosed = true;
            client.socket.end();
          }
        }
        await waitFor(() => everyClient.every((c) => c.closed), 10_000, 'every client to close');
        const drainMs = await waitFor(() => proxy.listener.stats().active === 0, 2_000, 'active sessions to reach 0');

        const stats = proxy.listener.stats();
        const ended = proxy.ended;
        const outcomes = new Map<string, number>();
        for (const session of ended) outcomes.set(session.outcome!, (outcomes.get(session.outcome!) ?? 0) + 1);
        clearInterval(queueSampler);
        console.log(
          `T11 ${variant.name} seed ${SEED.toString(16)}: actions ${JSON.stringify(actions)}; sessions ${ended.length}; most queued at once ${maxQueued}; ` +
            `outcomes ${JSON.stringify(Object.fromEntries(outcomes))}; client errors ${JSON.stringify(Object.fromEntries(clientErrors))}; ` +
            `active 0 ${drainMs.toFixed(0)} ms after the last client closed`,
        );

        // No leak: nothing open in the listener, on the backends, or in the load accounting.
        assert.equal(stats.active, 0);
        assert.equal(stats.accepted, ended.length);
        assert.equal(await metricValue(proxy.metrics.sessionsActive, {}), 0);
        for (const backend of backends) {
          assert.equal(proxy.load.counters(backend.endpoint.key).active, 0, `load slot leaked on ${backend.endpoint.key}`);
          await waitFor(() => backend.sockets.size === 0, 2_000, `backend ${backend.endpoint.key} sockets to close`);
        }
        for (const refusal of ['noHealthyBackend', 'connectFailed', 'backendsFull', 'queueFull', 'queueTimeout', 'firstByteTimeout']) {
          assert.equal(outcomes.get(refusal) ?? 0, 0, refusal);
        }
        assert.equal(proxy.load.queued(), 0);
        if (variant.maxConnections !== undefined) assert.ok(maxQueued > 0, 'nobody ever queued: the gated run proved nothing about the queue');

        // Byte counters: what vipd read from clients is what it relayed; the echo of every client that
        // ended gracefully came back in full, through a session whose counters say the same.
        const byPort = new Map<number, ProxySession>();
        for (const session of ended) byPort.set(Number(session.clientAddress.split(':').pop()), session);
        let graceful = 0;
        for (const client of everyClient) {
          const session = client.localPort === undefined ? undefined : byPort.get(client.localPort);
          if (session === undefined) continue;
          assert.ok(session.bytesFromClient <= client.sent, 'vipd counted more than the client sent');
          assert.ok(client.received <= session.bytesFromUpstream, 'the client got bytes vipd did not count');
          if (client.gracefulEnd && !client.aborted) {
            graceful++;
            assert.equal(session.outcome, 'completed');
            assert.equal(session.bytesFromClient, client.sent);
            assert.equal(session.bytesFromUpstream, client.sent);
            assert.equal(client.received, client.sent);
          }
        }
        assert.ok(graceful >= 20, `only ${graceful} graceful sessions: the run proved little`);

        const fromClients = ended.reduce((sum, s) => sum + s.bytesFromClient, 0);
        const fromUpstreams = ended.reduce((sum, s) => sum + s.bytesFromUpstream, 0);
        const backendReceived = backends.reduce((sum, b) => sum + b.bytesReceived, 0);
        await proxy.listener.close(0);
        assert.equal(await metricValue(proxy.metrics.backendBytes, { direction: 'out' }), fromClients);
        assert.equal(await metricValue(proxy.metrics.backendBytes, { direction: 'in' }), fromUpstreams);
        assert.ok(backendReceived <= fromClients, 'backends received bytes vipd never read');
        assert.ok(fromUpstreams <= backendReceived, 'vipd relayed more echo than the backends received');
        console.log(
          `T11 ${variant.name} bytes: clients->vipd ${fromClients}, vipd->backends received ${backendReceived}, echo relayed ${fromUpstreams}; graceful sessions ${graceful}`,
        );
      } finally {
        clearInterval(queueSampler);
        for (const client of everyClient) client.socket.destroy();
        proxy.listener.destroy();
        for (const backend of backends) await backend.close();
      }
    });
  }
});
