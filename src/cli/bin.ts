#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { loadConfigFile, type Config } from '../config/config';
import type { DaemonStatus } from '../control/control';
import { ConfigError, VipdError, errorMessage } from '../lib/errors';
import { createLogger } from '../lib/logger';
import { vipdVersion } from '../lib/version';
import { parseGrace } from '../control/drain-request';
import { adminRequest } from './admin-client';
import { renderStatus } from './status-table';

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

function configFileOf(positional: string | undefined, opts: { config?: string }): string {
  const file = opts.config ?? positional;
  if (!file) {
    process.stderr.write('vipd: a config file is required (--config FILE)\n');
    process.exit(EXIT_USAGE);
  }
  return file;
}

async function adminCall(configFile: string, method: 'GET' | 'POST', path: string, body?: string): Promise<string> {
  const config = loadOrExit(configFile);
  const res = await adminRequest(config.admin.listen, method, path, body);
  if (res.status !== 200) {
    const error = res.body.startsWith('{') ? ((JSON.parse(res.body) as { error?: string }).error ?? res.body) : res.body;
    throw new VipdError('VIPD_ERR_ADMIN', `${method} ${path} refused (${res.status}): ${error.trim()}`);
  }
  return res.body;
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
  .action((file: string | undefined, opts: { config?: string }) => {
    const path = configFileOf(file, opts);
    const config = loadOrExit(path);
    const listeners = config.vips.reduce((n, v) => n + v.listeners.length, 0);
    const backends = Object.values(config.pools).reduce((n, p) => n + p.backends.length, 0);
    process.stdout.write(`${path}: ok (${config.vips.length} VIPs, ${listeners} listeners, ${Object.keys(config.pools).length} pools, ${backends} backends, speaker ${config.speaker.driver})\n`);
  });

program
  .command('status')
  .description("show the running daemon's VIPs, backends and peers")
  .requiredOption('-c, --config <file>', "the daemon's config file (its admin section says where to ask)")
  .option('--json', 'print the raw JSON')
  .action(async (opts: { config: string; json?: boolean }) => {
    const body = await adminCall(opts.config, 'GET', '/status');
    process.stdout.write(opts.json ? body : renderStatus(JSON.parse(body) as DaemonStatus) + '\n');
  });

program
  .command('drain')
  .description('planned maintenance: advertise with GRACEFUL_SHUTDOWN for the grace, then withdraw (every VIP, or --vip); existing connections keep being served')
  .requiredOption('-c, --config <file>', "the daemon's config file")
  .option('--vip <name>', 'drain this VIP only; the others are left alone')
  .option('--grace <duration>', 'how long the path stays with GRACEFUL_SHUTDOWN before the withdraw (0s..1h; default drain.grace)')
  .action(async (opts: { config: string; vip?: string; grace?: string }) => {
    if (opts.grace !== undefined) {
      const parsed = parseGrace(opts.grace);
      if ('error' in parsed) throw new VipdError('VIPD_ERR_ADMIN', `--grace: ${parsed.error}`);
    }
    const body = { ...(opts.vip !== undefined ? { vip: opts.vip } : {}), ...(opts.grace !== undefined ? { grace: opts.grace } : {}) };
    await adminCall(opts.config, 'POST', '/drain', JSON.stringify(body));
    process.stdout.write(opts.vip !== undefined ? `drained VIP ${opts.vip}\n` : 'drained\n');
  });

program
  .command('undrain')
  .description('end a drain (the node, or --vip); the VIPs go back through their gates')
  .requiredOption('-c, --config <file>', "the daemon's config file")
  .option('--vip <name>', 'undrain this VIP only')
  .action(async (opts: { config: string; vip?: string }) => {
    await adminCall(opts.config, 'POST', '/undrain', JSON.stringify(opts.vip !== undefined ? { vip: opts.vip } : {}));
    process.stdout.write(opts.vip !== undefined ? `undrained VIP ${opts.vip}\n` : 'undrained\n');
  });

for (const [name, drained] of [['drain-backend', true], ['undrain-backend', false]] as const) {
  program
    .command(name)
    .description(drained ? 'stop new connections to one backend; established ones carry on' : 'let one backend take new connections again')
    .argument('<pool>', 'pool name')
    .argument('<backend>', 'backend as configured, IP:PORT or [IPv6]:PORT')
    .requiredOption('-c, --config <file>', "the daemon's config file")
    .action(async (pool: string, backend: string, opts: { config: string }) => {
      await adminCall(opts.config, 'POST', `/backends/${drained ? 'drain' : 'undrain'}`, JSON.stringify({ pool, backend }));
      process.stdout.write(`${pool} ${backend}: ${drained ? 'drained' : 'undrained'}\n`);
    });
}

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
