import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import type { PoolSnapshot } from '../../src/health/health';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { BackendLoadTracker } from '../../src/proxy/backend-load';
import { createListener } from '../../src/proxy/listener';
import { echoHeld, snapshotOf } from './proxy-backends';
import { testPoolSpec } from './proxy-harness';

/**
 * The processes of the namespace tests (test/fakes/netns-runner.ts starts them with `ip netns exec`).
 * Every line one prints is a JSON event with a wall-clock `at`, so the test can time what happened in
 * here.
 *
 *   backend <host> <port>                  echo server; reports each accepted peer port, and each
 *                                          connection's first data ('relayed': a health check sends none)
 *   proxy <backendHost> <backendPort> <tcpKeepaliveMs>
 *                                          a vipd listener on 127.0.0.1 in front of the backend, and one
 *                                          client through it on loopback; reports stats every 250 ms (T07)
 *   exhaust <host> <port> <adminPort> <maxHeld> <attemptsAfterFull> <probes>
 *                                          opens echo connections through a proxy and holds them until one
 *                                          is not served, tries `attemptsAfterFull` more, reports how each
 *                                          unserved one ended and the proxy's /metrics; then releases them
 *                                          all, runs `probes` fresh echo round trips and reports /metrics again
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
    socket.once('data', () => emit('relayed', { remotePort: socket.remotePort }));
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

function fetchText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function runExhaust(host: string, port: number, adminPort: number, maxHeld: number, attemptsAfterFull: number, probes: number): Promise<void> {
  const HANG_MS = 3_000;
  const PING = Buffer.from('ping');
  const held: Socket[] = [];
  const unserved: Array<{ how: string; ms: number }> = [];
  while (held.length < maxHeld && unserved.length <= attemptsAfterFull) {
    const outcome = await echoHeld(port, PING, { host, hangMs: HANG_MS });
    if (outcome.served) {
      if (unserved.length === 0) held.push(outcome.socket);
      else outcome.socket.destroy();
    } else {
      unserved.push({ how: outcome.how, ms: outcome.ms });
    }
  }
  emit('exhausted', { held: held.length, unserved });
  // Still holding every connection: the admin API must answer all the same.
  emit('metricsAtLimit', { text: await fetchText(adminPort, '/metrics').catch((err: NodeJS.ErrnoException) => `unreachable: ${err.code ?? err.message}`) });
  for (const socket of held) socket.destroy();
  // The proxy sees the clients' FINs, closes both legs of each and gives the fds back.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  let served = 0;
  const failures: string[] = [];
  for (let i = 0; i < probes; i++) {
    const outcome = await echoHeld(port, PING, { host, hangMs: HANG_MS });
    if (outcome.served) {
      served++;
      outcome.socket.destroy();
    } else {
      failures.push(outcome.how);
    }
  }
  emit('probed', { served, failures });
  emit('metrics', { text: await fetchText(adminPort, '/metrics') });
}

const [role, ...args] = process.argv.slice(2);
if (role === 'backend') runBackend(args[0]!, Number(args[1]));
else if (role === 'proxy') void runProxy(args[0]!, Number(args[1]), Number(args[2]));
else if (role === 'exhaust') void runExhaust(args[0]!, Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4]), Number(args[5]));
else {
  process.stderr.write(
    'usage: proxy-netns-runner backend <host> <port> | proxy <backendHost> <backendPort> <tcpKeepaliveMs>\n' +
      '       | exhaust <host> <port> <adminPort> <maxHeld> <attemptsAfterFull> <probes>\n',
  );
  process.exit(2);
}
