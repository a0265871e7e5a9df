#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { Command, CommanderError } from 'commander';
import { parseDocument } from 'yaml';
import { parseEndpoint, type Endpoint } from '../net/endpoint';
import { keyPosition, loadConfigFile, type Config } from '../config/config';
import { localAddressIssues, type LocalAddressIssue } from '../net/local-address';
import { adminSocketPath } from '../config/schema';
import type { DaemonStatus } from '../control/control';
import { ConfigError, VipdError, errorMessage } from '../lib/errors';
import { createLogger } from '../lib/logger';
import { vipdVersion } from '../lib/version';
import { parseGrace } from '../control/drain-request';
import { lookupGobgpdUser } from '../speaker/gobgp/gobgpd-user';
import { GobgpClient } from '../speaker/gobgp/client';
import { deleteMarkedPaths, ownerMark, routerIdAsOwnerId } from '../speaker/gobgp/ownership';
import { adminRequest, AdminUnreachableError, describeTarget, type AdminTarget } from './admin-client';
import { renderStatus, renderTimeline, WATCH_TIMELINE_ROWS } from './status-table';
import type { JournalEvent } from '../control/event-journal';

/** Exit codes: 0 ok, 1 runtime failure, 2 bad input (config or command line). */
const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

function loadOrExit(file: string): Config {
  try {
    return loadConfigFile(file);
  } catch (err) {
    if (err instanceof VipdError) {
      process.stderr.write(`vipd: invalid config\n${err.message}\n`);
      process.exit(EXIT_USAGE);
    }
    throw err;
  }
}

/** Keys that are valid but wrong for this host (e.g. a localAddress not on it): named with line:col, exit 2. */
function exitOnHostIssues(file: string, issues: readonly LocalAddressIssue[]): void {
  if (issues.length === 0) return;
  const text = readFileSync(file, 'utf8');
  const lines = issues.map((i) => {
    const at = keyPosition(text, i.path);
    return `${file}:${at.line}:${at.col}: ${i.key}: ${i.message}`;
  });
  process.stderr.write(`vipd: config does not fit this node\n${lines.join('\n')}\n`);
  process.exit(EXIT_USAGE);
}

function configFileOf(positional: string | undefined, opts: { config?: string }): string {
  const file = opts.config ?? positional;
  if (!file) {
    process.stderr.write('vipd: a config file is required (--config FILE)\n');
    process.exit(EXIT_USAGE);
  }
  return file;
}

/**
 * One admin call, found from the config: mutations over the unix socket (or over TCP with
 * --token-file); GET /status over the socket, falling back to the read-only TCP port when this user
 * cannot open the socket. Refusals and "not running" are errors that say what to do.
 */
async function adminCall(configFile: string, method: 'GET' | 'POST', path: string, body?: string, opts: { tokenFile?: string } = {}): Promise<string> {
  const config = loadOrExit(configFile);
  const socket = adminSocketPath(config);
  const tcp: AdminTarget = { tcp: config.admin.listen, ...(opts.tokenFile !== undefined ? { token: readTokenFile(opts.tokenFile) } : {}) };
  const first: AdminTarget = opts.tokenFile !== undefined ? tcp : { socket };
  let res: { status: number; body: string };
  try {
    res = await adminRequest(first, method, path, body);
  } catch (err) {
    if (!(err instanceof AdminUnreachableError) || 'tcp' in first) throw explainUnreachable(err, config);
    const canFallBack = method === 'GET' && (err.errno === 'EACCES' || err.errno === 'ENOENT');
    if (!canFallBack) throw explainUnreachable(err, config);
    process.stderr.write(`vipd: cannot open ${socket} (${err.errno}); asking the read-only TCP admin at ${describeTarget(tcp)}\n`);
    try {
      res = await adminRequest(tcp, method, path, body);
    } catch (tcpErr) {
      throw explainUnreachable(tcpErr instanceof AdminUnreachableError && tcpErr.notRunning ? err : tcpErr, config);
    }
  }
  if (res.status !== 200) {
    let error = res.body;
    try {
      error = (JSON.parse(res.body) as { error?: string }).error ?? res.body;
    } catch {
      // not JSON: shown as it is
    }
    throw new VipdError('VIPD_ERR_ADMIN', `${method} ${path} refused (${res.status}): ${error.trim()}`);
  }
  return res.body;
}

