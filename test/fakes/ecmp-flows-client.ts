import { connect, type Socket } from 'node:net';
import { cliArg, cliTarget } from '../lab/client-cli';

/**
 * Long-lived flows for ECMP tests (T20), run in the client namespace:
 *   node dist/test/fakes/ecmp-flows-client.js --target 198.19.0.10:7001 --flows 600 --duration 30000
 * Opens `flows` connections (200/s). The backend's first line names the peer it sees, which is the
 * balancer that proxied the flow. Then each flow sends one byte a second and expects it echoed; a flow
 * ends by RST (ECONNRESET), FIN, another error, or a timeout (no echo for 3 s, the black-hole case).
 * Prints one JSON line: every flow with its balancer and how and when (Date.now()) it ended.
 */
export interface FlowResult {
  readonly balancer: string;
  /** undefined: still open at the end. */
  readonly ended?: 'rst' | 'fin' | 'timeout' | string;
  readonly endedAt?: number;
}

async function main(): Promise<void> {
  const { host, port } = cliTarget();
  const count = Number(cliArg('flows', '600'));
  const durationMs = Number(cliArg('duration', '30000'));
  const started = Date.now();
  const flows: Array<{ balancer: string; ended?: string; endedAt?: number; socket: Socket; lastEcho: number }> = [];
  const end = (f: (typeof flows)[number], how: string) => {
    if (f.ended !== undefined) return;
    f.ended = how;
    f.endedAt = Date.now();
    f.socket.destroy();
  };
  // Pings start with the first flow: a flow opened early must not wait for the last one to be echoed.
  const ping = setInterval(() => {
    const now = Date.now();
    for (const f of flows) {
      if (f.ended !== undefined) continue;
      if (now - f.lastEcho > 3000) end(f, 'timeout');
      else f.socket.write('.');
    }
  }, 1000);
  for (let i = 0; i < count; i++) {
    const socket = connect({ host, port });
    const flow: (typeof flows)[number] = { balancer: '', socket, lastEcho: Date.now() };
    flows.push(flow);
    let buffered = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      flow.lastEcho = Date.now();
      if (flow.balancer === '') {
        buffered += chunk;
        const nl = buffered.indexOf('\n');
        if (nl >= 0) flow.balancer = buffered.slice(0, nl);
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => end(flow, err.code === 'ECONNRESET' ? 'rst' : (err.code ?? err.message)));
    socket.on('end', () => end(flow, 'fin'));
    socket.on('close', () => end(flow, 'closed'));
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, Math.max(0, durationMs - (Date.now() - started))));
  clearInterval(ping);
  const results: FlowResult[] = flows.map((f) => ({ balancer: f.balancer, ...(f.ended !== undefined ? { ended: f.ended, endedAt: f.endedAt } : {}) }));
  for (const f of flows) f.socket.destroy();
  process.stdout.write(JSON.stringify({ started, flows: results }) + '\n');
}

void main();
