import { connect, type Socket } from 'node:net';

/** Where a raw request goes: a TCP port on 127.0.0.1, or a unix socket path. */
export type RawTarget = { readonly port: number; readonly host?: string } | { readonly path: string };

export interface RawAnswer {
  /** The status of the first response, undefined when the connection ended without one. */
  readonly status: number | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** How the exchange ended: a full response, the server closing (FIN or RST) without one, or our own timeout. */
  readonly ending: 'answered' | 'closed' | 'reset' | 'timeout';
  readonly ms: number;
}

export function openRaw(target: RawTarget): Socket {
  return 'path' in target ? connect({ path: target.path }) : connect({ host: target.host ?? '127.0.0.1', port: target.port });
}

/**
 * Writes `chunks` as they are (bytes the http module would refuse to send), `gapMs` apart, and reads
 * the first response: headers, then content-length bytes of body (or until close). Never rejects.
 */
export function rawExchange(target: RawTarget, chunks: ReadonlyArray<string | Buffer>, opts: { gapMs?: number; timeoutMs?: number; endAfterWrite?: boolean } = {}): Promise<RawAnswer> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = openRaw(target);
    let received = Buffer.alloc(0);
    let done = false;
    const finish = (ending: RawAnswer['ending']) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const parsed = parseResponse(received);
      resolve({ ...parsed, ending: parsed.status !== undefined && ending !== 'timeout' ? 'answered' : ending, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish('timeout'), opts.timeoutMs ?? 5000);
    socket.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d]);
      if (responseComplete(received)) finish('answered');
    });
    socket.on('end', () => finish('closed'));
    socket.on('close', () => finish('closed'));
    socket.on('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'reset' : 'closed'));
    socket.once('connect', async () => {
      for (const [i, chunk] of chunks.entries()) {
        if (done || socket.destroyed) return;
        if (i > 0 && opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
        if (done || socket.destroyed) return;
        socket.write(chunk);
      }
      if (opts.endAfterWrite) socket.end();
    });
  });
}

function headerEnd(buf: Buffer): number {
  return buf.indexOf('\r\n\r\n');
}

function responseComplete(buf: Buffer): boolean {
  const end = headerEnd(buf);
  if (end === -1) return false;
  const head = buf.subarray(0, end).toString('latin1');
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  return m !== null && buf.length - (end + 4) >= Number(m[1]);
}

function parseResponse(buf: Buffer): { status: number | undefined; headers: Record<string, string>; body: string } {
  const end = headerEnd(buf);
  if (end === -1) return { status: undefined, headers: {}, body: '' };
  const [statusLine, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: m ? Number(m[1]) : undefined, headers, body: buf.subarray(end + 4).toString('utf8') };
}

/** A well-formed request, as raw bytes. */
export function httpRequest(method: string, path: string, headers: Record<string, string> = {}, body = ''): string {
  const all: Record<string, string> = { host: 'localhost', connection: 'close', ...headers };
  if (body !== '' && all['content-length'] === undefined) all['content-length'] = String(Buffer.byteLength(body));
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(all)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n${body}`;
}
