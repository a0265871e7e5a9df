import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Result of a finished command. A non-zero exit is data here, not an exception: tests assert on it. */
export interface ExecResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Kill the command after this long (SIGKILL); default 30 s, so a wedged tool cannot hang a test run. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is closed afterwards. */
  input?: string;
}

/** The repository root, from both test/lab/*.ts (ts-node style) and dist/test/lab/*.js. */
export const REPO_ROOT: string = (() => {
  const here = __dirname;
  const distMarker = `${path.sep}dist${path.sep}test${path.sep}lab`;
  if (here.endsWith(distMarker)) return here.slice(0, -distMarker.length);
  return path.resolve(here, '..', '..');
})();

export function run(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('run: empty argv'));
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        env: opts.env ?? process.env,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ code: 0, signal: null, stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null };
        // A missing binary surfaces as a string errno code; map it to 127 like a shell would.
        const code = typeof e.code === 'number' ? e.code : e.code === 'ENOENT' ? 127 : 1;
        resolve({ code, signal: e.signal ?? null, stdout: stdout ?? '', stderr: (stderr ?? '') + (typeof e.code === 'string' ? `${e.message}\n` : '') });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Like run(), but a failure throws with the command and its stderr, for setup steps that must not fail. */
export async function runOk(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}${r.signal ? `, ${r.signal}` : ''}): ${argv.join(' ')}\n${r.stderr.trim()}`);
  return r;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Thrown from a waitFor() predicate to stop waiting at once (e.g. the process being waited on died). */
export class WaitAborted extends Error {}

/**
 * Polls until predicate() is truthy and returns the elapsed milliseconds, which tests print as their
 * measured figure. A predicate that throws counts as "not yet": during convergence a vtysh or ip call may
 * fail transiently and that must not end the wait early. The last error is reported on timeout.
 * WaitAborted is the exception: it ends the wait immediately.
 */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  pollMs = 50,
  what = 'condition',
): Promise<number> {
  const start = performance.now();
  let lastError: unknown;
  for (;;) {
    try {
      if (await predicate()) return Math.round(performance.now() - start);
    } catch (err) {
      if (err instanceof WaitAborted) throw err;
      lastError = err;
    }
    const elapsed = performance.now() - start;
    if (elapsed >= timeoutMs) {
      const why = lastError instanceof Error ? `; last error: ${lastError.message}` : '';
      throw new Error(`timed out after ${Math.round(elapsed)} ms waiting for ${what}${why}`);
    }
    await sleep(Math.min(pollMs, Math.max(1, timeoutMs - elapsed)));
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // kill(0) succeeds on zombies; a zombie has nothing left to clean up, so count it as dead.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Process start time in clock ticks since boot (field 22 of /proc/PID/stat), to tell a reused pid apart. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}
