import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { canonicalAddress } from '../../net/address';
import type { Endpoint } from '../../net/endpoint';

/**
 * Connections of the kernel data path as conntrack sees them: the open ones per listener and backend
 * (read from /proc/net/nf_conntrack, or `conntrack -L` where procfs lacks it), and the deletion of a
 * backend's entries when its pool closes connections on mark-down (`conntrack -D`, Debian package
 * conntrack). vipd never sees these connections itself; this is the only view it has of them.
 */

/** States of a TCP connection that is still open (TIME_WAIT and CLOSE are over). */
const OPEN_STATES = new Set(['SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'SYN_SENT2']);

export interface ConntrackFlowKey {
  /** Listener id, for the result's keys. */
  readonly listener: string;
  readonly vipAddress: string;
  readonly port: number;
}

/** `${listener}\u0000${backendKey}` → open connections. */
export type ConntrackCounts = Map<string, number>;

export function flowCountKey(listener: string, backendKey: string): string {
  return `${listener}\u0000${backendKey}`;
}

function endpointKey(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Counts open TCP connections per listener and backend in conntrack's text (one entry per line:
 * `ipv4 2 tcp 6 431999 ESTABLISHED src=C dst=VIP sport=.. dport=PORT src=BACKEND dst=.. sport=BPORT ..`,
 * the original tuple first, the reply tuple second; `conntrack -L` prints the same without the first
 * two columns). Pure.
 */
export function countOpenConnections(text: string, listeners: readonly ConntrackFlowKey[]): ConntrackCounts {
  const byVip = new Map<string, ConntrackFlowKey>();
  for (const l of listeners) byVip.set(endpointKey(canonicalAddress(l.vipAddress) ?? l.vipAddress, l.port), l);
  const counts: ConntrackCounts = new Map();
  for (const line of text.split('\n')) {
    if (!line.includes(' tcp ')) continue;
    const fields = line.trim().split(/\s+/);
    const state = fields.find((f) => OPEN_STATES.has(f));
    if (state === undefined) continue;
    const src: string[] = [];
    const dst: string[] = [];
    const sport: string[] = [];
    const dport: string[] = [];
    for (const f of fields) {
      if (f.startsWith('src=')) src.push(f.slice(4));
      else if (f.startsWith('dst=')) dst.push(f.slice(4));
      else if (f.startsWith('sport=')) sport.push(f.slice(6));
      else if (f.startsWith('dport=')) dport.push(f.slice(6));
    }
    if (dst.length < 2 || src.length < 2 || sport.length < 2 || dport.length < 1) continue;
    const vip = canonicalAddress(dst[0]!);
    if (vip === undefined) continue;
    const listener = byVip.get(endpointKey(vip, Number(dport[0])));
    if (listener === undefined) continue;
    const backendHost = canonicalAddress(src[1]!);
    if (backendHost === undefined) continue;
    const key = flowCountKey(listener.listener, endpointKey(backendHost, Number(sport[1])));
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

export interface ConntrackTool {
  /** Conntrack's table as text (procfs, else `conntrack -L`); undefined when neither is available. */
  list(): Promise<string | undefined>;
  /**
   * Deletes the entries of connections to VIP:port that were rewritten to `backend`. Resolves to the
   * number deleted, or rejects with the reason (the conntrack tool missing, above all).
   */
  deleteFlows(vipAddress: string, port: number, backend: Endpoint): Promise<number>;
}

function run(binary: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string; missing: boolean }> {
  return new Promise((resolve) => {
    execFile(binary, args, { timeout: 10_000, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: string | number }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout, stderr, missing: e?.code === 'ENOENT' });
    });
  });
}

export function createConntrackTool(options: { readonly binary?: string; readonly procFile?: string } = {}): ConntrackTool {
  const binary = options.binary ?? 'conntrack';
  const procFile = options.procFile ?? '/proc/net/nf_conntrack';
  return {
    async list() {
      const text = await readFile(procFile, 'utf8').catch(() => undefined);
      if (text !== undefined) return text;
      const result = await run(binary, ['-L', '-p', 'tcp']);
      return result.code === 0 ? result.stdout : undefined;
    },
    async deleteFlows(vipAddress, port, backend) {
      const family = isIP(vipAddress) === 6 ? 'ipv6' : 'ipv4';
      const result = await run(binary, [
        '-D', '-f', family, '-p', 'tcp',
        '--orig-dst', vipAddress, '--orig-port-dst', String(port),
        '--reply-src', backend.host, '--reply-port-src', String(backend.port),
      ]);
      if (result.missing) throw new Error(`"${binary}" was not found in PATH (Debian package conntrack): established connections are left to finish`);
      // conntrack -D exits 1 with "0 flow entries have been deleted" when there was nothing to delete.
      const deleted = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(result.stderr);
      if (deleted) return Number(deleted[1]);
      if (result.code !== 0) throw new Error(`conntrack -D exited ${result.code}: ${result.stderr.trim().split('\n')[0] ?? ''}`);
      return 0;
    },
  };
}
