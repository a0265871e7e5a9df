import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  BACKEND_HOST,
  BACKEND_PORT,
  LARGE_FILE_BYTES,
  SMALL_BODY_BYTES,
  STREAM_MODULE,
  VIP,
  backendNginxConf,
  layout,
  wrkScript,
  type Layout,
} from './configs';
import { runChecksBlock } from './checks';
import { curlDownload, httpGetStatus, wrk } from './load';
import { LATENCY_CONNECTIONS, LATENCY_DELAY_MS, LATENCY_TARGET_RATE, LOAD_CONNECTIONS, measureBlock, type BlockResult, type Durations, type FigureKey, type RateFigure, type Scripts } from './measure';
import { allNamespaces, applySysctls, createNamespaces, defaultSysctls, destroyNamespaces, freshClientSource, namespaceNames, readSysctls, staleNamespaces, type Namespaces } from './netns';
import { USAGE, UsageError, durationsFor, parseOptions, type BenchOptions, type BlockKind } from './options';
import { PATH_LABELS, SINGLE_PROCESS_PATHS, prepareVipdConfig, processCount, startPath, targetOf, vipdVariant, type PathName } from './paths';
import { interferenceMeter, initClockTicks, startProcess, stopAll } from './procs';
import { formatSummary, readProfile, summariseProfile } from './profile-summary';
import { BULK, KEEP_ALIVE, NEW_CONN, P99, renderSamples, renderTable, type TableSpec, type Targets } from './report';
import { REPO_ROOT, VIPD_BIN, errorText, progress, run, runOk, sleep, waitFor } from './util';

/**
 * `npm run bench`: vipd side by side with HAProxy and nginx stream (issue 3, section 8).
 *
 * The process runs in three roles:
 * - outer (what `npm run bench` starts): installs missing tools, makes the network namespace, runs the
 *   inner role inside it, and removes the namespace and everything in it at the end, whatever happened;
 * - inner (`--inside`): runs inside the namespace, starts the backend and each proxy, drives the loads
 *   and prints the tables;
 * - reaper (`--reaper NS`): a detached watcher holding a pipe from the outer process; if the outer
 *   process dies without saying "done" (even by SIGKILL), it removes the namespace and its processes.
 *
 * CPU pinning on the 2-core machine: each proxy gets core 0 to itself; wrk, curl, the idle client and
 * the nginx backend share core 1. Every proxied path thus has the same client and backend budget, and
 * the proxies are compared on one core each, which is what `nbthread 1` / one worker means. The direct
 * path runs client and backend on core 1 only, so it shows what that core can drive, not a machine
 * maximum. In the workers table the proxy may use both cores (taskset 0,1) while the rest stays on core 1.
 */

const SELF = __filename;
const IDLE_CLIENT_JS = path.join(__dirname, 'idle-client.js');

/** Debian packages the benchmark needs (the same names as scripts/setup.sh). */
const PACKAGES = ['haproxy', 'nginx-light', 'libnginx-mod-stream', 'wrk', 'curl', 'iproute2', 'util-linux', 'procps'];
const TOOLS = ['haproxy', 'nginx', 'wrk', 'curl', 'ip', 'ss', 'taskset'];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--reaper') return reaper(argv[1] ?? '');
  const inside = argv[0] === '--inside';
  const args = inside ? argv.slice(1) : argv;
  let opts: BenchOptions | 'help';
  try {
    opts = parseOptions(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (opts === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (inside) await innerMain(opts);
  else await outerMain(opts, args);
}

// ---------------------------------------------------------------------------------------------------
// Outer role

async function outerMain(opts: BenchOptions, args: readonly string[]): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root: it creates a network namespace and raises fd limits');
  await ensureTools();
  for (const f of [opts.vipdBin, IDLE_CLIENT_JS]) {
    if (!fs.existsSync(f)) throw new Error(`${path.relative(REPO_ROOT, f)} is missing: run \`npm run build\` first`);
  }
  for (const ns of await staleNamespaces()) {
    progress(`bench: removing ${ns}, left by an earlier run that was killed`);
    await destroyNamespaces([ns]);
  }
  const names = namespaceNames();
  const reaperPipe = startReaper(allNamespaces(names));
  let exitCode = 1;
  const started = Date.now();
  try {
    await createNamespaces(names, opts.rpsOnProxyCore);
    progress(`bench: namespaces ${allNamespaces(names).join(', ')} (client, balancer with ${VIP}/32 on lo, backend); ${estimate(opts)}`);
    const loadCore = os.cpus().length > 1 ? '1' : '0';
    // The inner role runs in the client's namespace: wrk, curl and the idle client inherit it, its
    // niceness and (unless they pin themselves elsewhere) its core; proxies and the backend are started
    // in their own namespaces.
    const child = spawn('ip', ['netns', 'exec', names.client, 'nice', '-n', String(-opts.boost), 'taskset', '-c', loadCore, process.execPath, SELF, '--inside', ...args], {
      stdio: 'inherit',
      env: { ...process.env, VBENCH_PID: String(process.pid), VBENCH_DEFAULT_SYSCTLS: JSON.stringify(defaultSysctls() ?? {}) },
    });
    // Ctrl-C reaches the inner process too (same process group); SIGTERM from elsewhere is passed on.
    // Either way the inner role stops its processes and exits, and the finally below cleans up.
    const forward = (sig: NodeJS.Signals) => {
      progress(`bench: ${sig}, stopping`);
      if (child.exitCode === null) child.kill('SIGTERM');
    };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    exitCode = await new Promise<number>((resolve) => {
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1)));
      child.on('error', (err) => {
        progress(`bench: cannot start the inner run: ${err.message}`);
        resolve(1);
      });
    });
  } finally {
    const leftovers = await destroyNamespaces(allNamespaces(names));
    reaperPipe?.end('done\n');
    if (leftovers.length > 0) {
      progress(`bench: could not clean up: ${leftovers.join('; ')}`);
      exitCode = exitCode || 1;
    } else {
      progress(`bench: namespaces ${allNamespaces(names).join(', ')} and their processes removed; total ${((Date.now() - started) / 1000).toFixed(0)} s`);
    }
  }
  process.exit(exitCode);
}

