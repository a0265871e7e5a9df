import type { ClientRequest, IncomingMessage } from 'node:http';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { isIP } from 'node:net';
import type { Endpoint } from '../net/endpoint';
import { loadTlsMaterial, type TlsMaterial } from './check-files';
import { MAX_REPLY_BYTES, type CheckSpec, type Probe, type ProbeResult } from './health';
import { describeFailure, type ProbePhase } from './probe-detail';
import { tooLarge, type ReplyJudge } from './reply-judge';

/** The http(s) fields of a CheckSpec, plus whether to speak TLS and how to judge the body. */
export type HttpProbeOptions = Pick<CheckSpec, 'path' | 'expectStatus' | 'host' | 'caFile' | 'certFile' | 'keyFile' | 'insecureSkipVerify' | 'serverName'> & {
  readonly tls: boolean;
  /** Reads the body (at most MAX_REPLY_BYTES) and gives the verdict; without one, the status alone decides. */
  readonly judge?: ReplyJudge;
  /** The kind reported (etcd is an http probe with its own judge). */
  readonly kind?: 'http' | 'https' | 'etcd';
};

/**
 * Enough of the body to let a small reply finish cleanly (so the backend sees FIN, not RST); a probe
 * has no use for more, and a huge or endless body must not hold the probe open.
 */
export const BODY_DRAIN_CAP_BYTES = 4096;

const USER_AGENT = 'vipd-health-check';

/**
 * GET `path` over a brand-new connection (no agent, no keep-alive) so every pass proves that a new
 * client could connect, handshake and be answered. Without a judge the verdict is the status code and
 * the timeout covers the exchange up to the response headers; with one (etcd, expectBody, expectJson)
 * the body must also arrive within the timeout, and more than MAX_REPLY_BYTES of it fails the probe.
 * TLS files are read once, here: a rotated certificate takes effect at the next start.
 */
export class HttpProbe implements Probe {
  readonly kind: 'http' | 'https' | 'etcd';
  private readonly expectStatus: readonly number[];
  private readonly tlsMaterial: TlsMaterial;
  private readonly serverName: string | undefined;

  constructor(private readonly options: HttpProbeOptions) {
    this.kind = options.kind ?? (options.tls ? 'https' : 'http');
    this.expectStatus = options.expectStatus.length > 0 ? options.expectStatus : [200];
    this.tlsMaterial = options.tls ? loadTlsMaterial(options) : {};
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
      const judge = this.options.judge;
      const chunks: Buffer[] = [];
      let bodyBytes = 0;
      let bodyComplete = false;
      const finishWithStatus = (): void => {
        if (status === undefined) return;
        if (judge !== undefined) {
          if (!bodyComplete) return;
          const verdict = judge(status, Buffer.concat(chunks, bodyBytes));
          finish(verdict.ok, verdict.detail);
        } else if (this.expectStatus.includes(status)) finish(true, String(status));
        else finish(false, `status ${status}`);
      };

      // Network time, not scheduling time: always the real event loop, even when the checker runs on a fake clock.
      const deadline = setTimeout(() => {
        // Headers arrived in time: without a judge, a slow body does not turn an answer into a timeout.
        if (status !== undefined && judge === undefined) finishWithStatus();
        else if (status !== undefined) finish(false, `timeout after ${timeoutMs}ms (body, ${bodyBytes} bytes read, status ${status})`);
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
        if (judge === undefined) {
          let drained = 0;
          res.on('data', (chunk: Buffer) => {
            drained += chunk.length;
            if (drained >= BODY_DRAIN_CAP_BYTES) finishWithStatus();
          });
          res.on('end', finishWithStatus);
          res.on('close', finishWithStatus);
          res.on('error', finishWithStatus);
          return;
        }
        const declared = Number(res.headers['content-length']);
        if (declared > MAX_REPLY_BYTES) {
          finish(false, `status ${status}, ${tooLarge(`content-length ${declared}`)}`);
          return;
        }
        res.on('data', (chunk: Buffer) => {
          bodyBytes += chunk.length;
          if (bodyBytes > MAX_REPLY_BYTES) {
            finish(false, `status ${status}, ${tooLarge(`over ${MAX_REPLY_BYTES} bytes sent`)}`);
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => {
          bodyComplete = true;
          finishWithStatus();
        });
        res.on('error', (err) => finish(false, `status ${status}, ${describeFailure('body', err)}`));
        res.on('close', () => {
          if (!bodyComplete) finish(false, `status ${status}, body cut after ${bodyBytes} bytes`);
        });
      });
      req.on('error', (err) => {
        if (status !== undefined && judge === undefined) finishWithStatus();
        else if (status !== undefined) finish(false, `status ${status}, ${describeFailure('body', err)}`);
        // TLS 1.3 sends a client-certificate refusal after the handshake: still a TLS failure, not a request's.
        else finish(false, describeFailure(isTlsError(err) ? 'tls' : phase, err));
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
      const { ca, cert, key } = this.tlsMaterial;
      if (ca !== undefined) options.ca = ca;
      if (cert !== undefined && key !== undefined) {
        options.cert = cert;
        options.key = key;
      }
      if (this.serverName !== undefined) options.servername = this.serverName;
    }
    return options;
  }
}

/** The name part of a Host header, unless it is an IP literal (SNI never carries addresses). */
function nameForSni(hostHeader: string | undefined): string | undefined {
  if (hostHeader === undefined || hostHeader.startsWith('[')) return undefined;
  const name = hostHeader.includes(':') && isIP(hostHeader) === 0 ? hostHeader.slice(0, hostHeader.lastIndexOf(':')) : hostHeader;
  return name === '' || isIP(name) !== 0 ? undefined : name;
}

function isTlsError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('ERR_SSL_') || code.includes('CERT') || code.startsWith('ERR_TLS_'));
}
