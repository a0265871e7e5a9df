import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { before, describe, it } from 'node:test';
import { Runner } from '../fakes/netns-runner';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * T07, half-open backend: every packet of an established upstream connection is dropped (nft in the
 * backend's namespace), as when a backend host dies without a word or a middlebox loses its state.
 * Only TCP keepalive can tell; the client must be closed within 25 s and the proxy must hold nothing
 * afterwards.
 *
 * Two namespaces joined by a veth pair in 198.18.250.0/30: A runs vipd's listener and a client on
 * A's loopback, B runs the backend.
 */
const NS_A = `vpx${process.pid}a`;
const NS_B = `vpx${process.pid}b`;
const VETH_A = `vpx${process.pid}va`;
const VETH_B = `vpx${process.pid}vb`;
const ADDR_A = '198.18.250.1';
const ADDR_B = '198.18.250.2';
const BACKEND_PORT = 2379;
/** The config default: with libuv's 1 s interval and 10 probes, a dead peer is found ~20 s after the last byte. */
const TCP_KEEPALIVE_MS = 10_000;
const DETECTION_BOUND_MS = 25_000;

function sh(...argv: string[]): void {
  execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

function createNamespaces(): void {
  sh('ip', 'netns', 'add', NS_A);
  sh('ip', 'netns', 'add', NS_B);
  sh('ip', 'link', 'add', VETH_A, 'netns', NS_A, 'type', 'veth', 'peer', 'name', VETH_B, 'netns', NS_B);
  for (const [ns, dev, addr] of [
    [NS_A, VETH_A, ADDR_A],
    [NS_B, VETH_B, ADDR_B],
  ] as const) {
    sh('ip', '-n', ns, 'addr', 'add', `${addr}/30`, 'dev', dev);
    sh('ip', '-n', ns, 'link', 'set', dev, 'up');
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
}

function deleteNamespaces(): void {
  // Deleting a namespace takes its veth end, and so the pair, and B's nft table with it.
  for (const ns of [NS_A, NS_B]) spawnSync('ip', ['netns', 'del', ns]);
}

/** Drops every packet of one TCP flow in B, both ways: the peer neither answers nor resets. */
function blackhole(proxyPort: number): void {
  const rules = `
table inet vpxdrop {
  chain in { type filter hook input priority -10; ip saddr ${ADDR_A} tcp sport ${proxyPort} tcp dport ${BACKEND_PORT} drop; }
  chain out { type filter hook output priority -10; ip daddr ${ADDR_A} tcp dport ${proxyPort} tcp sport ${BACKEND_PORT} drop; }
}`;
  execFileSync('ip', ['netns', 'exec', NS_B, 'nft', '-f', '-'], { input: rules });
}

describe('half-open backend (T07)', () => {
  before(() => requirePrerequisites(['ip', 'nft']));

  it(`a blackholed upstream is found by TCP keepalive within ${DETECTION_BOUND_MS / 1000} s; the client is closed and nothing is left`, { timeout: 60_000 }, async () => {
    const runners: Runner[] = [];
    try {
      createNamespaces();
      const backend = new Runner(NS_B, ['backend', ADDR_B, String(BACKEND_PORT)]);
      runners.push(backend);
      await backend.next((e) => e.event === 'ready', 10_000, 'backend ready');
      const proxy = new Runner(NS_A, ['proxy', ADDR_B, String(BACKEND_PORT), String(TCP_KEEPALIVE_MS)]);
      runners.push(proxy);
      const established = await proxy.next((e) => e.event === 'established', 10_000, 'the proxied connection');
      assert.equal(established['echo'], 'ping');
      const accepted = await backend.next((e) => e.event === 'accepted', 1_000, 'the upstream at the backend');
      blackhole(accepted['remotePort'] as number);
      const droppedAt = Date.now();

      const closed = await proxy.next((e) => e.event === 'clientClosed', DETECTION_BOUND_MS + 5_000, 'the client to be closed');
      const ended = await proxy.next((e) => e.event === 'sessionEnd', 5_000, 'the session to end');
      const settled = await proxy.next(
        (e) => e.event === 'stats' && e.at > ended.at && e['active'] === 0 && e['upstreams'] === 0 && e['fds'] === established['baselineFds'],
        2_000,
        'gauges and fds back to baseline',
      );
      const detectedAfter = closed.at - droppedAt;
      const sinceLastByte = closed.at - established.at;
      console.log(
        `T07: upstream blackholed; client closed (${String(closed['how'])}) ${(detectedAfter / 1000).toFixed(1)} s after the drop ` +
          `(${(sinceLastByte / 1000).toFixed(1)} s after the last byte; keepalive idle ${TCP_KEEPALIVE_MS / 1000} s); session outcome ${String(ended['outcome'])}; ` +
          `active 0 and fds ${String(settled['fds'])} (baseline ${String(established['baselineFds'])}, ${String(established['fds'])} while connected) ${settled.at - closed.at} ms later`,
      );
      assert.ok(detectedAfter <= DETECTION_BOUND_MS, `detected after ${detectedAfter} ms`);
      assert.ok(sinceLastByte >= TCP_KEEPALIVE_MS, 'closed before keepalive could have spoken: something else closed it');
      assert.equal(closed['how'], 'ECONNRESET', 'an aborted upstream must reach the client as an abort');
      assert.equal(ended['outcome'], 'upstreamError');
    } finally {
      for (const runner of runners) runner.stop();
      deleteNamespaces();
    }
  });
});
