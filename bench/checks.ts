import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHECKS_VIP as VIP } from './configs';
import type { BenchOptions } from './options';
import { cpuMeter, startProcess, treeRssKiB, type Managed } from './procs';
import { median, progress, run, sleep, waitFor } from './util';

/**
 * The "checks" block (issue 10, "Cost of checking"): what 1,000 backends with a health check every
 * second cost the checking process, vipd next to HAProxy 2.6 checking the same 1,000 servers, for
 * tcp and http checks. The backends are 127.0.x.y:8090 of the benchmark namespace's loopback (all of
 * 127/8 is local), served by one nginx on core 1; the checker under test runs alone on core 0 and
 * carries no traffic, so its CPU is the checks' cost. The checks each one really made are counted at
 * the backends (SYNs to the check port, an nftables counter), so a checker that skips checks cannot
 * look cheap. Run with `npm run bench -- --only checks`.
 */

export const CHECK_BACKENDS = 1000;
const CHECK_PORT = 8090;
const STATUS_PORT = 8091;
const CHECKER_PORTS = { vipd: 8011, haproxy: 8012 } as const;
const VIPD_ADMIN_PORT = 9181;

type Checker = keyof typeof CHECKER_PORTS;
type Kind = 'tcp' | 'http';
const KINDS: readonly Kind[] = ['tcp', 'http'];

/** Targets: ≤ 5 % of a core for 1,000 tcp checks/s; ≤ 2× HAProxy per check for http. */
const TCP_CPU_TARGET_PERCENT = 5;
const HTTP_RATIO_TARGET = 2;

interface CheckFigures {
  readonly checksPerSecond: number;
  readonly cpuPercent: number;
  /** Of cpuPercent, the part in the kernel (on loopback that includes the backend's side of each handshake). */
  readonly systemPercent: number;
  readonly cpuUsPerCheck: number;
  readonly rssMiB: number;
}

export interface ChecksEnv {
  readonly dir: string;
  readonly vipdBin: string;
  readonly checkerCores: string;
  readonly backendCores: string;
  readonly nofile: number;
}

export function checkBackends(): string[] {
  return Array.from({ length: CHECK_BACKENDS }, (_, i) => `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}:${CHECK_PORT}`);
}

function backendConf(dir: string, nofile: number): string {
  return `daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile ${nofile};
pid ${path.join(dir, 'checks-backend.pid')};
error_log ${path.join(dir, 'checks-backend.error.log')} warn;
events { worker_connections ${nofile - 100}; }
http {
  access_log off;
${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((m) => `  ${m}_temp_path ${path.join(dir, 'tmp', `checks-${m}`)};`).join('\n')}
  server {
    listen ${CHECK_PORT} backlog=4096;
    location / { return 200 "ok\\n"; }
  }
  server {
    listen 127.0.0.1:${STATUS_PORT};
    location = /status { stub_status; }
  }
}
`;
}

function vipdConf(dir: string, kind: Kind): Record<string, unknown> {
  return {
    node: { name: 'bench-checks' },
    stateDir: path.join(dir, 'vipd-checks-state'),
    admin: { listen: `127.0.0.1:${VIPD_ADMIN_PORT}`, socket: path.join(dir, 'vipd-checks.sock') },
    net: { interface: 'lo', manageAddresses: false },
    shutdown: { grace: '0s' },
    speaker: { driver: 'none' },
    vips: [{ name: 'checks', address: VIP, listeners: [{ port: CHECKER_PORTS.vipd, pool: 'checks' }] }],
    pools: {
      checks: {
        backends: checkBackends(),
        check: { kind, interval: '1s', timeout: '1s', rise: 2, fall: 2, ...(kind === 'http' ? { path: '/' } : {}) },
      },
    },
  };
}

function haproxyConf(kind: Kind): string {
  const servers = checkBackends().map((b, i) => `  server s${i} ${b} check inter 1s rise 2 fall 2`);
  return `global
  nbthread 1
  maxconn 4000

defaults
  mode tcp
  timeout connect 1s
  timeout check 1s
  timeout client 1m
  timeout server 1m

frontend vip
  bind ${VIP}:${CHECKER_PORTS.haproxy}
  default_backend pool

backend pool
${kind === 'http' ? '  option httpchk GET /\n  http-check expect status 200\n' : ''}${servers.join('\n')}
`;
}

