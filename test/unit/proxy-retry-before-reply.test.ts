import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { endpoint } from '../../src/net/endpoint';
import type { PoolSpec } from '../../src/proxy/proxy';
import { REPLAY_LIMIT_BYTES, ReplayBuffer } from '../../src/proxy/replay';
import { closeReason, echoHeld, startBackend, startEchoBackend, waitFor, type TestBackend } from '../fakes/proxy-backends';
import { metricValue, startProxy, type ProxyUnderTest } from '../fakes/proxy-harness';
import { makePki } from '../fakes/test-pki';

const TEST_TIMEOUT_MS = 20_000;
const CLIENTS = 20;

/** A TLS handshake record header (type 22, TLS 1.0 record version) and `body` bytes of body. */
function handshakeRecord(body: number, fill = 1): Buffer {
  const record = Buffer.alloc(5 + body, fill);
  record.writeUInt8(0x16, 0);
  record.writeUInt16BE(0x0301, 1);
  record.writeUInt16BE(body, 3);
  return record;
}

/** A backend that dies on a connection's first data, before answering: with an RST, or a FIN. */
function startDyingBackend(how: 'reset' | 'close'): Promise<TestBackend> {
  return startBackend((socket) => socket.once('data', () => (how === 'reset' ? socket.resetAndDestroy() : socket.end())));
}

interface Run {
  readonly served: number;
  readonly failures: string[];
  readonly retries: number;
  readonly noReply: number;
}

async function runClients(proxy: ProxyUnderTest, dying: TestBackend, payload: Buffer): Promise<Run> {
  let served = 0;
  const failures: string[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const outcome = await echoHeld(proxy.port, payload);
    if (outcome.served) {
      outcome.socket.destroy();
      served++;
    } else {
      failures.push(outcome.how);
    }
  }
  await waitFor(() => proxy.ended.length === CLIENTS, 2_000, 'every session to end');
  return {
    served,
    failures,
    retries: await metricValue(proxy.metrics.connectRetries, {}),
    noReply: await metricValue(proxy.metrics.backendConnectErrors, { backend: dying.endpoint.key, kind: 'noReply' }),
  };
}

async function withPool(
  dyingHow: 'reset' | 'close',
  options: { retryBeforeReply: PoolSpec['retryBeforeReply'] },
  body: (proxy: ProxyUnderTest, dying: TestBackend, live: TestBackend) => Promise<void>,
): Promise<void> {
  const dying = await startDyingBackend(dyingHow);
  const live = await startEchoBackend();
  const proxy = await startProxy({
    healthy: [dying.endpoint, live.endpoint],
    timeouts: { firstByteMs: 0 },
    retryBeforeReply: options.retryBeforeReply,
  });
  try {
    await body(proxy, dying, live);
  } finally {
    await proxy.listener.close(0);
    await dying.close();
    await live.close();
  }
}

describe('ReplayBuffer (unit)', () => {
  it('tls: keeps handshake records, across chunks too, and refuses anything else', () => {
    const replay = new ReplayBuffer(true);
    const record = handshakeRecord(300);
    assert.ok(replay.add(record.subarray(0, 100)));
    assert.ok(replay.add(record.subarray(100)));
    assert.ok(replay.add(handshakeRecord(10)));
    assert.equal(replay.chunks.length, 3);
    const appData = handshakeRecord(10);
    appData.writeUInt8(0x17, 0);
    assert.equal(new ReplayBuffer(true).add(appData), false, 'application data');
    assert.equal(new ReplayBuffer(true).add(Buffer.from('GET / HTTP/1.1\r\n\r\n')), false, 'plaintext');
    assert.equal(new ReplayBuffer(true).add(Buffer.concat([handshakeRecord(10), appData])), false, 'a handshake, then application data');
    assert.equal(new ReplayBuffer(true).add(Buffer.concat([handshakeRecord(10), Buffer.from([0x16, 0x03])])), false, 'a header split across reads');
  });

  it(`keeps at most ${REPLAY_LIMIT_BYTES} bytes`, () => {
    const replay = new ReplayBuffer(false);
    assert.ok(replay.add(Buffer.alloc(REPLAY_LIMIT_BYTES)));
    assert.equal(replay.add(Buffer.alloc(1)), false);
  });
});

