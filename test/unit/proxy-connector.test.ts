import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { endpoint } from '../../src/net/endpoint';
import { ConnectError, createConnector, type ConnectHandler } from '../../src/proxy/connector';
import { closedPort, startEchoBackend } from '../fakes/proxy-backends';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

type Outcome = { connected: Socket } | { failed: ConnectError };

function recordOutcome(): { handler: ConnectHandler; outcome: Promise<Outcome> } {
  let settle!: (o: Outcome) => void;
  let calls = 0;
  const outcome = new Promise<Outcome>((resolve) => (settle = resolve));
  const handler: ConnectHandler = {
    onConnected(socket) {
      calls++;
      assert.equal(calls, 1, 'handler called more than once');
      settle({ connected: socket });
    },
    onConnectFailed(error) {
      calls++;
      assert.equal(calls, 1, 'handler called more than once');
      settle({ failed: error });
    },
  };
  return { handler, outcome };
}

describe('connector', () => {
  it('hands over a connected socket that allows half-open', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    try {
      const { handler, outcome } = recordOutcome();
      createConnector()(backend.endpoint, 1_000, handler);
      const result = await outcome;
      assert.ok('connected' in result);
      const socket = result.connected;
      assert.equal(socket.connecting, false);
      assert.equal(socket.allowHalfOpen, true);
      assert.equal(socket.listenerCount('timeout'), 0, 'the connect timeout must not outlive the dial');
      socket.destroy();
    } finally {
      await backend.close();
    }
  });

  it('reports a refused dial as kind refused with the errno kept as cause', { timeout: TEST_TIMEOUT_MS }, async () => {
    const target = await closedPort();
    const { handler, outcome } = recordOutcome();
    createConnector()(target, 1_000, handler);
    const result = await outcome;
    assert.ok('failed' in result);
    assert.equal(result.failed.kind, 'refused');
    assert.equal(result.failed.code, 'VIPD_ERR_NET');
    assert.equal(result.failed.backend, target.key);
    assert.equal((result.failed.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
  });

  it('times out a dial that never completes with VIPD_ERR_CONNECT_TIMEOUT', { timeout: TEST_TIMEOUT_MS }, async () => {
    let hanging: Socket | undefined;
    const connector = createConnector({
      dial: () => {
        // An unconnected socket: no event ever comes, like a SYN into a black hole.
        hanging = new Socket();
        return hanging;
      },
    });
    const { handler, outcome } = recordOutcome();
    // The dial timer is unref'd (in vipd the client socket holds the loop); here nothing else would.
    const holdLoop = setTimeout(() => {}, 5_000);
    const started = performance.now();
    connector(endpoint('127.0.0.1', 9), 150, handler);
    const result = await outcome;
    clearTimeout(holdLoop);
    const elapsed = performance.now() - started;
    console.log(`connect timeout 150 ms fired after ${elapsed.toFixed(0)} ms`);
    assert.ok('failed' in result);
    assert.equal(result.failed.kind, 'timeout');
    assert.equal(result.failed.code, 'VIPD_ERR_CONNECT_TIMEOUT');
    assert.ok(elapsed >= 140 && elapsed < 1_000, `elapsed ${elapsed}`);
    assert.equal(hanging!.destroyed, true);
  });

  it('after cancel() the handler hears nothing and the socket is destroyed', { timeout: TEST_TIMEOUT_MS }, async () => {
    const backend = await startEchoBackend();
    try {
      let dialled: Socket | undefined;
      const connector = createConnector({
        dial: (options) => {
          dialled = new Socket();
          return dialled.connect(options);
        },
      });
      const handler: ConnectHandler = {
        onConnected: () => assert.fail('onConnected after cancel'),
        onConnectFailed: () => assert.fail('onConnectFailed after cancel'),
      };
      // Cancel at once, while the kernel is still completing the handshake.
      connector(backend.endpoint, 100, handler).cancel();
      await new Promise((resolve) => setTimeout(resolve, 250));
      assert.equal(dialled!.destroyed, true);
    } finally {
      await backend.close();
    }
  });
});