async function backendUp(): Promise<boolean> {
  const r = await run(['curl', '-sS', '--max-time', '2', `http://127.0.0.1:${STATUS_PORT}/status`]);
  return r.code === 0 && r.stdout.includes('server accepts handled');
}

/**
 * Check connections that reached the backends: SYNs to the check port, counted by an nftables rule in
 * the benchmark's namespace (the inner benchmark runs in it). Counted at SYN, not at accept(): HAProxy's
 * tcp check answers the SYN-ACK with an RST (quick-ack off and nothing to send), so its checks never
 * complete a handshake and never reach nginx's accept counter.
 */
const NFT_TABLE = 'vbench_checks';
async function installSynCounter(): Promise<void> {
  await run(['nft', 'delete', 'table', 'inet', NFT_TABLE]);
  const rules = `table inet ${NFT_TABLE} {
  counter syns { }
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport ${CHECK_PORT} tcp flags & (syn | ack) == syn counter name syns
  }
}
`;
  const r = await run(['nft', '-f', '-'], { input: rules });
  if (r.code !== 0) throw new Error(`nft: ${r.stderr.trim()}`);
}

async function checkSyns(): Promise<number> {
  const r = await run(['nft', '-j', 'list', 'counter', 'inet', NFT_TABLE, 'syns']);
  const found = /"packets":\s*(\d+)/.exec(r.stdout);
  if (!found) throw new Error(`nft counter unreadable: ${r.stdout}${r.stderr}`);
  return Number(found[1]);
}

/** Kernel-mode CPU seconds of one process (stat field 15), for the user/system split. */
function systemSeconds(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(fields[12]) / CLOCK_TICKS;
}
const CLOCK_TICKS = 100;

/** Warm-up: every checker has started every backend's schedule and reached its steady state. */
function timings(opts: BenchOptions): { warmupS: number; measureS: number } {
  return opts.quick ? { warmupS: 4, measureS: 8 } : { warmupS: 6, measureS: 20 };
}

async function measureOne(checker: Checker, kind: Kind, env: ChecksEnv, opts: BenchOptions, round: number): Promise<CheckFigures> {
  const logFile = path.join(env.dir, 'logs', `checks-${checker}-${kind}-${round}.log`);
  let argv: string[];
  if (checker === 'vipd') {
    const file = path.join(env.dir, `vipd-checks-${kind}.json`);
    fs.writeFileSync(file, `${JSON.stringify(vipdConf(env.dir, kind), null, 2)}\n`);
    const refused = await run([process.execPath, env.vipdBin, 'check-config', file], { timeoutMs: 30_000 });
    if (refused.code !== 0) throw new Error(`vipd check-config refused the checks config: ${(refused.stderr || refused.stdout).trim()}`);
    const profile = process.env['VIPD_BENCH_CHECKS_PROFILE'];
    argv = [process.execPath, ...(profile ? ['--cpu-prof', '--cpu-prof-dir', profile] : []), env.vipdBin, 'run', '--config', file];
  } else {
    const file = path.join(env.dir, `haproxy-checks-${kind}.cfg`);
    fs.writeFileSync(file, haproxyConf(kind));
    argv = ['haproxy', '-db', '-f', file];
  }
  const proc: Managed = startProcess(`checks-${checker}`, argv, { cores: env.checkerCores, nofile: env.nofile, logFile });
  try {
    const { warmupS, measureS } = timings(opts);
    await sleep(warmupS * 1000);
    if (!proc.running) throw new Error(`${checker} exited during the warm-up: see ${logFile}`);
    const synsBefore = await checkSyns();
    const meter = cpuMeter(proc.pid);
    const systemBefore = systemSeconds(proc.pid);
    const t0 = Date.now();
    await sleep(measureS * 1000);
    const cpu = meter.stop();
    const systemUsed = systemSeconds(proc.pid) - systemBefore;
    const seconds = (Date.now() - t0) / 1000;
    const checks = (await checkSyns()) - synsBefore;
    const rssMiB = treeRssKiB(proc.pid) / 1024;
    return { checksPerSecond: checks / seconds, cpuPercent: cpu.percent, systemPercent: (100 * systemUsed) / seconds, cpuUsPerCheck: (cpu.seconds * 1e6) / Math.max(1, checks), rssMiB };
  } finally {
    await proc.stop(2000);
  }
}

