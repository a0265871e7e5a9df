import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { connect } from 'node:net';
import * as path from 'node:path';
import { VipdError } from '../lib/errors';

/** How long a leftover socket file gets to answer before it is called stale. */
const STALE_PROBE_MS = 1000;

/**
 * The gid of `admin.socketGroup` (a name or a number). A name that no group has is a start error
 * naming the key: a typo must not leave the socket to a group nobody meant.
 */
export function resolveGroup(group: string | number): number {
  if (typeof group === 'number') return group;
  try {
    // getent asks NSS (LDAP, sssd), not only /etc/group.
    const line = execFileSync('getent', ['group', group], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const gid = Number(line.split(':')[2]);
    if (Number.isInteger(gid)) return gid;
  } catch {
    // no such group (exit 2), or no getent: fall back to /etc/group below
  }
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const [name, , gid] = line.split(':');
      if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
    }
  } catch {
    // not readable: reported as missing below
  }
  throw new VipdError('VIPD_ERR_ADMIN', `admin.socketGroup: no group "${group}" on this node (create it, or leave socketGroup unset)`);
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = connect({ path: socketPath });
    const timer = setTimeout(() => {
      probe.destroy();
      // Accepted but silent is still someone listening.
      resolve(true);
    }, STALE_PROBE_MS);
    probe.once('connect', () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(err);
    });
  });
}

/**
 * Makes `socketPath` ready to listen on: creates its directory (0750, owned by the socket's group
 * so that members can reach the socket) when missing, and removes a stale socket file left by a vipd
 * that died, but only when nothing answers on it. A live vipd on the same path, or a file that is
 * not a socket, is a start error: never steal another daemon's admin socket.
 */
export async function prepareSocketPath(socketPath: string, gid: number | undefined): Promise<void> {
  const where = `admin.socket ${socketPath}`;
  if (Buffer.byteLength(socketPath) > 107) throw new VipdError('VIPD_ERR_ADMIN', `${where}: longer than 107 bytes, the limit of a unix socket path; set admin.socket`);
  const dir = path.dirname(socketPath);
  if (!fs.existsSync(dir)) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
      fs.chmodSync(dir, 0o750);
      if (gid !== undefined) fs.chownSync(dir, -1, gid);
    } catch (err) {
      throw new VipdError('VIPD_ERR_ADMIN', `${where}: cannot create ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  }
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new VipdError('VIPD_ERR_ADMIN', `${where}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  if (!stat.isSocket()) throw new VipdError('VIPD_ERR_ADMIN', `${where}: exists and is not a socket; refusing to replace it`);
  let live: boolean;
  try {
    live = await answers(socketPath);
  } catch (err) {
    throw new VipdError('VIPD_ERR_ADMIN', `${where}: cannot tell whether it is in use: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  if (live) throw new VipdError('VIPD_ERR_ADMIN', `${where}: another process (a vipd already running?) answers on it; refusing to start`);
  fs.unlinkSync(socketPath);
}

/** After listen(): 0660 and the configured group, so exactly root and the group's members may connect. */
export function restrictSocket(socketPath: string, gid: number | undefined): void {
  try {
    if (gid !== undefined) fs.chownSync(socketPath, -1, gid);
    fs.chmodSync(socketPath, 0o660);
  } catch (err) {
    throw new VipdError('VIPD_ERR_ADMIN', `admin.socket ${socketPath}: cannot set its owner and mode: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}
