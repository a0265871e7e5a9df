import { request } from 'node:http';
import type { Endpoint } from '../net/endpoint';
import { VipdError } from '../lib/errors';

/** Calls the daemon's admin API; errors say which address was tried. */
export function adminRequest(admin: Endpoint, method: 'GET' | 'POST', path: string, body?: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers = body !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : undefined;
    const req = request({ host: admin.host, port: admin.port, method, path, timeout: timeoutMs, ...(headers ? { headers } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs}ms`)));
    req.on('error', (err) =>
      reject(new VipdError('VIPD_ERR_ADMIN', `cannot reach vipd's admin API at http://${admin.key}${path}: ${(err as NodeJS.ErrnoException).code ?? err.message} (is vipd running with this config?)`, { cause: err })),
    );
    req.end(body);
  });
}