/** Installs what is missing with apt, by the package names of scripts/setup.sh. */
async function ensureTools(): Promise<void> {
  const missing: string[] = [];
  for (const t of TOOLS) if ((await run(['sh', '-c', `command -v ${t}`])).code !== 0) missing.push(t);
  if (!fs.existsSync(STREAM_MODULE)) missing.push(STREAM_MODULE);
  if (missing.length === 0) return;
  // Not scripts/setup.sh: it also runs `npm ci` and `npm run build`, which would replace the very build
  // the benchmark is about to measure (and fail outright while src/ is mid-change).
  progress(`bench: missing ${missing.join(', ')}; installing ${PACKAGES.join(' ')} with apt-get`);
  await runOk(['apt-get', 'update', '-qq'], { timeoutMs: 300_000 });
  await runOk(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...PACKAGES], { timeoutMs: 600_000 });
  // The packages may start system-wide nginx and haproxy services; the benchmark runs its own instances.
  for (const svc of ['nginx', 'haproxy']) await run(['sh', '-c', `command -v systemctl >/dev/null && systemctl stop ${svc} || true`]);
}

function startReaper(names: readonly string[]): NodeJS.WritableStream | undefined {
  const child = spawn(process.execPath, [SELF, '--reaper', names.join(',')], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.unref();
  const stdin = child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null;
  stdin?.on('error', () => undefined);
  stdin?.unref?.();
  return stdin ?? undefined;
}

function reaper(list: string): void {
  const names = list.split(',').filter(Boolean);
  let said = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => (said += chunk));
  process.stdin.on('error', () => undefined);
  process.stdin.on('close', () => {
    if (names.length === 0 || /^done\b/m.test(said)) return;
    void destroyNamespaces(names);
  });
}

/** A rough forecast from the load lengths plus measured overheads (starts, stops, bulk, idle test). */
function estimate(o: BenchOptions): string {
  const block = (d: Durations, figures: string) =>
    d.warmupS + (figures.includes('a') ? d.keepAliveS : 0) + (figures.includes('b') ? d.newConnS : 0) + (figures.includes('d') ? d.latencyS : 0) + (figures.includes('c') ? 3 : 0) + 3;
  const paths = o.only.length;
  const proxies = o.only.filter((p) => p !== 'direct' && !SINGLE_PROCESS_PATHS.includes(p)).length;
  const idle = o.only.filter((p) => p !== 'direct' && p !== 'vipd-kernel').length * (o.quick ? 3 : 6);
  const t1 = o.rounds * paths * block(durationsFor(o, 'single'), 'abcd') + idle;
  const t2 = o.workersTable ? o.rounds * proxies * block(durationsFor(o, 'workers'), 'abd') : 0;
  const t3 = o.defaultSysctlsBlock ? o.rounds * o.only.filter((p) => p !== 'libuv').length * block(durationsFor(o, 'sysctls'), 'b') : 0;
  const t4 = o.firstByteBlock && o.only.includes('vipd') ? o.rounds * 2 * block(durationsFor(o, 'firstbyte'), 'bd') : 0;
  const d1 = durationsFor(o, 'single');
  const prof = o.profile ? 3 * (d1.keepAliveS + d1.warmupS + 5) : 0;
  // +10%: what the quick runs took beyond this sum (process starts and stops, ss, sysctl calls).
  return `expected duration ~${((1.1 * (t1 + t2 + t3 + t4 + prof) + 20) / 60).toFixed(1)} min`;
}

// ---------------------------------------------------------------------------------------------------
// Inner role