/** Runs the block and returns its markdown. Rounds alternate the two checkers; figures are medians. */
export async function runChecksBlock(env: ChecksEnv, opts: BenchOptions): Promise<string> {
  fs.mkdirSync(path.join(env.dir, 'tmp'), { recursive: true, mode: 0o755 });
  fs.mkdirSync(path.join(env.dir, 'logs'), { recursive: true, mode: 0o755 });
  const conf = path.join(env.dir, 'checks-backend.conf');
  fs.writeFileSync(conf, backendConf(env.dir, env.nofile));
  const backend = startProcess('checks-backend', ['nginx', '-e', path.join(env.dir, 'checks-backend.error.log'), '-c', conf], {
    cores: env.backendCores,
    nofile: env.nofile,
    logFile: path.join(env.dir, 'logs', 'checks-backend.log'),
  });
  try {
    await waitFor('the checks backend', backendUp, 10_000);
    await installSynCounter();
    const results: Record<`${Checker}-${Kind}`, CheckFigures[]> = { 'vipd-tcp': [], 'haproxy-tcp': [], 'vipd-http': [], 'haproxy-http': [] };
    for (let round = 0; round < opts.rounds; round++) {
      for (const kind of KINDS) {
        const order: Checker[] = round % 2 === 0 ? ['vipd', 'haproxy'] : ['haproxy', 'vipd'];
        for (const checker of order) {
          progress(`bench: checks round ${round + 1}/${opts.rounds}: ${checker} ${kind}`);
          const figures = await measureOne(checker, kind, env, opts, round);
          progress(`bench:   ${figures.checksPerSecond.toFixed(0)} checks/s, CPU ${figures.cpuPercent.toFixed(1)}% (kernel ${figures.systemPercent.toFixed(1)}%), ${figures.cpuUsPerCheck.toFixed(1)} µs/check, RSS ${figures.rssMiB.toFixed(0)} MiB`);
          results[`${checker}-${kind}`].push(figures);
        }
      }
    }
    return renderChecks(results, opts);
  } finally {
    await backend.stop(2000);
  }
}

function renderChecks(results: Record<string, CheckFigures[]>, opts: BenchOptions): string {
  const m = (key: string, pick: (f: CheckFigures) => number) => median((results[key] ?? []).map(pick));
  const { measureS } = timings(opts);
  const lines = [
    `### Cost of checking: ${CHECK_BACKENDS.toLocaleString('en-US')} backends, a check each every 1 s (checker alone on core 0; medians of ${opts.rounds} round(s) of ${measureS} s)`,
    '',
    '| figure | vipd | HAProxy nbthread 1 | vipd / HAProxy | target |',
    '|---|---:|---:|---:|---|',
  ];
  for (const kind of KINDS) {
    const v = (pick: (f: CheckFigures) => number) => m(`vipd-${kind}`, pick);
    const h = (pick: (f: CheckFigures) => number) => m(`haproxy-${kind}`, pick);
    const row = (name: string, pick: (f: CheckFigures) => number, format: (x: number) => string, target = '') => {
      const a = v(pick);
      const b = h(pick);
      lines.push(`| ${kind}: ${name} | ${format(a)} | ${format(b)} | ${b > 0 ? `${(a / b).toFixed(2)}×` : '-'} | ${target} |`);
    };
    const cpuVipd = v((f) => f.cpuPercent);
    const ratio = v((f) => f.cpuUsPerCheck) / h((f) => f.cpuUsPerCheck);
    row('checks/s done (at the backend)', (f) => f.checksPerSecond, (x) => x.toFixed(0));
    row('CPU % of a core', (f) => f.cpuPercent, (x) => `${x.toFixed(1)}%`, kind === 'tcp' ? `≤ ${TCP_CPU_TARGET_PERCENT}% ${cpuVipd <= TCP_CPU_TARGET_PERCENT ? 'met' : 'MISSED'}` : '');
    row('  of which in the kernel', (f) => f.systemPercent, (x) => `${x.toFixed(1)}%`);
    row('CPU µs per check', (f) => f.cpuUsPerCheck, (x) => x.toFixed(1), kind === 'http' ? `≤ ${HTTP_RATIO_TARGET}× ${ratio <= HTTP_RATIO_TARGET ? 'met' : 'MISSED'}` : '');
    row('RSS MiB', (f) => f.rssMiB, (x) => x.toFixed(0));
  }
  return lines.join('\n');
}
