import { connect } from 'node:net';
import type { Endpoint } from '../net/endpoint';
import { MAX_REPLY_BYTES, type Probe, type ProbeResult } from './health';
import { describeFailure } from './probe-detail';

export interface TcpProbeOptions {
  /** Written once the connection is up. */
  readonly send?: Buffer | undefined;
  /** Must arrive (anywhere in the first MAX_REPLY_BYTES) within the timeout. */
  readonly expect?: Buffer | undefined;
}

/**
 * Passes when a TCP connection to the backend is established within the timeout and, with `expect`,
 * when those bytes arrive within it. The connection is reset at once (RST, as HAProxy's checks do): without `send`/`expect` the
 * probe proves the backend accepts, nothing more (a hung process whose kernel still completes the
 * handshake passes; use expect, http or etcd to catch that).
 */
export class TcpProbe implements Probe {
  readonly kind = 'tcp';

  constructor(private readonly options: TcpProbeOptions = {}) {}

  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult> {
    const { send, expect } = this.options;
    return new Promise((resolve) => {
      const startedAt = performance.now();
      const socket = connect({ host: target.host, port: target.port });
      let settled = false;
      let connected = false;
      let received: Buffer = EMPTY;
      const finish = (ok: boolean, detail: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        // As HAProxy does: an RST, not a FIN exchange, so neither side keeps the connection (no
        // TIME_WAIT here, no FIN_WAIT/CLOSE_WAIT there) and the kernel sends half the segments.
        // A send with nothing expected ends with a FIN instead, so its bytes are not dropped by the RST.
        if (connected && !socket.destroyed && (send === undefined || expect !== undefined)) socket.resetAndDestroy();
        else socket.destroy();
        resolve({ ok, detail, durationMs: Math.round(performance.now() - startedAt) });
      };
      // The deadline is I/O time, not scheduling: it must run on the real event loop even in tests.
      const deadline = setTimeout(
        () => finish(false, connected ? `timeout after ${timeoutMs}ms (expect; ${received.length} bytes read, no match)` : `timeout after ${timeoutMs}ms (connect)`),
        timeoutMs,
      );
      socket.once('connect', () => {
        connected = true;
        if (send !== undefined && expect === undefined) {
          socket.end(send, () => finish(true, `connected, sent ${send.length} bytes`));
          return;
        }
        if (send !== undefined) socket.write(send);
        if (expect === undefined) finish(true, 'connected');
      });
      if (expect !== undefined) {
        socket.on('data', (chunk: Buffer) => {
          // Keeps at most MAX_REPLY_BYTES; a match may straddle chunks, so search the whole window.
          received = Buffer.concat([received, chunk]).subarray(0, MAX_REPLY_BYTES);
          if (received.includes(expect)) {
            finish(true, `expect matched after ${received.length} bytes`);
          } else if (received.length >= MAX_REPLY_BYTES) {
            finish(false, `expect not found in the first ${MAX_REPLY_BYTES} bytes; not read further`);
          }
        });
        socket.once('end', () => finish(false, `expect not found: connection closed after ${received.length} bytes`));
      }
      socket.on('error', (err) => finish(false, describeFailure(connected ? 'body' : 'connect', err)));
    });
  }
}

const EMPTY = Buffer.alloc(0);
