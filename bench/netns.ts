import { BACKEND_HOST, BALANCER_BACKEND_SIDE, BALANCER_CLIENT_SIDE, CHECKS_VIP, CLIENT_HOST, VIP } from './configs';
import { run, runOk, sleep } from './util';

/**
 * The benchmark's routed topology: three network namespaces joined by two veth pairs, so that a
 * kernel data path (DNAT on the balancer) really forwards packets, and every path runs through the
 * same hops:
 *
 *   client ns (wrk, curl, idle client; the benchmark's inner role)  198.18.101.2/24
 *      | veth
 *   balancer ns (the proxies; VIP 198.18.99.1/32 on lo; ip_forward=1)  198.18.101.1/24, 198.18.102.1/24
 *      | veth
 *   backend ns (nginx)  198.18.102.2/24
 *
 * The client's and the backend's default routes point at the balancer. "direct" is the client talking
 * to the backend's address: routed through the balancer namespace, no proxy, no NAT.
 *
 * Named `vbench<pid>c|b|s`, so two runs never share one and a leftover can be traced to the run that
 * made it. Removing the namespaces removes every socket with them.
 */

export const NS_PREFIX = 'vbench';

export interface Namespaces {
  readonly client: string;
  readonly balancer: string;
  readonly backend: string;
}

export function namespaceNames(pid: number = process.pid): Namespaces {
  return { client: `${NS_PREFIX}${pid}c`, balancer: `${NS_PREFIX}${pid}b`, backend: `${NS_PREFIX}${pid}s` };
}

export function allNamespaces(n: Namespaces): string[] {
  return [n.client, n.balancer, n.backend];
}

/**
 * TCP settings per namespace.
 * - `tuned` (the tables): a wide ephemeral port range and TIME_WAIT reuse, so that tens of thousands of
 *   new connections per block never run short of ports. The range starts above every port the
 *   benchmark listens on (configs.ts: all below 10000).
 * - `default` (the default-sysctl block): the kernel's own values for a new namespace, read from the
 *   namespaces right after they are made (32768-60999 and tcp_tw_reuse=2, loopback only, on the
 *   kernels here), because that is what users run.
 * somaxconn is set in both, so that the backend's backlog of 4096 takes effect (it is the kernel's
 * default since 5.4 anyway).
 */
export type SysctlProfile = 'tuned' | 'default';
const TUNED: Record<string, string> = {
  'net.ipv4.ip_local_port_range': '10000 65535',
  'net.ipv4.tcp_tw_reuse': '1',
};
const PROFILE_KEYS = Object.keys(TUNED);

/** The kernel's defaults for PROFILE_KEYS in a fresh namespace, read by createNamespaces(). */
let kernelDefaults: Record<string, string> | undefined;

export function defaultSysctls(): Readonly<Record<string, string>> | undefined {
  // The inner role is another process: the outer one hands the values over in the environment.
  if (kernelDefaults === undefined && process.env.VBENCH_DEFAULT_SYSCTLS) {
    const parsed = JSON.parse(process.env.VBENCH_DEFAULT_SYSCTLS) as Record<string, string>;
    if (PROFILE_KEYS.every((k) => typeof parsed[k] === 'string')) kernelDefaults = parsed;
  }
  return kernelDefaults;
}

async function sysctlGet(ns: string, key: string): Promise<string> {
  const r = await runOk(['ip', 'netns', 'exec', ns, 'sysctl', '-n', key]);
  return r.stdout.trim().replace(/\s+/g, ' ');
}

