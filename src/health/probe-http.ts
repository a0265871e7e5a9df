import { readFileSync } from 'node:fs';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { isIP } from 'node:net';
import { VipdError } from '../lib/errors';
import type { Endpoint } from '../net/endpoint';
import type { CheckSpec, Probe, ProbeResult } from './health';
import { describeFailure, type ProbePhase } from './probe-detail';

/** The http(s) fields of a CheckSpec, plus whether to speak TLS. */
export type HttpProbeOptions = Pick<CheckSpec, 'path' | 'expectStatus' | 'host' | 'caFile' | 'insecureSkipVerify' | 'serverName'> & {
  readonly tls: boolean;
};

/**
 * Enough of the body to let a small reply finish cleanly (so the backend sees FIN, not RST); a probe
 * has no use for more, and a huge or endless body must not hold the probe open.
 */
export const BODY_DRAIN_CAP_BYTES = 4096;

const USER_AGENT = 'vipd-health-check';

/**
 * GET `path` over a brand-new connection (no agent, no keep-alive) so every pass proves that a new
 * client could connect, handshake and be answered. The timeout covers the whole exchange up to the
 * response headers; the verdict is the status code.
 */
export class HttpProbe implements Probe {
  readonly kind: 'http' | 'https';
  private readonly expectStatus: readonly number[];
  private readonly ca: Buffer | undefined;
  private readonly serverName: string | undefined;

  constructor(private readonly options: HttpProbeOptions) {
    this.kind = options.tls ? 'https' : 'http';
    this.expectStatus = options.expectStatus.length > 0 ? options.expectStatus : [200];
    this.ca = options.tls && options.caFile !== undefined ? readCaFile(options.caFile) : undefined;
    this.serverName = options.serverName ?? nameForSni(options.host);
  }

  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult> {
    return new Promise((resolve) => {
      const startedAt = performance.now();
      let phase: ProbePhase = 'connect';
      let status: number | undefined;
      let settled = false;
      let req: ClientRequest | undefined;

      const finish = (ok: boolean, detail: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        // Destroying (not ending) guarantees the socket is gone before the next probe of this backend.
        req?.destroy();
        resolve({ ok, detail, durationMs: Math.round(performance.now() - startedAt) });
      };
      const finishWithStatus = (): void => {
        if (status === undefined) return;
        if (this.expectStatus.includes(status)) finish(true, String(status));
        else finish(false, `status ${status}`);
      };

      // Network time, not scheduling time: always the real event loop, even when the checker runs on a fake clock.
      const deadline = setTimeout(() => {
        // Headers arrived in time: a slow body does not turn an answer into a timeout.
        if (status !== undefined) finishWithStatus();
        else finish(false, `timeout after ${timeoutMs}ms (${phase})`);
      }, timeoutMs);

      try {
        req = (this.options.tls ? httpsRequest : httpRequest)(this.requestOptions(target));
      } catch (err) {
        finish(false, describeFailure(phase, err));
        return;
      }
      req.on('socket', (socket) => {
        socket.once('connect', () => {
          if (phase === 'connect') phase = this.options.tls ? 'tls' : 'headers';
        });
        socket.once('secureConnect', () => {
          phase = 'headers';
        });
      });
      req.on('response', (res: IncomingMessage) => {
        status = res.statusCode;
        phase = 'body';
        let drained = 0;
        res.on('data', (chunk: Buffer) => {
          drained += chunk.length;
          if (drained >= BODY_DRAIN_CAP_BYTES) finishWithStatus();
        });
        res.on('end', finishWithStatus);
        res.on('close', finishWithStatus);
        res.on('error', finishWithStatus);
      });
      req.on('error', (err) => {
        if (status !== undefined) finishWithStatus();
        else finish(false, describeFailure(phase, err));
      });
      req.end();
    });
  }

  private requestOptions(target: Endpoint): RequestOptions {
    const options: RequestOptions = {
      host: target.host,
      port: target.port,
      method: 'GET',
      path: this.options.path,
      agent: false,
      headers: {
        'user-agent': USER_AGENT,
        accept: '*/*',
        connection: 'close',
        ...(this.options.host !== undefined ? { host: this.options.host } : {}),
      },
    };
    if (this.options.tls) {
      options.rejectUnauthorized = !this.options.insecureSkipVerify;
      if (this.ca !== undefined) options.ca = this.ca;
      if (this.serverName !== undefined) options.servername = this.serverName;
    }
    return options;
  }
}

function readCaFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new VipdError('VIPD_ERR_CONFIG_IO', `health check caFile ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** The name part of a Host header, unless it is an IP literal (SNI never carries addresses). */
function nameForSni(hostHeader: string | undefined): string | undefined {
  if (hostHeader === undefined || hostHeader.startsWith('[')) return undefined;
  const name = hostHeader.includes(':') && isIP(hostHeader) === 0 ? hostHeader.slice(0, hostHeader.lastIndexOf(':')) : hostHeader;
  return name === '' || isIP(name) !== 0 ? undefined : name;
}
