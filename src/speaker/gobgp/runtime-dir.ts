import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/**
 * The private directory of a managed gobgpd (config, API socket, log) is
 * `<runtimeDir>/vipd-gobgpd-<vipd's pid>-<6 random characters from mkdtemp>`. The pid in the name is
 * what lets a later vipd tell a directory left behind by a vipd killed with SIGKILL (which cannot
 * clean up) from one in use.
 */
const PRIVATE_DIR = /^vipd-gobgpd-(\d+)-[A-Za-z0-9]{6}$/;

/** The subdirectory of a private directory that gobgpd's own user owns, for its API socket. */
export const API_SOCKET_DIR = 'api';

/** The mkdtemp prefix of this process's private directory. */
export function privateDirPrefix(runtimeDir: string, pid: number = process.pid): string {
  return path.join(runtimeDir, `vipd-gobgpd-${pid}-`);
}

export interface StaleDir {
  readonly dir: string;
  readonly ownerPid: number;
}

export interface StaleDirProbes {
  /** True while a process with this pid exists (default: kill(pid, 0)). */
  readonly isRunning?: (pid: number) => boolean;
  /** How long a connect to a leftover API socket may take before it counts as dead. */
  readonly socketTimeoutMs?: number;
}

/**
 * Removes the private directories of vipd instances that are gone. A directory is removed only when
 * all of these hold, so that nothing another vipd still uses is touched:
 * - its name is vipd-gobgpd-<pid>-<mkdtemp suffix>, it is a real directory (not a symlink) owned by this user;
 * - no process has that pid;
 * - its API socket (api/api.sock, or api.sock from older versions), if there is one, refuses connections. This covers a vipd in another PID
 *   namespace sharing the directory, whose pid means nothing here: its gobgpd still answers. (With
 *   a TCP API there is no socket in the directory; instances in separate PID namespaces then need
 *   separate runtime directories.)
 * Directories of older versions (no pid in the name) are left alone. Returns what was removed.
 */
export async function removeStaleDirs(runtimeDir: string, probes: StaleDirProbes = {}): Promise<StaleDir[]> {
  const isRunning = probes.isRunning ?? processExists;
  const socketTimeoutMs = probes.socketTimeoutMs ?? 500;
  let names: string[];
  try {
    names = await fs.promises.readdir(runtimeDir);
  } catch {
    return [];
  }
  const uid = process.getuid?.();
  const removed: StaleDir[] = [];
  for (const name of names) {
    const match = PRIVATE_DIR.exec(name);
    if (match === null) continue;
    const ownerPid = Number(match[1]);
    if (ownerPid === process.pid || isRunning(ownerPid)) continue;
    const dir = path.join(runtimeDir, name);
    const stat = await fs.promises.lstat(dir).catch(() => undefined);
    if (stat === undefined || !stat.isDirectory() || (uid !== undefined && stat.uid !== uid)) continue;
    const sockets = [path.join(dir, API_SOCKET_DIR, 'api.sock'), path.join(dir, 'api.sock')];
    if ((await Promise.all(sockets.map((s) => socketAnswers(s, socketTimeoutMs)))).some(Boolean)) continue;
    await fs.promises.rm(dir, { recursive: true, force: true });
    removed.push({ dir, ownerPid });
  }
  return removed;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** False when the socket is missing or refuses; true when something accepts (or the connect hangs). */
function socketAnswers(socketPath: string, timeoutMs: number): Promise<boolean> {
  if (!fs.existsSync(socketPath)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    const done = (answers: boolean): void => {
      socket.destroy();
      resolve(answers);
    };
    socket.setTimeout(timeoutMs, () => done(true));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
