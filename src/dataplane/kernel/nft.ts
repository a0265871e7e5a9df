import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VipdError } from '../../lib/errors';
import type { NftCommand } from './kernel-ruleset';
import { parseNftList } from './kernel-verify';

/**
 * The only place that runs `nft`. Writes are one `nft -j -f FILE` each, libnftables' JSON: nft sends the
 * whole file as one netlink batch, which the kernel commits atomically or not at all. (The JSON goes
 * through a private file rather than `-f -`: a Node child's stdin is a socket, which nft cannot open as
 * /dev/stdin.)
 */
export interface NftRunner {
  /** Checks that nft exists and that nftables answers this process (CAP_NET_ADMIN); throws VIPD_ERR_KERNEL with the reason. */
  probe(): Promise<void>;
  /** One atomic transaction. Throws VIPD_ERR_KERNEL with nft's message; nothing changed then. */
  apply(commands: readonly NftCommand[]): Promise<void>;
  /** `nft -j list table inet NAME`; undefined when the table does not exist. */
  listTable(table: string): Promise<NftCommand[] | undefined>;
  /** Removes the private directory of the JSON files. */
  close(): void;
}

const NFT_TIMEOUT_MS = 10_000;

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function createNftRunner(options: { readonly binary?: string } = {}): NftRunner {
  const binary = options.binary ?? 'nft';
  let dir: string | undefined;
  let serial = 0;

  const run = (args: readonly string[]): Promise<RunResult> =>
    new Promise((resolve, reject) => {
      execFile(binary, args, { timeout: NFT_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: string | number }) | null;
        if (e && e.code === 'ENOENT') {
          reject(new VipdError('VIPD_ERR_KERNEL', `"${binary}" was not found in PATH: the kernel data path needs nftables' nft (Debian package nftables)`, { cause: err }));
          return;
        }
        if (e && typeof e.code !== 'number' && e.code !== undefined) {
          reject(new VipdError('VIPD_ERR_KERNEL', `cannot run ${binary}: ${e.message}`, { cause: err }));
          return;
        }
        resolve({ code: e ? Number(e.code ?? 1) : 0, stdout, stderr });
      });
    });

  const failure = (what: string, result: RunResult): VipdError => {
    const text = result.stderr.trim().split('\n').filter((line) => line.trim() !== '').slice(0, 6).join('; ');
    if (/Operation not permitted|Permission denied/i.test(result.stderr)) {
      return new VipdError('VIPD_ERR_KERNEL', `${what}: nftables refused this process (Operation not permitted): the kernel data path needs CAP_NET_ADMIN (${text})`);
    }
    return new VipdError('VIPD_ERR_KERNEL', `${what}: nft exited ${result.code}: ${text || '(no message)'}`);
  };

  return {
    async probe() {
      const result = await run(['-j', 'list', 'tables']);
      if (result.code !== 0) throw failure('nftables is not usable', result);
    },
    async apply(commands) {
      dir ??= mkdtempSync(join(tmpdir(), 'vipd-nft-'));
      const file = join(dir, `write-${++serial}.json`);
      writeFileSync(file, JSON.stringify({ nftables: commands }), { mode: 0o600 });
      try {
        const result = await run(['-j', '-f', file]);
        if (result.code !== 0) throw failure('nftables refused the table', result);
      } finally {
        rmSync(file, { force: true });
      }
    },
    async listTable(table) {
      const result = await run(['-j', 'list', 'table', 'inet', table]);
      if (result.code !== 0) {
        if (/No such file or directory/.test(result.stderr)) return undefined;
        throw failure(`cannot read table inet ${table}`, result);
      }
      return parseNftList(result.stdout);
    },
    close() {
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      dir = undefined;
    },
  };
}
