import { run as runCommand, sleep, type ExecResult } from '../test/lab/util';
import * as path from 'node:path';

/**
 * Small helpers shared by the benchmark's files (command running comes from the lab's helpers). The
 * benchmark deliberately imports nothing from src/:
 * it drives vipd only through its CLI, as an operator would, so a transiently broken src/ tree can
 * still be benchmarked from its last good build.
 */

/** Repository root, found from dist/bench/*.js (the only place this code runs from). */
export const REPO_ROOT: string = path.resolve(__dirname, '..', '..');

/** vipd's CLI entry point in the build output. */
export const VIPD_BIN = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'bin.js');

export type { ExecResult } from '../test/lab/util';

/**
 * The lab's command runner with the benchmark's longer default deadline (a load run takes a while).
 * A non-zero exit is returned, not thrown: callers decide what it means.
 */
export function run(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return runCommand(argv, { timeoutMs: opts.timeoutMs ?? 60_000, ...(opts.input !== undefined ? { input: opts.input } : {}) });
}

/** Like run(), for steps the benchmark cannot go on without. */
export async function runOk(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${argv.join(' ')}\n${(r.stderr || r.stdout).trim()}`);
  return r;
}

export { sleep };

/** Thrown from a waitFor() predicate to stop waiting at once (the process waited on has died). */
export class WaitAborted extends Error {}

/**
 * Polls predicate until it is true; throws with `what` and the last error after timeoutMs. A predicate
 * that throws counts as "not yet" (a connection refused while a proxy binds), except for WaitAborted.
 */
export async function waitFor(what: string, predicate: () => Promise<boolean> | boolean, timeoutMs: number, pollMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await predicate()) return;
    } catch (err) {
      if (err instanceof WaitAborted) throw err;
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${errorText(lastError)}` : ''}`);
    }
    await sleep(pollMs);
  }
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Progress goes to stderr so that stdout carries only the result tables (easy to redirect into a file). */
export function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}
