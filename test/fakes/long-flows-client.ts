import { connect, type Socket } from 'node:net';
import { cliArg, cliTarget, httpGet, printReport } from '../lab/client-cli';

/**
 * Long-lived flows for lab tests: opens `flows` keep-alive HTTP/1.1 connections to the target and
 * sends GET `path` on each every `intervalMs` for `durationMs`, then reports what a user would see:
 * a flow is kept when it was never closed or reset and every request got its 200. Run inside the
 * client namespace:
 *   node dist/test/fakes/long-flows-client.js --target 198.19.0.10:2379 --flows 200 --duration 20000
 * It prints one JSON line (LongFlowsReport). Bounded in count and time; it stops by itself.
 */
export interface LongFlowsReport {
  readonly flows: number;
  readonly connected: number;
  /** Open to the end with every request answered 200. */
  readonly kept: number;
  /** Closed or reset by the other side (or failed to connect), by reason. */
  readonly lost: Readonly<Record<string, number>>;
  readonly requests: number;
  readonly answered: number;
}

interface Flow {
  socket: Socket;
  connected: boolean;
  lostReason: string | undefined;
  sent: number;
  answered: number;
  buffer: string;
}

export async function runLongFlows(o: { host: string; port: number; flows: number; intervalMs: number; durationMs: number; path: string }): Promise<LongFlowsReport> {
  const flows: Flow[] = [];
  const request = httpGet(o.path, o.host);
  await Promise.all(
    Array.from({ length: o.flows }, () => {
      return new Promise<void>((resolve) => {
        const socket = connect({ host: o.host, port: o.port });
        const flow: Flow = { socket, connected: false, lostReason: undefined, sent: 0, answered: 0, buffer: '' };
        flows.push(flow);
        socket.setEncoding('latin1');
        socket.on('connect', () => {
          flow.connected = true;
          resolve();
        });
        socket.on('data', (chunk: string) => {
          flow.buffer += chunk;
          for (;;) {
            const i = flow.buffer.indexOf('HTTP/1.1 200 ');
            if (i < 0) break;
            flow.answered++;
            flow.buffer = flow.buffer.slice(i + 13);
          }
          if (flow.buffer.length > 65536) flow.buffer = flow.buffer.slice(-64);
        });
        socket.on('error', (err: NodeJS.ErrnoException) => {
          flow.lostReason ??= err.code ?? err.message;
          resolve();
        });
        socket.on('close', () => {
          flow.lostReason ??= 'closed by peer';
          resolve();
        });
      });
    }),
  );
  const started = performance.now();
  while (performance.now() - started < o.durationMs) {
    for (const flow of flows) {
      if (flow.connected && flow.lostReason === undefined) {
        flow.sent++;
        flow.socket.write(request);
      }
    }
    await new Promise((r) => setTimeout(r, o.intervalMs));
  }
  // The last requests get their answers.
  await new Promise((r) => setTimeout(r, 1000));
  const lost: Record<string, number> = {};
  let kept = 0;
  for (const flow of flows) {
    const reason = flow.lostReason ?? (flow.answered < flow.sent ? 'unanswered request' : undefined);
    if (reason === undefined) kept++;
    else lost[reason] = (lost[reason] ?? 0) + 1;
    flow.lostReason ??= 'ended by client';
    flow.socket.destroy();
  }
  return {
    flows: o.flows,
    connected: flows.filter((f) => f.connected).length,
    kept,
    lost,
    requests: flows.reduce((n, f) => n + f.sent, 0),
    answered: flows.reduce((n, f) => n + f.answered, 0),
  };
}

if (require.main === module) {
  printReport(
    runLongFlows({
      ...cliTarget('198.19.0.10:2379'),
      flows: Number(cliArg('flows', '200')),
      intervalMs: Number(cliArg('interval', '1000')),
      durationMs: Number(cliArg('duration', '20000')),
      path: cliArg('path', '/health'),
    }),
  );
}
