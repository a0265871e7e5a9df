import type { RawAnswer, RawTarget } from './admin-raw-client';
import { seededRandom } from './seeded-random';

/**
 * Seeded random raw admin requests (T29): bad paths and percent-encoding, bad methods and versions,
 * garbage and oversize headers, huge, truncated and chunked bodies, slow headers, half-closed
 * requests, cross-site headers, wrong tokens. None of them is a valid mutation, so the fake or real
 * daemon behind must see no change; `verdict` says whether an answer is acceptable.
 */
export const FUZZ_WRONG_TOKEN_BASE = 'fuzz-token-0123456789abcdef';

export interface FuzzCase {
  readonly label: string;
  readonly target: RawTarget;
  readonly chunks: ReadonlyArray<string | Buffer>;
  readonly gapMs: number;
  readonly endAfterWrite: boolean;
  /** Slow, truncated, half-closed or oversize: the server may cut it without a status line. */
  readonly mayBeCut: boolean;
  /** Only a well-formed read can succeed: 2xx is allowed for it and for nothing else. */
  readonly readOnly: boolean;
}

export function fuzzGenerator(seed: number, tcpPort: number, socketPath: string): () => FuzzCase {
  const rnd = seededRandom(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const printable = (n: number) => Array.from({ length: n }, () => String.fromCharCode(32 + int(95))).join('');

  const methods = ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'PATCH', 'TRACE', 'CONNECT', 'get', 'POST ', 'G\u0000T', '', 'PROPFIND'];
  const paths = [
    '//', '/%', '/%zz', '/%00', '/%2e%2e/status', '/status/', '/status%00', '/drain?x=1', '/../status', '/./status', '*', 'http://admin/status',
    '/\u00ff\u00fe', '/status#frag', '/backends/drain', '/backends/undrain', '/drain', '/undrain', '/status', '/metrics', '/STATUS', '/metrics/', ' /status', '/status ',
  ];
  const versions = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1x', '', 'HTTP/9.9', 'http/1.1'];
  const goodHost = `127.0.0.1:${tcpPort}`;
  const hosts = [goodHost, goodHost, `localhost:${tcpPort}`, 'evil.example', `evil.example:${tcpPort}`, '', `127.0.0.1:${tcpPort + 1}`, printable(20), 'a'.repeat(3000)];
  const contentTypes = ['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '', 'application/jsonx', printable(30)];
  const bodies = ['', '{}', '{', '[]', 'null', '"x"', '{"pool":"etcd"}', '{"pool":1,"backend":[]}', '{"__proto__":{"x":1}}', printable(200), '\u0000\u0001\u0002', '{"a":' + '['.repeat(5000)];

  return () => {
    const overSocket = rnd() < 0.4;
    const target: RawTarget = overSocket ? { path: socketPath } : { port: tcpPort };
    const kind = int(12);
    // Mostly one defect at a time, so that the checks behind the first ones (auth, type, body) are reached too.
    let method = rnd() < 0.6 ? pick(['GET', 'POST']) : pick(methods);
    let p = pick(paths);
    const version = rnd() < 0.8 ? 'HTTP/1.1' : pick(versions);
    const headers: string[] = [];
    let body = '';
    let mayBeCut = false;
    let gapMs = 0;
    let endAfterWrite = false;
    const parts: string[] = [];

    if (!overSocket || rnd() < 0.5) {
      const h = rnd() < 0.6 ? goodHost : pick(hosts);
      if (h !== '' || rnd() < 0.5) headers.push(`Host: ${h}`);
      if (rnd() < 0.1) headers.push(`Host: ${pick(hosts)}`);
    }
    if (rnd() < 0.2) headers.push(`Origin: ${pick(['http://evil.example', 'null', `http://${goodHost}`, printable(12)])}`);
    if (rnd() < 0.1) headers.push(`Sec-Fetch-Site: ${pick(['cross-site', 'same-site', 'none', 'same-origin'])}`);
    if (rnd() < 0.15) headers.push(`Authorization: ${pick(['Bearer wrong', `Bearer ${FUZZ_WRONG_TOKEN_BASE.slice(1)}`, 'Basic eA==', 'Bearer', printable(40)])}`);
    const ct = pick(contentTypes);
    if (ct !== '' && rnd() < 0.7) headers.push(`Content-Type: ${ct}`);

    switch (kind) {
      case 0: // garbage header lines
        headers.push(pick(['no colon here', '\u0001: x', ': empty name', 'X-Long: ' + 'v'.repeat(20_000), 'X\tTab: 1', 'Transfer-Encoding: chunked, gzip', 'Content-Length: -1', 'Content-Length: 1e3', 'Content-Length: 5\r\nContent-Length: 6']));
        break;
      case 1: // overlong path or method
        if (rnd() < 0.5) p = '/' + 'a'.repeat(200 + int(30_000));
        else method = 'M'.repeat(10 + int(2000));
        break;
      case 2: // random bytes as the whole request
        parts.push(bytes(1 + int(400)).toString('latin1'));
        break;
      case 3: {
        // huge body, declared (refused before it is read) or chunked (refused once it passes the limit)
        const huge = 'x'.repeat(17_000 + int(300_000));
        if (rnd() < 0.5) {
          headers.push(`Content-Length: ${huge.length}`);
          body = huge;
        } else {
          headers.push('Transfer-Encoding: chunked');
          body = `${huge.length.toString(16)}\r\n${huge}\r\n0\r\n\r\n`;
        }
        mayBeCut = true;
        break;
      }
      case 4: // truncated body: announced longer than sent
        headers.push(`Content-Length: ${100 + int(1000)}`);
        body = pick(bodies).slice(0, 50);
        mayBeCut = true;
        break;
      case 5: // slow headers
        gapMs = 100 + int(200);
        mayBeCut = true;
        break;
      case 6: // half-closed mid-request
        endAfterWrite = true;
        mayBeCut = true;
        break;
      case 7: // chunked bodies, some broken
        headers.push('Transfer-Encoding: chunked');
        body = pick(['2\r\n{}\r\n0\r\n\r\n', 'zz\r\n{}\r\n0\r\n\r\n', '2\r\n{}', 'ffffffffff\r\n{}\r\n0\r\n\r\n', '0\r\n\r\n']);
        mayBeCut = true;
        break;
      default: // a small body of any sort, possibly with a lying length
        body = pick(bodies);
        if (rnd() < 0.2) headers.push(`Content-Length: ${int(60)}`);
        else if (body !== '') headers.push(`Content-Length: ${Buffer.byteLength(body)}`);
        if (body.length > 0 && !headers.some((h) => h.startsWith('Content-Length'))) mayBeCut = true;
        if (headers.some((h) => /^Content-Length: \d+$/.test(h) && Number(h.split(': ')[1]) > Buffer.byteLength(body))) mayBeCut = true;
    }

    // Mutations must never succeed: over TCP there is no valid token above; over the socket, a
    // well-formed JSON mutation is made invalid on purpose (a random field).
    const route = p.trim().split('?')[0]!;
    const jsonMutation = overSocket && method.trim() === 'POST' && ct === 'application/json' && ['/drain', '/undrain', '/backends/drain', '/backends/undrain'].includes(route);
    if (jsonMutation && kind !== 3 && kind !== 4) {
      body = JSON.stringify({ fuzz: int(1000) });
      const framing = /^(content-length|transfer-encoding):/i;
      for (let i = headers.length - 1; i >= 0; i--) if (framing.test(headers[i]!) || headers[i]!.includes('\r\n')) headers.splice(i, 1);
      headers.push(`Content-Length: ${Buffer.byteLength(body)}`);
    }

    let text: string;
    if (parts.length) text = parts.join('');
    else text = `${method} ${p} ${version}`.trimEnd() + '\r\n' + headers.map((h) => `${h}\r\n`).join('') + 'Connection: close\r\n\r\n' + body;
    const chunks: string[] = [];
    if (gapMs > 0) {
      // Split the header section into a few slow pieces; the whole thing takes longer than headersTimeout.
      const pieces = 3 + int(4);
      const size = Math.max(1, Math.ceil(text.length / pieces));
      for (let i = 0; i < text.length; i += size) chunks.push(text.slice(i, i + size));
    } else {
      chunks.push(text);
    }
    const readOnly = /^GET +\/(status|metrics)(\?[^ ]*)? +HTTP\/1\.[01]\r\n/.test(text);
    if (endAfterWrite && chunks.length === 1 && chunks[0]!.length > 4) chunks[0] = chunks[0]!.slice(0, 1 + int(chunks[0]!.length - 1));
    return { label: `${kind}:${JSON.stringify(text.slice(0, 60))}`, target, chunks, gapMs, endAfterWrite, mayBeCut, readOnly };
  };
}

export function verdict(c: FuzzCase, a: RawAnswer, deadlineMs: number): string | undefined {
  if (a.ending === 'timeout') return `neither answered nor cut within ${deadlineMs} ms`;
  if (a.status === undefined) return c.mayBeCut || a.ending === 'reset' ? undefined : `closed without a status (${a.ending})`;
  if (a.status >= 400 && a.status < 500) {
    // A HEAD answer has headers only.
    if (a.headers['content-type'] === 'application/json' && !c.chunks[0]!.toString().startsWith('HEAD ')) {
      try {
        const msg = (JSON.parse(a.body) as { error?: unknown }).error;
        if (typeof msg !== 'string' || msg === '') return `4xx without a message: ${a.body.slice(0, 80)}`;
      } catch {
        if (!c.mayBeCut) return `4xx body is not JSON: ${a.body.slice(0, 80)}`;
      }
    }
    return undefined;
  }
  if (a.status >= 200 && a.status < 300 && c.readOnly) return undefined;
  return `status ${a.status}`;
}