interface Env {
  readonly layout: Layout;
  readonly scripts: Scripts;
  readonly nofile: number;
  readonly idleConnections: number;
  readonly proxyCores: string;
  readonly allCores: string;
  readonly loadCores: string;
  readonly namespaces: Namespaces;
  /** The backend's pid, once started (its CPU is the benchmark's own in interferenceMeter). */
  backendPid?: number;
}

/** One block of the run: a table of paths measured over the rounds under one set of conditions. */
interface BlockPlan {
  readonly kind: BlockKind;
  readonly workers: number;
  readonly cores: string;
  readonly figures: ReadonlySet<FigureKey>;
  readonly idle: boolean;
}

/**
 * The targets (issue 13), as ratios to HAProxy in the same table, printed with pass/miss next
 * to the measured ratio; never asserted. Single process: vipd kernel ≥ 1.0× HAProxy nbthread 1 on
 * keep-alive, new connections and bulk, p99 ≤ HAProxy's; the proxy ≥ 0.9× keep-alive and bulk, p99 ≤
 * 1.5×. Workers: vipd workers 2 ≥ 0.6× HAProxy nbthread 2 on new connections.
 */
const SINGLE_TARGETS: Targets = {
  vipd: { [KEEP_ALIVE]: { op: '≥', ratio: 0.9 }, [BULK]: { op: '≥', ratio: 0.9 }, [P99]: { op: '≤', ratio: 1.5 } },
  'vipd-kernel': { [KEEP_ALIVE]: { op: '≥', ratio: 1.0 }, [NEW_CONN]: { op: '≥', ratio: 1.0 }, [BULK]: { op: '≥', ratio: 1.0 }, [P99]: { op: '≤', ratio: 1.0 } },
};
const WORKERS_TARGETS: Targets = { vipd: { [NEW_CONN]: { op: '≥', ratio: 0.6 } } };

