import { VIP } from './configs';
import { run, runOk, sleep } from './util';

/**
 * The benchmark's network namespace: its own loopback with the VIP on it, so nothing the benchmark
 * does reaches (or collides with) the host's network, and removing it removes every socket with it.
 * Named `vbench<pid of the benchmark>`, so two runs never share one and a leftover can be traced to
 * the run that made it.
 */

export const NS_PREFIX = 'vbench';

export function namespaceName(pid: number = process.pid): string {
  return `${NS_PREFIX}${pid}`;
}

/**
 * Per-namespace TCP settings. A wide ephemeral port range and TIME_WAIT reuse keep the new-connection
 * test from running out of ports on its tens of thousands of connections (in a proxied path the
 * proxy's connect()s to the backend draw from the same range). The range starts above every port the
 * benchmark listens on (configs.ts: all below 10000): a proxy is started again for every block, and
 * its bind would fail if a client socket of the previous block still held that port as its own.
 * somaxconn lets the backend's backlog of 4096 take effect.
 */
const SYSCTLS: Record<string, string> = {
  'net.ipv4.ip_local_port_range': '10000 65535',
  'net.ipv4.tcp_tw_reuse': '1',
  'net.core.somaxconn': '4096',
};

export async function createNamespace(ns: string): Promise<void> {
  await runOk(['ip', 'netns', 'add', ns]);
  await runOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  await runOk(['ip', '-n', ns, 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  for (const [key, value] of Object.entries(SYSCTLS)) await runOk(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`]);
}

export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', ns]);
  if (r.code !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

export async function namespaceExists(ns: string): Promise<boolean> {
  const r = await run(['ip', 'netns', 'list']);
  return r.stdout.split('\n').some((line) => line.split(' ')[0] === ns);
}

function kill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Ends every process still inside the namespace (all of them started by this run: nothing else
 * enters it), SIGTERM first and SIGKILL to the rest after graceMs, then deletes the namespace.
 * Returns what could not be removed, for the final report (empty when all went well).
 */
export async function destroyNamespace(ns: string, graceMs = 1500): Promise<string[]> {
  const leftovers: string[] = [];
  let pids = (await namespacePids(ns)).filter((p) => p !== process.pid);
  for (const pid of pids) kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.length > 0 && Date.now() < deadline) {
    await sleep(100);
    pids = (await namespacePids(ns)).filter((p) => p !== process.pid);
  }
  for (const pid of pids) kill(pid, 'SIGKILL');
  if (pids.length > 0) await sleep(200);
  const still = (await namespacePids(ns)).filter((p) => p !== process.pid);
  if (still.length > 0) leftovers.push(`processes ${still.join(', ')} in ${ns}`);
  if (await namespaceExists(ns)) {
    const r = await run(['ip', 'netns', 'del', ns]);
    if (r.code !== 0) leftovers.push(`namespace ${ns}: ${r.stderr.trim()}`);
  }
  return leftovers;
}

/**
 * Namespaces left by earlier runs that were killed too hard to clean up (SIGKILL of the benchmark and
 * of its reaper). Only those whose creating process is gone are returned, so a run going on in
 * another shell is never touched.
 */
export async function staleNamespaces(): Promise<string[]> {
  const r = await run(['ip', 'netns', 'list']);
  const stale: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${NS_PREFIX}(\\d+)$`).exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive) stale.push(name);
  }
  return stale;
}
