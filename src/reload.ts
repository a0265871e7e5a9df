import { readFile } from 'node:fs/promises';
import { keyPosition, parseConfig, type Config } from './config/config';
import { diffConfig, isEmpty, summarize, type ConfigChanges } from './config/diff';
import { ConfigError, errorMessage, type ConfigIssue } from './lib/errors';
import type { Logger } from './lib/logger';
import type { Metrics } from './lib/metrics';

/**
 * Hot reload: read the daemon's own config file again, validate it, diff it against the running
 * config, refuse what needs a restart, and hand the rest to the daemon to apply in place. A refused
 * file changes nothing: the old config keeps serving. One reload runs at a time (SIGHUP and the admin
 * route share the queue), so two reloads never interleave their applies.
 */
export type ReloadResult = { readonly file: string } & (
  | { readonly result: 'applied'; readonly summary: string; readonly changes: ConfigChanges }
  | { readonly result: 'unchanged'; readonly summary: string }
  | { readonly result: 'rejected'; readonly reason: string; readonly issues: readonly ConfigIssue[] }
  /** The file was accepted but applying it threw part way: logged with its stack; a restart is the safe way out. */
  | { readonly result: 'failed'; readonly reason: string }
);

/** A valid change the running daemon cannot take in place. */
export interface Refusal {
  /** Dotted key as check-config names it (`vips[0].listeners[1].pool`). */
  readonly key: string;
  readonly path: ReadonlyArray<string | number>;
  readonly message: string;
}

/** What the daemon offers the reloader. */
export interface ReloadTarget {
  /** The config running now. */
  readonly config: Config;
  /**
   * Changes the running node cannot take although the file is valid (e.g. a listener moving to another
   * pool or data path), each naming its key (`path` locates its line); empty when `apply` can take them all.
   */
  refusals(next: Config, changes: ConfigChanges): readonly Refusal[];
  /** Applies an accepted config in place; from then on `config` is `next`. */
  apply(next: Config, changes: ConfigChanges): Promise<void>;
}

export interface ConfigReloaderOptions {
  /** The file the daemon was started with; every reload reads this one again. */
  readonly file: string;
  readonly target: ReloadTarget;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Reads the file (tests replace it). */
  readonly read?: (file: string) => Promise<string>;
}

export class ConfigReloader {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly read: (file: string) => Promise<string>;

  constructor(private readonly options: ConfigReloaderOptions) {
    this.read = options.read ?? ((file) => readFile(file, 'utf8'));
  }

  get file(): string {
    return this.options.file;
  }

  /** Reloads once; `source` says who asked (`SIGHUP`, `admin socket ...`), for the log. Never rejects. */
  reload(source: string): Promise<ReloadResult> {
    const run = this.queue.then(() => this.reloadOnce(source));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async reloadOnce(source: string): Promise<ReloadResult> {
    const { file, target, metrics } = this.options;
    const log = this.options.logger;
    const started = Date.now();
    const reject = (reason: string, issues: readonly ConfigIssue[]): ReloadResult => {
      metrics.configReloads.inc({ result: 'rejected' });
      log.error(
        { event: 'reload', result: 'rejected', source, file, issues: issues.map((i) => ({ key: i.path, line: i.line, col: i.col, message: i.message })) },
        `reload of ${file} rejected (${source}); the old config keeps serving: ${reason}`,
      );
      return { file, result: 'rejected', reason, issues };
    };

    let text: string;
    try {
      text = await this.read(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? errorMessage(err);
      return reject(`${file}: cannot read config: ${code}`, [{ path: '(file)', line: 0, col: 0, message: `cannot read: ${code}` }]);
    }
    let next: Config;
    try {
      next = parseConfig(text, file);
    } catch (err) {
      if (err instanceof ConfigError) return reject(err.message, err.issues);
      return reject(`${file}: ${errorMessage(err)}`, []);
    }

    const changes = diffConfig(target.config, next);
    const restart: ConfigIssue[] = changes.restartNeeded.map((r) => ({ path: r.key, ...keyPosition(text, r.path), message: `restart needed: ${r.reason}` }));
    const refused = [...restart, ...target.refusals(next, changes).map((r): ConfigIssue => ({ path: r.key, ...keyPosition(text, r.path), message: r.message }))];
    if (refused.length > 0) {
      return reject(refused.map((i) => `${file}:${i.line}:${i.col}: ${i.path}: ${i.message}`).join('\n'), refused);
    }

    if (isEmpty(changes)) {
      metrics.configReloads.inc({ result: 'unchanged' });
      log.info({ event: 'reload', result: 'unchanged', source, file }, `reload of ${file} (${source}): nothing changed`);
      return { file, result: 'unchanged', summary: 'nothing changed' };
    }

    const summary = summarize(changes);
    try {
      await target.apply(next, changes);
    } catch (err) {
      metrics.configReloads.inc({ result: 'failed' });
      log.error(
        { event: 'reload', result: 'failed', source, file, err: err instanceof Error ? (err.stack ?? err.message) : String(err) },
        `reload of ${file} (${source}) failed while applying (${summary}): ${errorMessage(err)}; restart vipd to be sure of its state`,
      );
      return { file, result: 'failed', reason: errorMessage(err) };
    }
    metrics.configReloads.inc({ result: 'applied' });
    log.info(
      {
        event: 'reload',
        result: 'applied',
        source,
        file,
        durationMs: Date.now() - started,
        vips: changes.vips,
        pools: changes.pools,
        peers: changes.peers,
        settings: changes.settings,
      },
      `reload of ${file} (${source}) applied: ${summary}`,
    );
    return { file, result: 'applied', summary, changes };
  }
}
