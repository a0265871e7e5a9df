import { connect } from 'node:net';
import type { Endpoint } from '../net/endpoint';
import type { Probe, ProbeResult } from './health';
import { describeFailure } from './probe-detail';

/**
 * Passes when a TCP connection to the backend is established within the timeout. The connection is
 * closed at once: the probe proves the backend accepts, nothing more (a hung process whose kernel
 * still completes the handshake passes; use http/https to catch that).
 */
export class TcpProbe implements Probe {
  readonly kind = 'tcp';

  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult> {
    return new Promise((resolve) => {
      const startedAt = performance.now();
      const socket = connect({ host: target.host, port: target.port });
      let settled = false;
      const finish = (ok: boolean, detail: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        socket.destroy();
        resolve({ ok, detail, durationMs: Math.round(performance.now() - startedAt) });
      };
      // The deadline is I/O time, not scheduling: it must run on the real event loop even in tests.
      const deadline = setTimeout(() => finish(false, `timeout after ${timeoutMs}ms (connect)`), timeoutMs);
      socket.once('connect', () => finish(true, 'connected'));
      socket.on('error', (err) => finish(false, describeFailure('connect', err)));
    });
  }
}