async function innerMain(options: BenchOptions): Promise<void> {
  let opts = options;
  const started = Date.now();
  let dir: string | undefined;
  let failed = true;
  // Kept for --keep and after a failure (its logs say why), without the large file; removed otherwise.
  const cleanUp = async (graceMs: number): Promise<void> => {
    await stopAll(graceMs);
    if (dir === undefined) return;
    if (opts.keep || failed) {
      fs.rmSync(path.join(dir, 'www'), { recursive: true, force: true });
      progress(`bench: work directory kept: ${dir}`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    dir = undefined;
  };
  const onSignal = () => {
    // Interrupted: nothing to keep but the cleanup itself.
    failed = false;
    void cleanUp(1000).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await initClockTicks();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipd-bench-'));
    // Described from the build as found; measured from the snapshot, so every round runs the same code.
    const header = describeRun(opts);
    const env = await prepare(dir, opts);
    opts = { ...opts, vipdBin: snapshotVipd(opts.vipdBin, dir) };
    const checksEnv = { dir, vipdBin: opts.vipdBin, checkerCores: env.proxyCores, backendCores: env.loadCores, nofile: env.nofile };
    if (opts.only.length === 0 && opts.checks) {
      // `--only checks`: the checks block alone, no backend for the tables and no large file.
      const checksTable = await runChecksBlock(checksEnv, opts);
      process.stdout.write(`${await header}\n\n${checksTable}\n\nRun time ${((Date.now() - started) / 1000).toFixed(0)} s.\n`);
      failed = false;
      return;
    }
    // Stopped with everything else by stopAll() at the end.
    const backend = startProcess('backend', ['nginx', '-e', path.join(dir, 'backend.error.log'), '-c', path.join(dir, 'backend.conf')], {
      cores: env.loadCores,
      nofile: env.nofile,
      logFile: path.join(dir, 'logs', 'backend.log'),
      netns: env.namespaces.backend,
    });
    await waitFor('the nginx backend', async () => (await httpGetStatus(BACKEND_HOST, BACKEND_PORT, '/small')) === 200, 10_000);
    env.backendPid = backend.pid;
    // The first read of the sparse file fills the page cache (131,072 zeroed pages) and runs at a
    // quarter of the later speed: without this download, (c) of whichever path came first paid for it.
    await curlDownload(`http://${BACKEND_HOST}:${BACKEND_PORT}/large`, LARGE_FILE_BYTES, env.loadCores);

    const headerText = `${await header}\n${describeEnv(opts, env)}`;
    // Each vipd variant's config, checked once with `vipd check-config`: a refusal makes that path "not
    // available" with vipd's own message, in every table it is in (the kernel data path on a build
    // without it, for one).
    const refusals: Partial<Record<string, string>> = {};
    const refusal = async (name: PathName, workers: number): Promise<string | undefined> => {
      const v = vipdVariant(name, workers);
      if (v === undefined) return undefined;
      const key = `${name}/${workers}`;
      if (!(key in refusals)) {
        const why = await prepareVipdConfig(env.layout, v, opts.vipdBin);
        refusals[key] = why === undefined ? '' : `vipd check-config refused the config of this path: ${why}`;
      }
      return refusals[key] || undefined;
    };
    const unavailableFor = async (paths: readonly PathName[], workers: number): Promise<Partial<Record<PathName, string>>> => {
      const out: Partial<Record<PathName, string>> = {};
      for (const p of paths) {
        const why = await refusal(p, workers);
        if (why) out[p] = why;
      }
      return out;
    };
    const all = new Set<FigureKey>(['a', 'b', 'c', 'd']);
    const sysctlsNow = await readSysctls(env.namespaces);

    const table1: TableSpec = {
      title: `Single process: vipd proxy (1 process) and kernel data path, HAProxy nbthread 1, nginx stream 1 worker — proxy on core ${env.proxyCores}, load and backend on core ${env.loadCores}; ${sysctlsNow}`,
      paths: opts.only,
      labels: { haproxy: 'HAProxy nbthread 1', nginx: 'nginx stream 1 worker' },
      unavailable: await unavailableFor(opts.only, 1),
      results: {},
      targets: SINGLE_TARGETS,
      notes: kernelNotes(opts.only),
    };
    await runTable(table1, { kind: 'single', workers: 1, cores: env.proxyCores, figures: all, idle: true }, env, opts);
    const tables: TableSpec[] = [table1];

    const multiPaths = opts.only.filter((p) => p !== 'direct' && !SINGLE_PROCESS_PATHS.includes(p));
    if (opts.workersTable && multiPaths.length > 0) {
      const table2: TableSpec = {
        title: `Two workers: vipd proxy.workers 2, HAProxy nbthread 2, nginx stream 2 workers — proxy on cores ${env.allCores}, load and backend on core ${env.loadCores}`,
        paths: multiPaths,
        labels: { vipd: 'vipd proxy workers 2', haproxy: 'HAProxy nbthread 2', nginx: 'nginx stream 2 workers' },
        unavailable: await unavailableFor(multiPaths, 2),
        results: {},
        targets: WORKERS_TARGETS,
      };
      await runTable(table2, { kind: 'workers', workers: 2, cores: env.allCores, figures: new Set(['a', 'b', 'd']), idle: false }, env, opts);
      const note = workersNote(table2);
      tables.push(note ? { ...table2, notes: [note] } : table2);
    }

    const sysctlPaths = opts.only.filter((p) => p !== 'libuv');
    if (opts.defaultSysctlsBlock && sysctlPaths.length > 0) {
      await applySysctls(env.namespaces, 'default');
      try {
        const table3: TableSpec = {
          title: `Default sysctls (what users run): the kernel's own ${await readSysctls(env.namespaces)} in all three namespaces; single process, pinned as in the first table`,
          paths: sysctlPaths,
          labels: { haproxy: 'HAProxy nbthread 1', nginx: 'nginx stream 1 worker' },
          unavailable: await unavailableFor(sysctlPaths, 1),
          results: {},
          notes: [
            'Every block starts from a new client source address, so TIME_WAITs left by an earlier block (60 s each) do not slow the next one. ' +
              "A path that leaves its TIME_WAITs on the client holds one of the client's ephemeral ports per connection for 60 s: with the default range, one client address can then sustain " +
              `about ${Math.round(portsInDefaultRange() / 60).toLocaleString('en-US')} new connections/s to one VIP:port, whatever the rate in this short load.`,
          ],
        };
        await runTable(table3, { kind: 'sysctls', workers: 1, cores: env.proxyCores, figures: new Set(['b']), idle: false }, env, opts);
        tables.push(table3);
      } finally {
        await applySysctls(env.namespaces, 'tuned');
      }
    }

    if (opts.firstByteBlock && opts.only.includes('vipd')) {
      const fbPaths: PathName[] = ['vipd', 'vipd-firstbyte'];
      const table4: TableSpec = {
        title: 'First-byte wait: vipd proxy with timeouts.firstByte 0s (dial at accept) against the default 10s (dial at the first byte) — single process, pinned as in the first table',
        paths: fbPaths,
        labels: { vipd: 'vipd proxy, firstByte 0s' },
        unavailable: await unavailableFor(fbPaths, 1),
        results: {},
        notes: ['No HAProxy column, so no ratios: compare the two columns (both dial the same backend; HTTP clients speak at once, so the wait itself is short and (b) shows its per-connection cost).'],
      };
      await runTable(table4, { kind: 'firstbyte', workers: 1, cores: env.proxyCores, figures: new Set(['b', 'd']), idle: false }, env, opts);
      tables.push(table4);
    }

    // Profiled unless vipd refused the config outright: a round that failed to start says nothing about the next start.
    const profiles = opts.profile && opts.only.includes('vipd') && !table1.unavailable.vipd ? await profileVipd(env, opts) : undefined;

    const out: string[] = [headerText];
    for (const t of tables) out.push('', renderTable(t));
    for (const t of tables) out.push('', renderSamples(t));
    if (profiles) out.push('', profiles);
    if (opts.checks) out.push('', await runChecksBlock(checksEnv, opts));
    out.push('', `Run time ${((Date.now() - started) / 1000).toFixed(0)} s.`);
    process.stdout.write(`${out.join('\n')}\n`);
    failed = false;
  } finally {
    await cleanUp(3000);
  }
}

async function prepare(dir: string, opts: BenchOptions): Promise<Env> {
  // World-readable, so nginx workers (which drop root) can serve the files and write their temp dirs.
  fs.chmodSync(dir, 0o755);
  const l = layout(dir);
  for (const sub of ['logs', 'tmp', 'www']) fs.mkdirSync(path.join(dir, sub), { mode: 0o755 });
  fs.writeFileSync(path.join(l.www, 'small'), `${'x'.repeat(SMALL_BODY_BYTES - 1)}\n`);
  // Sparse: no disk, and the backend's sendfile() reads zero pages, so it is never the bottleneck.
  fs.closeSync(fs.openSync(path.join(l.www, 'large'), 'w'));
  fs.truncateSync(path.join(l.www, 'large'), LARGE_FILE_BYTES);

  // The hard fd limit cannot be raised without CAP_SYS_RESOURCE; each proxied idle connection needs two
  // fds in the proxy, so (e) opens as many as fit and scales to 10,000.
  const hardText = (await runOk(['bash', '-c', 'ulimit -Hn'])).stdout.trim();
  // "unlimited" (or anything above it) is capped at what the test can use: 10,000 connections x 2 legs.
  const nofile = hardText === 'unlimited' ? 65_536 : Math.min(Number(hardText) || 4096, 65_536);
  const fit = Math.floor((nofile - 400) / 2 / 100) * 100;
  const idleConnections = opts.quick ? Math.min(2000, fit) : Math.min(10_000, fit);
  fs.writeFileSync(path.join(dir, 'backend.conf'), backendNginxConf(l, 1, nofile));

  const scripts: Scripts = {
    plain: path.join(dir, 'plain.lua'),
    close: path.join(dir, 'close.lua'),
    paced: path.join(dir, 'paced.lua'),
  };
  fs.writeFileSync(scripts.plain, wrkScript({ close: false }));
  fs.writeFileSync(scripts.close, wrkScript({ close: true }));
  fs.writeFileSync(scripts.paced, wrkScript({ close: false, delayMs: LATENCY_DELAY_MS }));

  const cpus = os.cpus().length;
  return {
    layout: l,
    scripts,
    nofile,
    idleConnections,
    proxyCores: '0',
    // Cores 0 and 1 only, whatever the machine has: the figures stay comparable with the 2-core
    // machine the targets were set on.
    allCores: cpus > 1 ? '0-1' : '0',
    loadCores: cpus > 1 ? '1' : '0',
    namespaces: namespaceNames(Number(process.env.VBENCH_PID)),
  };
}

/** Rounds of one table; in each round every path runs once, and the order rotates round by round. */
async function runTable(spec: TableSpec, plan: BlockPlan, env: Env, opts: BenchOptions): Promise<void> {
  const tableTag = { single: 'T1', workers: 'T2', sysctls: 'T3', firstbyte: 'T4' }[plan.kind];
  const results = spec.results as Partial<Record<PathName, BlockResult[]>>;
  for (let round = 0; round < opts.rounds; round++) {
    const order = rotate(spec.paths, round);
    for (const name of order) {
      if (spec.unavailable[name]) continue;
      const label = `[${tableTag} r${round + 1}/${opts.rounds} ${name}]`;
      progress(`${label} starting`);
      const clientSource = await freshClientSource(env.namespaces);
      const interference = interferenceMeter(env.backendPid === undefined ? [] : [env.backendPid]);
      let block: BlockResult | undefined;
      let running;
      try {
        running = await startPath(name, {
          layout: env.layout,
          cores: plan.cores,
          nofile: env.nofile,
          workers: plan.workers,
          maxClientConnections: env.idleConnections,
          tag: `${tableTag}-r${round + 1}`,
          vipdBin: opts.vipdBin,
          netns: env.namespaces.balancer,
        });
      } catch (err) {
        // Recorded as an error of this round, never as zeros; a path with no round that started is
        // reported as not available, with the reason (see below).
        const why = `did not start: ${errorText(err).split('\n').slice(0, 3).join(' ')}`;
        progress(`${label} ${why}`);
        (results[name] ??= []).push({ errors: [why], interference: interference.stop() });
        continue;
      }
      try {
        // (e) measures a proxy process's memory: not for the direct path, nor for the kernel data
        // path, whose connections live in conntrack, not in vipd. First round only: it varied by
        // under 1% between rounds in every run so far, and its 10,000 connections take a while.
        const idle = plan.idle && name !== 'vipd-kernel' && round === 0;
        const res = await measureBlock({
          path: running,
          loadCores: env.loadCores,
          durations: durationsFor(opts, plan.kind),
          scripts: env.scripts,
          ...(idle ? { idleConnections: env.idleConnections } : {}),
          idleClientJs: IDLE_CLIENT_JS,
          nofile: env.nofile,
          logDir: path.join(env.layout.dir, 'logs'),
          label,
          figures: plan.figures,
          namespaces: env.namespaces,
          clientSource,
          proxyPort: name === 'direct' ? undefined : targetOf(name).port,
        });
        if (running.proc) res.processes = processCount(running);
        block = res;
      } finally {
        await running.stop();
        const exit = running.proc?.exitStatus;
        // vipd exits 0 on SIGTERM after its graceful stop; anything else is worth a line in the log.
        if (exit && name.startsWith('vipd') && exit.code !== 0) progress(`${label} vipd exited with ${exit.signal ?? exit.code}:\n${running.proc!.logTail(5)}`);
      }
      const other = (block.interference = interference.stop());
      if (other.foreignPercent >= 10) progress(`${label} note: other processes used ${other.foreignPercent.toFixed(0)}% of a core during this block`);
      if (other.stealPercent >= 5) progress(`${label} note: the host stole ${other.stealPercent.toFixed(0)}% of a core during this block`);
      (results[name] ??= []).push(block);
    }
  }
  markUnavailable(spec);
}

/** How to read the kernel data path's column. */
function kernelNotes(paths: readonly PathName[]): string[] {
  if (!paths.includes('vipd-kernel')) return [];
  return [
    `${PATH_LABELS['vipd-kernel']}: packets are forwarded by the balancer's kernel (nftables DNAT to the backend, SNAT back) and never reach a process, so its "proxy CPU" is vipd's control process only; ` +
      "the forwarding runs in softirq, mostly on the core of the sender of each packet (core 1 here, with wrk and the backend): read the softirq rows, and compare with the direct path, which is routed through the same namespace without NAT. There is no (e): its connections are conntrack entries, not vipd memory.",
  ];
}

/** Ephemeral ports in the kernel's default range (the default-sysctl block's note). */
function portsInDefaultRange(): number {
  let defaults: Record<string, string> = {};
  try {
    defaults = JSON.parse(process.env.VBENCH_DEFAULT_SYSCTLS ?? '{}') as Record<string, string>;
  } catch {
    /* the note then uses Linux's documented default */
  }
  const [lo, hi] = (defaults['net.ipv4.ip_local_port_range'] ?? '32768 60999').split(/\s+/).map(Number);
  return (hi ?? 60999) - (lo ?? 32768) + 1;
}

/** Paths none of whose rounds started are not available in this table; the first reason is shown. */
function markUnavailable(spec: TableSpec): void {
  for (const name of spec.paths) {
    const blocks = spec.results[name] ?? [];
    if (spec.unavailable[name] || blocks.length === 0) continue;
    if (blocks.every((b) => b.errors.some((e) => e.startsWith('did not start')))) {
      (spec.unavailable as Partial<Record<PathName, string>>)[name] = blocks[0]!.errors[0]!;
    }
  }
}

function rotate<T>(items: readonly T[], by: number): T[] {
  const n = items.length;
  return items.map((_, i) => items[(i + by) % n]!);
}

/**
 * The workers table's honesty line for vipd: whether `proxy.workers: 2` really produced more than one
 * process, and whether the load was spread over them. The figures are printed either way, as measured.
 */
function workersNote(spec: TableSpec): string | undefined {
  const blocks = (spec.results.vipd ?? []).filter((b) => b.keepAlive || b.newConn);
  if (blocks.length === 0 || spec.unavailable.vipd) return undefined;
  const procs = Math.max(...blocks.map((b) => b.processes ?? 0));
  const peakCpu = Math.max(...blocks.flatMap((b) => [b.keepAlive?.cpuPercent ?? 0, b.newConn?.cpuPercent ?? 0]));
  const split = (f: RateFigure | undefined) => (f?.cpuPerProcess ?? []).map((p) => `${p.toFixed(0)}%`).join(' + ');
  const last = blocks[blocks.length - 1]!;
  const detail = procs > 1 ? ` CPU per process (first the one started, then the others), last round: (a) ${split(last.keepAlive)}, (b) ${split(last.newConn)}.` : '';
  if (procs <= 1 && peakCpu < 110) {
    return `Note: vipd accepted \`proxy.workers: 2\` (check-config passed) but ran as ${procs} process and used at most ${peakCpu.toFixed(0)}% of a core: this build does not spread load over workers, so its row shows one process on two allowed cores.`;
  }
  if (peakCpu < 110) {
    return `Note: vipd ran ${procs} processes with \`proxy.workers: 2\`, but all of them together used at most ${peakCpu.toFixed(0)}% of a core: the extra worker did not add capacity here.${detail}`;
  }
  return `vipd with \`proxy.workers: 2\` ran ${procs} processes; peak CPU ${peakCpu.toFixed(0)}% of one core.${detail}`;
}

/**
 * Copies vipd's build (dist/src, package.json; node_modules and proto/ linked) into the work directory
 * and returns the copy's CLI. Others may rebuild dist/ while the benchmark runs (a build of a tree
 * that is mid-change); without the copy, later rounds would measure different code than earlier ones.
 * A CLI outside the usual <root>/dist/src/cli/bin.js layout is used in place.
 */
function snapshotVipd(bin: string, workDir: string): string {
  const root = path.resolve(path.dirname(bin), '..', '..', '..');
  if (path.relative(root, bin) !== path.join('dist', 'src', 'cli', 'bin.js')) return bin;
  const snap = path.join(workDir, 'vipd');
  fs.cpSync(path.join(root, 'dist', 'src'), path.join(snap, 'dist', 'src'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(snap, 'package.json'));
  for (const linked of ['node_modules', 'proto']) {
    if (fs.existsSync(path.join(root, linked))) fs.symlinkSync(path.join(root, linked), path.join(snap, linked));
  }
  return path.join(snap, 'dist', 'src', 'cli', 'bin.js');
}

async function describeRun(opts: BenchOptions): Promise<string> {
  const first = async (argv: string[]) => {
    const r = await run(argv);
    return `${r.stdout}${r.stderr}`.split('\n')[0]!.trim();
  };
  const built = fs.statSync(opts.vipdBin).mtime;
  let vipdLine: string;
  if (opts.vipdBin === VIPD_BIN) {
    const commit = (await run(['git', '-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'])).stdout.trim() || 'unknown';
    const dirty = (await run(['git', '-C', REPO_ROOT, 'status', '--porcelain', '--', 'src'])).stdout.trim() !== '';
    // tsc rewrites every output file, so bin.js's time is the build's; a newer .ts means the build is stale.
    const stale = newestMtime(path.join(REPO_ROOT, 'src')) > built.getTime();
    vipdLine = `vipd: commit ${commit}${dirty ? ' with uncommitted changes in src/' : ''}; dist built ${built.toISOString().slice(0, 19)}${stale ? ' — OLDER than src/: these figures are for that build, not for the tree' : ''}`;
  } else {
    vipdLine = `vipd: ${opts.vipdBin} (--vipd-bin), built ${built.toISOString().slice(0, 19)}`;
  }
  return [
    `## vipd benchmark, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `- ${vipdLine}; copied at the start, so all rounds run this one build`,
    `- ${await first(['haproxy', '-v'])}; ${await first(['nginx', '-v'])}; wrk ${await first(['sh', '-c', 'wrk -v 2>&1 | head -1 | cut -d" " -f2'])}; Node ${process.version}; Linux ${os.release()}; ${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown CPU'})`,
  ].join('\n');
}

function describeEnv(opts: BenchOptions, env: Env): string {
  const d = durationsFor(opts, 'single');
  const d2 = durationsFor(opts, 'workers');
  const d3 = durationsFor(opts, 'sysctls');
  const d4 = durationsFor(opts, 'firstbyte');
  const ns = env.namespaces;
  const lines = [
    `- routed topology: client namespace ${ns.client} (wrk, curl, idle client) → veth → balancer ${ns.balancer} (the proxies, VIP ${VIP} on lo, ip_forward on) → veth → backend ${ns.backend} (${BACKEND_HOST}:${BACKEND_PORT}); "direct" is the client talking to the backend's address, routed through the balancer without a proxy or NAT; every block starts from a new client source address`,
    `- backend: nginx, 1 worker, ${SMALL_BODY_BYTES}-byte static body, ${LARGE_FILE_BYTES / 2 ** 20} MiB sparse file`,
    `- pinning: proxy on core ${env.proxyCores} (workers table: cores ${env.allCores}); wrk, curl, idle client and backend on core ${env.loadCores}`,
    `- ${opts.rounds} round(s), paths alternating, medians; (a) wrk -t1 -c${LOAD_CONNECTIONS} ${d.keepAliveS}s keep-alive; (b) wrk -t1 -c${LOAD_CONNECTIONS} ${d.newConnS}s with Connection: close; (c) one curl download of the large file; (d) wrk -t1 -c${LATENCY_CONNECTIONS}, each connection pausing ${LATENCY_DELAY_MS} ms before each request (≈${LATENCY_TARGET_RATE.toLocaleString('en-US')} req/s), ${d.latencyS}s; workers table: (a) ${d2.keepAliveS}s, (b) ${d2.newConnS}s, (d) ${d2.latencyS}s, no (c) or (e); default-sysctl block: (b) ${d3.newConnS}s only; first-byte block: (b) ${d4.newConnS}s and (d) ${d4.latencyS}s only; each block starts with a ${d.warmupS}s keep-alive warm-up; (e) in the first round only, ${env.idleConnections.toLocaleString('en-US')} idle connections (one request each, then silent), RSS of the proxy's process tree before/after, scaled to 10k; fd limit ${env.nofile}`,
    `- every benchmark process at nice ${-opts.boost} (--boost); ratios are to HAProxy in the same table; CPU % is of one core, measured from /proc over the load; "softirq" is the whole machine's softirq time (forwarding, NAT, TCP receive); "other processes" is the CPU the rest of the machine used meanwhile, "host steal" the CPU the hypervisor gave to others while this machine wanted it (both stall the paths at random moments, p99 first); TIME_WAIT rows: sockets the (b) load left in TIME_WAIT, by namespace and leg, as a share of its connections (who closed first)`,
  ];
  return lines.join('\n');
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * vipd under `node --cpu-prof`, under the keep-alive load, the new-connection load and the bulk
 * download, each in its own process so that each profile holds one kind of work. Profiling slows vipd, so this
 * runs after the tables and its rates are not in them.
 */
async function profileVipd(env: Env, opts: BenchOptions): Promise<string> {
  const profileDir = opts.profileDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vipd-bench-profiles-'));
  fs.mkdirSync(profileDir, { recursive: true });
  const d = durationsFor(opts, 'single');
  const sections = ['### vipd CPU profiles (node --cpu-prof)', '', `Files in ${profileDir}; re-read them with \`node dist/bench/profile-summary.js FILE\`.`];
  // The issue asks for (a) and (b); (c) is cheap to add and shows the per-chunk path with large chunks.
  const loads = [
    { name: 'keepalive', title: '(a) keep-alive load', script: env.scripts.plain, seconds: d.keepAliveS },
    { name: 'newconn', title: '(b) new-connection load', script: env.scripts.close, seconds: d.newConnS + 2 },
    { name: 'bulk', title: '(c) bulk download, 3 in a row', script: undefined, seconds: 0 },
  ];
  for (const load of loads) {
    const label = `[profile ${load.name}]`;
    progress(`${label} starting vipd with --cpu-prof`);
    const dir = path.join(profileDir, `vipd-${load.name}`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir);
    let rateLine = '';
    try {
      const running = await startPath('vipd', {
        layout: env.layout,
        cores: env.proxyCores,
        nofile: env.nofile,
        workers: 1,
        maxClientConnections: env.idleConnections,
        cpuProfileDir: dir,
        tag: `profile-${load.name}`,
        vipdBin: opts.vipdBin,
        netns: env.namespaces.balancer,
      });
      try {
        const url = `http://${running.host}:${running.port}/small`;
        await wrk({ url, connections: LOAD_CONNECTIONS, durationS: d.warmupS, script: env.scripts.plain, cores: env.loadCores });
        if (load.script === undefined) {
          const speeds: number[] = [];
          for (let i = 0; i < 3; i++) speeds.push(await curlDownload(`http://${running.host}:${running.port}/large`, LARGE_FILE_BYTES, env.loadCores));
          rateLine = `${speeds.map((b) => (b / 2 ** 20).toFixed(0)).join(' / ')} MiB/s while profiled.`;
        } else {
          const r = await wrk({ url, connections: LOAD_CONNECTIONS, durationS: load.seconds, script: load.script, cores: env.loadCores });
          rateLine = `${Math.round(r.rate).toLocaleString('en-US')} req/s while profiled.`;
        }
        progress(`${label} ${rateLine}`);
      } finally {
        await running.stop();
      }
      // Profiles are written while the processes exit; give a slow disk a moment.
      const written = () => fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
      await waitFor(`a profile in ${dir}`, () => written().length > 0, 5000).catch(() => undefined);
      const files = written();
      if (files.length === 0) throw new Error(`no profile was written to ${dir} (did vipd exit cleanly?)`);
      // One file per vipd process; with worker processes, the busiest ones come first.
      const summaries = files
        .map((f) => ({ f, s: summariseProfile(readProfile(path.join(dir, f)), { top: 20 }) }))
        .sort((a, b) => b.s.busyMs - a.s.busyMs);
      for (const { f, s } of summaries) sections.push('', formatSummary(`${load.title}: ${path.basename(dir)}/${f}. ${rateLine}`, s));
    } catch (err) {
      sections.push('', `#### ${load.title}: profiling failed: ${errorText(err)}`);
      progress(`${label} failed: ${errorText(err)}`);
    }
    await sleep(200);
  }
  return sections.join('\n');
}

main().catch((err: unknown) => {
  progress(`bench: ${errorText(err)}`);
  void stopAll(1000).finally(() => process.exit(1));
});