describe('retry before the first reply (T01, a backend that dies with connections in flight)', () => {
  for (const how of ['reset', 'close'] as const) {
    it(`tls: a backend that ${how === 'reset' ? 'resets' : 'closes'} before answering a ClientHello costs the client nothing`, { timeout: TEST_TIMEOUT_MS }, async () => {
      await withPool(how, { retryBeforeReply: 'tls' }, async (proxy, dying, live) => {
        const run = await runClients(proxy, dying, handshakeRecord(512));
        console.log(`tls, backend ${how}s: ${run.served}/${CLIENTS} served; the dying backend took ${dying.accepted}, retries ${run.retries}, noReply ${run.noReply}`);
        assert.deepEqual(run.failures, []);
        assert.ok(dying.accepted > 0, 'the dying backend was never picked: the test proved nothing');
        assert.equal(run.retries, dying.accepted);
        assert.equal(run.noReply, dying.accepted);
        assert.equal(live.accepted, CLIENTS);
        assert.equal(proxy.load.counters(dying.endpoint.key).active, 0);
        assert.deepEqual(proxy.listener.stats(), { accepted: CLIENTS, active: 0, refused: 0, errors: 0 });
      });
    });
  }

  it('tls: plaintext is not replayed; the client sees the reset', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPool('reset', { retryBeforeReply: 'tls' }, async (proxy, dying) => {
      const run = await runClients(proxy, dying, Buffer.from('PUT /v3/kv/put HTTP/1.1\r\n\r\n'));
      assert.ok(dying.accepted > 0);
      assert.equal(run.failures.length, dying.accepted);
      assert.deepEqual(new Set(run.failures), new Set(['ECONNRESET']));
      assert.equal(run.retries, 0);
    });
  });

  it('always: plaintext is replayed too', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPool('reset', { retryBeforeReply: 'always' }, async (proxy, dying) => {
      const run = await runClients(proxy, dying, Buffer.from('PUT /v3/kv/put HTTP/1.1\r\n\r\n'));
      assert.ok(dying.accepted > 0);
      assert.deepEqual(run.failures, []);
      assert.equal(run.retries, dying.accepted);
    });
  });

  it('off: nothing is replayed', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withPool('reset', { retryBeforeReply: 'off' }, async (proxy, dying) => {
      const run = await runClients(proxy, dying, handshakeRecord(512));
      assert.ok(dying.accepted > 0);
      assert.equal(run.failures.length, dying.accepted);
      assert.equal(run.retries, 0);
    });
  });

  it('a backend that answered is never left: its reset after the first byte reaches the client', { timeout: TEST_TIMEOUT_MS }, async () => {
    const answersThenDies = await startBackend((socket) =>
      socket.once('data', () => {
        socket.write('x');
        setTimeout(() => socket.resetAndDestroy(), 20);
      }),
    );
    const live = await startEchoBackend();
    const proxy = await startProxy({ healthy: [answersThenDies.endpoint], timeouts: { firstByteMs: 0 }, retryBeforeReply: 'always' });
    try {
      proxy.setHealthy([answersThenDies.endpoint, live.endpoint]);
      const socket = connect({ host: '127.0.0.1', port: proxy.port });
      const received: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.write(handshakeRecord(10));
      const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
      assert.equal(err.code, 'ECONNRESET');
      assert.equal(Buffer.concat(received).toString(), 'x');
      assert.equal(await metricValue(proxy.metrics.connectRetries, {}), 0);
    } finally {
      await proxy.listener.close(0);
      await answersThenDies.close();
      await live.close();
    }
  });

  it('a client that connects and closes (a TCP check of the VIP) is not retried, and no backend is blamed', { timeout: TEST_TIMEOUT_MS }, async () => {
    // Says nothing, and answers a FIN with its own: what the client's close meets at any server.
    const silent = await startBackend((socket) => socket.on('end', () => socket.end()));
    const live = await startEchoBackend();
    const proxy = await startProxy({
      healthy: [silent.endpoint, live.endpoint],
      timeouts: { firstByteMs: 0 },
      retryBeforeReply: 'always',
      outlier: { consecutiveConnectFailures: 1 },
    });
    try {
      for (let i = 0; i < CLIENTS; i++) {
        const socket = connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
        socket.end();
        assert.equal(await closeReason(socket), 'end');
        socket.destroy();
      }
      await waitFor(() => proxy.ended.length === CLIENTS, 2_000, 'every session to end');
      assert.equal(await metricValue(proxy.metrics.connectRetries, {}), 0);
      assert.equal(silent.accepted + live.accepted, CLIENTS);
      assert.ok(silent.accepted > 0);
      assert.equal(proxy.load.counters(silent.endpoint.key).connectErrors, 0);
      assert.equal(await metricValue(proxy.metrics.backendEjections, { backend: silent.endpoint.key }), 0);
    } finally {
      await proxy.listener.close(0);
      await silent.close();
      await live.close();
    }
  });

  describe('with real TLS', () => {
    let dir: string;
    let pki: ReturnType<typeof makePki>;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'vipd-replay-'));
      pki = makePki(dir);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('a TLS client whose first backend dies after reading its ClientHello completes its handshake with another, and never knows', { timeout: TEST_TIMEOUT_MS }, async () => {
      const dying = await startDyingBackend('reset');
      const tlsServer: TlsServer = createTlsServer({ key: pki.server.key, cert: pki.server.cert }, (socket) => socket.pipe(socket));
      tlsServer.listen(0, '127.0.0.1');
      await once(tlsServer, 'listening');
      const live = endpoint('127.0.0.1', (tlsServer.address() as { port: number }).port);
      const proxy = await startProxy({ healthy: [dying.endpoint, live], timeouts: { firstByteMs: 0 } });
      try {
        let ok = 0;
        for (let i = 0; i < CLIENTS; i++) {
          const socket = tlsConnect({ host: '127.0.0.1', port: proxy.port, ca: readFileSync(pki.caFile), servername: 'backend.test' });
          await once(socket, 'secureConnect');
          socket.write(`request ${i}`);
          const [echo] = (await once(socket, 'data')) as [Buffer];
          assert.equal(echo.toString(), `request ${i}`);
          socket.destroy();
          ok++;
        }
        const retries = await metricValue(proxy.metrics.connectRetries, {});
        console.log(`real TLS: ${ok}/${CLIENTS} handshakes and echoes; the dying backend read ${dying.accepted} ClientHellos (${dying.bytesReceived} bytes), retries ${retries}`);
        assert.ok(dying.accepted > 0, 'the dying backend was never picked: the test proved nothing');
        assert.equal(retries, dying.accepted);
      } finally {
        await proxy.listener.close(0);
        await dying.close();
        await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
      }
    });
  });
});