function explainUnreachable(err: unknown, config: Config): unknown {
  if (!(err instanceof AdminUnreachableError)) return err;
  const where = describeTarget(err.target);
  if (err.notRunning) return new VipdError('VIPD_ERR_ADMIN', `no vipd answering on ${where}`, { cause: err });
  if (err.errno === 'EACCES' && 'socket' in err.target) {
    const group = config.admin.socketGroup !== undefined ? `, or a member of group ${config.admin.socketGroup}` : '';
    return new VipdError('VIPD_ERR_ADMIN', `cannot open ${where}: permission denied (run as root${group}; or pass --token-file for TCP)`, { cause: err });
  }
  return err;
}

function readTokenFile(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new VipdError('VIPD_ERR_ADMIN', `--token-file ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
}

/**
 * Where the daemon's admin listens, from a config file that may be invalid elsewhere: only node.name,
 * admin.socket and admin.listen are read. A file that cannot even say that is a usage error.
 */
function locateAdmin(file: string): { socket: string; listen: Endpoint } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    process.stderr.write(`vipd: ${file}: cannot find the daemon's admin socket: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}\n`);
    process.exit(EXIT_USAGE);
  }
  // Tolerant: a file with errors elsewhere still says where its daemon listens.
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false });
  const scalar = (path: string[]): unknown => {
    try {
      return doc.getIn(path);
    } catch {
      return undefined;
    }
  };
  const name = scalar(['node', 'name']);
  if (typeof name !== 'string' || name.length === 0) {
    process.stderr.write(`vipd: ${file}: node.name cannot be read, so the admin socket cannot be found\n`);
    process.exit(EXIT_USAGE);
  }
  const socketSetting = scalar(['admin', 'socket']);
  const listenSetting = scalar(['admin', 'listen']);
  const socket = adminSocketPath({ node: { name }, admin: { socket: typeof socketSetting === 'string' ? socketSetting : undefined } });
  const listen = parseEndpoint(typeof listenSetting === 'string' ? listenSetting : '127.0.0.1:9180') ?? parseEndpoint('127.0.0.1:9180')!;
  return { socket, listen };
}

const program = new Command()
  .name('vipd')
  .description('Health-gated active/active anycast VIP: TCP proxy, health checks, BGP through a managed gobgpd')
  .version(vipdVersion, '-V, --version')
  .showHelpAfterError()
  .exitOverride();

program
  .command('run')
  .description('run the daemon')
  .requiredOption('-c, --config <file>', 'config file (YAML)')
  .option('--log-level <level>', 'trace | debug | info | warn | error', process.env.VIPD_LOG_LEVEL ?? 'info')
  .action(async (opts: { config: string; logLevel: string }) => {
    const config = loadOrExit(opts.config);
    exitOnHostIssues(opts.config, localAddressIssues(config.speaker));
    const logger = createLogger(opts.logLevel);
    // Loaded here so that check-config, status and drain never load the daemon's modules.
    const { runDaemon } = await import('../main');
    await runDaemon(config, { configPath: opts.config, logger });
  });

program
  .command('check-config')
  .description('validate a config file and exit: 0 valid, 2 invalid')
  .argument('[file]', 'config file (YAML)')
  .option('-c, --config <file>', 'config file (YAML)')
  .action(async (file: string | undefined, opts: { config?: string }) => {
    const path = configFileOf(file, opts);
    const config = loadOrExit(path);
    // The one host fact that is cheap to check here: the user a managed gobgpd will run as.
    if (config.speaker.driver === 'gobgp' && config.speaker.gobgp.manage) {
      await lookupGobgpdUser(config.speaker.gobgp.user).catch((err: unknown) => {
        process.stderr.write(`${path}: speaker.gobgp.user: ${errorMessage(err)}\n`);
        process.exit(2);
      });
    }
    const listeners = config.vips.reduce((n, v) => n + v.listeners.length, 0);
    const backends = Object.values(config.pools).reduce((n, p) => n + p.backends.length, 0);
    process.stdout.write(`${path}: ok (${config.vips.length} VIPs, ${listeners} listeners, ${Object.keys(config.pools).length} pools, ${backends} backends, speaker ${config.speaker.driver})\n`);
  });

