import { readdirSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { PoolSnapshot } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import { createListener } from '../../src/proxy/listener';
import { snapshotOf } from './proxy-backends';
import { testPoolSpec } from './proxy-harness';

/**
 * One side of the half-open test (T07), run inside a network namespace with `ip netns exec`. Every
 * line it prints is a JSON event with a wall-clock `at`, so the test can time what happened in here.
 *
 *   backend <host> <port>                  echo server; reports each accepted peer port
 *   proxy <backendHost> <backendPort> <tcpKeepaliveMs>
 *                                          a vipd listener on 127.0.0.1 in front of the backend, and one
 *                                          client through it on loopback; reports stats every 250 ms
 */
function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, at: Date.now(), ...fields })}\n`);
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function runBackend(host: string, port: number): void {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    emit('accepted', { remotePort: socket.remotePort });
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  server.listen(port, host, () => emit('ready'));
}

async function runProxy(backendHost: string, backendPort: number, tcpKeepaliveMs: number): Promise<void> {
  const backend = endpoint(backendHost, backendPort);
  const metrics = createMetrics();
  const snapshot: PoolSnapshot = snapshotOf('test-pool', [backend]);
  const pool = testPoolSpec([backend], { tcpKeepaliveMs });
  const load = new BackendLoadTracker({ spec: pool, health: { snapshot: () => snapshot, onChange: () => () => {} }, metrics });
  const listener = createListener({ spec: { id: 't07:0', vip: '127.0.0.1', address: '127.0.0.1', port: 0, pool }, load, logger: silentLogger(), metrics });
  listener.onSessionEnd((session) => emit('sessionEnd', { outcome: session.outcome, bytesFromUpstream: session.bytesFromUpstream }));
  await listener.start();
  const baselineFds = openFds();
  const client = connect({ host: '127.0.0.1', port: listener.address()!.port });
  client.on('error', (err: NodeJS.ErrnoException) => emit('clientClosed', { how: err.code ?? err.message }));
  client.on('end', () => emit('clientClosed', { how: 'end' }));
  client.once('data', (chunk: Buffer) => {
    emit('established', { echo: chunk.toString(), baselineFds, fds: openFds(), active: listener.stats().active });
  });
  client.write('ping');
  setInterval(() => emit('stats', { active: listener.stats().active, upstreams: load.active(backend), fds: openFds() }), 250);
}

const [role, ...args] = process.argv.slice(2);
if (role === 'backend') runBackend(args[0]!, Number(args[1]));
else if (role === 'proxy') void runProxy(args[0]!, Number(args[1]), Number(args[2]));
else {
  process.stderr.write(`usage: proxy-netns-runner backend <host> <port> | proxy <backendHost> <backendPort> <tcpKeepaliveMs>\n`);
  process.exit(2);
}
