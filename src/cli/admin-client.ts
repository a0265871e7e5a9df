import { request, type OutgoingHttpHeaders } from 'node:http';
import type { Endpoint } from '../net/endpoint';
import { VipdError } from '../lib/errors';

/** Where the CLI asks: the daemon's unix socket, or its loopback TCP port (with a token for mutations). */
export type AdminTarget = { readonly socket: string } | { readonly tcp: Endpoint; readonly token?: string };

export function describeTarget(target: AdminTarget): string {
  return 'socket' in target ? target.socket : `http://${target.tcp.key}`;
}

/** A call that never reached the daemon; `code` is the platform's (ENOENT, EACCES, ECONNREFUSED...). */
export class AdminUnreachableError extends VipdError {
  constructor(
    readonly target: AdminTarget,
    readonly errno: string,
    cause: unknown,
  ) {
    super('VIPD_ERR_ADMIN', `cannot reach vipd's admin API at ${describeTarget(target)}: ${errno}`, { cause });
    this.name = 'AdminUnreachableError';
  }

  /** Nothing is listening there: the daemon is not running (or runs with another config). */
  get notRunning(): boolean {
    return this.errno === 'ENOENT' || this.errno === 'ECONNREFUSED';
  }
}

/**
 * Calls the daemon's admin API. Mutations send `{}` or their body as application/json (the server
 * refuses anything else); over TCP the token goes in Authorization.
 */
export function adminRequest(target: AdminTarget, method: 'GET' | 'POST', path: string, body?: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const payload = method === 'POST' ? (body ?? '{}') : undefined;
    const headers: OutgoingHttpHeaders = {};
    if (payload !== undefined) Object.assign(headers, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    if ('tcp' in target && target.token !== undefined) headers.authorization = `Bearer ${target.token}`;
    const where = 'socket' in target ? { socketPath: target.socket, host: 'localhost' } : { host: target.tcp.host, port: target.tcp.port };
    const req = request({ ...where, method, path, timeout: timeoutMs, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs}ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new AdminUnreachableError(target, err.code ?? err.message, err)));
    req.end(payload);
  });
}