program
  .command('status')
  .description("show the running daemon's VIPs, backends and peers")
  .requiredOption('-c, --config <file>', "the daemon's config file (its admin section says where to ask)")
  .option('--json', 'print the raw JSON')
  .option('-w, --watch', 'redraw every second with the last transitions (the status page in the terminal); Ctrl-C exits')
  .action(async (opts: { config: string; json?: boolean; watch?: boolean }) => {
    if (opts.watch) return watchStatus(opts.config);
    const body = await adminCall(opts.config, 'GET', '/status');
    process.stdout.write(opts.json ? body : renderStatus(JSON.parse(body) as DaemonStatus) + '\n');
  });

/** `vipd status --watch`: the page's view, redrawn each second. An unreachable daemon is shown, not fatal: it may be restarting. */
async function watchStatus(configFile: string): Promise<never> {
  process.once('SIGINT', () => process.exit(0));
  for (;;) {
    let screen: string;
    try {
      const status = JSON.parse(await adminCall(configFile, 'GET', '/status')) as DaemonStatus;
      const timeline = JSON.parse(await adminCall(configFile, 'GET', '/timeline')) as { events: JournalEvent[] };
      screen = renderStatus(status) + '\n\n' + renderTimeline(timeline.events, WATCH_TIMELINE_ROWS);
    } catch (err) {
      screen = `vipd status --watch: ${errorMessage(err)} (retrying every second)`;
    }
    process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}  (Ctrl-C to exit)\n\n${screen}\n`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

program
  .command('drain')
  .description('planned maintenance: advertise with GRACEFUL_SHUTDOWN for the grace, then withdraw (every VIP, or --vip); existing connections keep being served')
  .requiredOption('-c, --config <file>', "the daemon's config file (its admin section says where the socket is)")
  .option('--token-file <file>', 'send over TCP with this bearer token instead of the unix socket')
  .option('--vip <name>', 'drain this VIP only; the others are left alone')
  .option('--grace <duration>', 'how long the path stays with GRACEFUL_SHUTDOWN before the withdraw (0s..1h; default drain.grace)')
  .action(async (opts: { config: string; tokenFile?: string; vip?: string; grace?: string }) => {
    if (opts.grace !== undefined) {
      const parsed = parseGrace(opts.grace);
      if ('error' in parsed) throw new VipdError('VIPD_ERR_ADMIN', `--grace: ${parsed.error}`);
    }
    const body = { ...(opts.vip !== undefined ? { vip: opts.vip } : {}), ...(opts.grace !== undefined ? { grace: opts.grace } : {}) };
    await adminCall(opts.config, 'POST', '/drain', JSON.stringify(body), opts);
    process.stdout.write(opts.vip !== undefined ? `drained VIP ${opts.vip}\n` : 'drained\n');
  });

program
  .command('undrain')
  .description('end a drain (the node, or --vip); the VIPs go back through their gates')
  .requiredOption('-c, --config <file>', "the daemon's config file (its admin section says where the socket is)")
  .option('--token-file <file>', 'send over TCP with this bearer token instead of the unix socket')
  .option('--vip <name>', 'undrain this VIP only')
  .action(async (opts: { config: string; tokenFile?: string; vip?: string }) => {
    await adminCall(opts.config, 'POST', '/undrain', JSON.stringify(opts.vip !== undefined ? { vip: opts.vip } : {}), opts);
    process.stdout.write(opts.vip !== undefined ? `undrained VIP ${opts.vip}\n` : 'undrained\n');
  });

for (const [name, drained] of [['drain-backend', true], ['undrain-backend', false]] as const) {
  program
    .command(name)
    .description(drained ? 'stop new connections to one backend; established ones carry on' : 'let one backend take new connections again')
    .argument('<pool>', 'pool name')
    .argument('<backend>', 'backend as configured, IP:PORT or [IPv6]:PORT')
    .requiredOption('-c, --config <file>', "the daemon's config file (its admin section says where the socket is)")
    .option('--token-file <file>', 'send over TCP with this bearer token instead of the unix socket')
    .action(async (pool: string, backend: string, opts: { config: string; tokenFile?: string }) => {
      await adminCall(opts.config, 'POST', `/backends/${drained ? 'drain' : 'undrain'}`, JSON.stringify({ pool, backend }), opts);
      process.stdout.write(`${pool} ${backend}: ${drained ? 'drained' : 'undrained'}\n`);
    });
}

program
  .command('reload')
  .description("make the running daemon re-read the config file it was started with, and apply it in place (docs/reload.md)")
  .requiredOption('-c, --config <file>', "the daemon's config file: its node and admin sections say where the socket is")
  .option('--token-file <file>', 'send over TCP with this bearer token instead of the unix socket')
  .action(async (opts: { config: string; tokenFile?: string }) => {
    // The daemon validates the file itself and names each bad key and line; the CLI only needs its socket,
    // so a file broken elsewhere still reaches the daemon (which refuses it, counts it, and keeps serving).
    const located = locateAdmin(opts.config);
    let res: { status: number; body: string };
    const target: AdminTarget = opts.tokenFile !== undefined ? { tcp: located.listen, token: readTokenFile(opts.tokenFile) } : { socket: located.socket };
    try {
      res = await adminRequest(target, 'POST', '/reload', undefined, 120_000);
    } catch (err) {
      if (err instanceof AdminUnreachableError && err.notRunning) {
        throw new VipdError('VIPD_ERR_ADMIN', `no vipd answering on ${describeTarget(target)}: is it running? (nothing was reloaded)`, { cause: err });
      }
      throw err;
    }
    let report: { result?: string; summary?: string; reason?: string; error?: string; file?: string } = {};
    try {
      report = JSON.parse(res.body) as typeof report;
    } catch {
      // not JSON: shown as it is
    }
    const read = report.file !== undefined ? `(the daemon read ${report.file}${report.file !== resolvePath(opts.config) ? `, the file it was started with, not ${opts.config}` : ''})` : '';
    if (res.status === 200) {
      process.stdout.write(`reload ${report.result ?? 'done'}: ${report.summary ?? ''}\n${read}\n`);
      return;
    }
    if (read) process.stderr.write(`${read}\n`);
    process.stderr.write(`vipd: reload ${report.result ?? 'refused'} (${res.status}); the old config keeps serving:\n${(report.reason ?? report.error ?? res.body).trim()}\n`);
    process.exit(EXIT_RUNTIME);
  });

program
  .command('withdraw-owned')
  .description("external gobgpd: delete every path carrying this node's mark (what the guardian does when vipd dies); for ExecStopPost")
  .option('-c, --config <file>', 'config file (YAML)', '/etc/vipd/vipd.yaml')
  .action(async (opts: { config: string }) => {
    const config = loadOrExit(opts.config);
    const s = config.speaker;
    if (s.driver !== 'gobgp' || s.gobgp.manage || s.gobgp.api === undefined) {
      process.stderr.write('vipd: withdraw-owned is for speaker.gobgp.manage: false (a managed gobgpd dies with vipd)\n');
      process.exit(EXIT_USAGE);
    }
    const mark = ownerMark(s.asn!, s.gobgp.ownerId ?? routerIdAsOwnerId(s.routerId!));
    const client = new GobgpClient({ address: s.gobgp.api, deadlineMs: 5000 });
    try {
      const deleted = await deleteMarkedPaths(client, mark);
      process.stdout.write(`deleted ${deleted.length} path(s) marked ${mark}${deleted.length ? `: ${deleted.join(' ')}` : ''}\n`);
    } finally {
      client.close();
    }
  });

program
  .command('version')
  .description('print the version')
  .action(() => {
    process.stdout.write(`vipd ${vipdVersion}\n`);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`vipd: invalid config\n${err.message}\n`);
    process.exit(EXIT_USAGE);
  }
  process.stderr.write(`vipd: ${errorMessage(err)}\n`);
  process.exit(EXIT_RUNTIME);
});