async function sysctlSet(ns: string, key: string, value: string): Promise<void> {
  await runOk(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`]);
}

/** Sets a profile in all three namespaces. */
export async function applySysctls(n: Namespaces, profile: SysctlProfile): Promise<Record<string, string>> {
  const values = profile === 'tuned' ? TUNED : defaultSysctls();
  if (values === undefined) throw new Error('the kernel defaults were not read (createNamespaces first)');
  for (const ns of allNamespaces(n)) for (const [k, v] of Object.entries(values)) await sysctlSet(ns, k, v);
  return { ...values };
}

/** Reads the profile's keys back from each namespace (printed in the block's header). */
export async function readSysctls(n: Namespaces): Promise<string> {
  const parts: string[] = [];
  for (const key of PROFILE_KEYS) {
    const values = new Set<string>();
    for (const ns of allNamespaces(n)) values.add(await sysctlGet(ns, key));
    parts.push(`${key.replace('net.ipv4.', '')} = ${[...values].join(' | ')}`);
  }
  return parts.join(', ');
}

/** CPU mask of the proxy core (core 0, see bench/run.ts's pinning). */
const PROXY_CORE_MASK = '1';

export async function createNamespaces(n: Namespaces, rpsOnProxyCore = false): Promise<void> {
  const pid = n.client.slice(NS_PREFIX.length, -1);
  for (const ns of allNamespaces(n)) {
    await runOk(['ip', 'netns', 'add', ns]);
    await runOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }
  // Interface names are unique per run (a veth is briefly named in the namespace it is made from).
  const cb = [`vbc${pid}`, `vbbc${pid}`];
  const bs = [`vbbs${pid}`, `vbs${pid}`];
  await runOk(['ip', 'link', 'add', cb[0]!, 'netns', n.client, 'type', 'veth', 'peer', 'name', cb[1]!, 'netns', n.balancer]);
  await runOk(['ip', 'link', 'add', bs[0]!, 'netns', n.balancer, 'type', 'veth', 'peer', 'name', bs[1]!, 'netns', n.backend]);
  const addr = async (ns: string, cidr: string, dev: string) => {
    await runOk(['ip', '-n', ns, 'addr', 'add', cidr, 'dev', dev]);
    await runOk(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  };
  await addr(n.client, `${CLIENT_HOST}/24`, cb[0]!);
  await addr(n.balancer, `${BALANCER_CLIENT_SIDE}/24`, cb[1]!);
  await addr(n.balancer, `${BALANCER_BACKEND_SIDE}/24`, bs[0]!);
  await addr(n.backend, `${BACKEND_HOST}/24`, bs[1]!);
  await runOk(['ip', '-n', n.client, 'route', 'add', 'default', 'via', BALANCER_CLIENT_SIDE]);
  await runOk(['ip', '-n', n.backend, 'route', 'add', 'default', 'via', BALANCER_BACKEND_SIDE]);
  // The VIP on the balancer's lo (vipd refuses a loopback VIP, and the proxies bind it); the checks
  // block's own VIP on the client's lo, where that block runs on loopback alone.
  await runOk(['ip', '-n', n.balancer, 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  await runOk(['ip', '-n', n.client, 'addr', 'add', `${CHECKS_VIP}/32`, 'dev', 'lo']);
  await sysctlSet(n.balancer, 'net.ipv4.ip_forward', '1');
  // A veth delivers a packet in the sender's context, so without this the balancer's conntrack, NAT
  // and forwarding run on the load core; RPS moves them to the proxy core, as a real NIC's queues would.
  if (rpsOnProxyCore) {
    for (const dev of [cb[1]!, bs[0]!]) {
      await runOk(['ip', 'netns', 'exec', n.balancer, 'sh', '-c', `echo ${PROXY_CORE_MASK} > /sys/class/net/${dev}/queues/rx-0/rps_cpus`]);
    }
  }
  const defaults: Record<string, string> = {};
  for (const key of PROFILE_KEYS) defaults[key] = await sysctlGet(n.client, key);
  kernelDefaults = defaults;
  for (const ns of allNamespaces(n)) await sysctlSet(ns, 'net.core.somaxconn', '4096');
  await applySysctls(n, 'tuned');
}

/**
 * Gives the client a new source address for the next block (a secondary address on its veth, made
 * the default route's preferred source). TIME_WAIT sockets are per 4-tuple: with a fresh source, the
 * TIME_WAITs a previous block left on the client (60 s each) cannot slow this block's connect()s, so
 * the order of the paths does not matter. Returns the address.
 */
let sourceCounter = 0;
export async function freshClientSource(n: Namespaces): Promise<string> {
  const address = `198.18.101.${10 + (sourceCounter++ % 240)}`;
  const dev = (await runOk(['ip', '-n', n.client, '-o', 'route', 'get', BALANCER_CLIENT_SIDE])).stdout.match(/dev (\S+)/)?.[1];
  if (!dev) throw new Error('cannot find the client veth');
  await run(['ip', '-n', n.client, 'addr', 'add', `${address}/24`, 'dev', dev]);
  await runOk(['ip', '-n', n.client, 'route', 'replace', 'default', 'via', BALANCER_CLIENT_SIDE, 'src', address]);
  return address;
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
 * Ends every process still inside the namespaces (all of them started by this run: nothing else
 * enters them), SIGTERM first and SIGKILL to the rest after graceMs, then deletes the namespaces (the
 * veth pairs go with them). Returns what could not be removed (empty when all went well).
 */
export async function destroyNamespaces(names: readonly string[], graceMs = 1500): Promise<string[]> {
  const leftovers: string[] = [];
  const pidsOf = async () => (await Promise.all(names.map(namespacePids))).flat().filter((p) => p !== process.pid);
  let pids = await pidsOf();
  for (const pid of pids) kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.length > 0 && Date.now() < deadline) {
    await sleep(100);
    pids = await pidsOf();
  }
  for (const pid of pids) kill(pid, 'SIGKILL');
  if (pids.length > 0) await sleep(200);
  const still = await pidsOf();
  if (still.length > 0) leftovers.push(`processes ${still.join(', ')} in ${names.join(', ')}`);
  for (const ns of names) {
    if (await namespaceExists(ns)) {
      const r = await run(['ip', 'netns', 'del', ns]);
      if (r.code !== 0) leftovers.push(`namespace ${ns}: ${r.stderr.trim()}`);
    }
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
    const m = new RegExp(`^${NS_PREFIX}(\\d+)[cbs]?$`).exec(name);
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
