import { spawn } from 'node:child_process';
import type { Endpoint } from '../net/endpoint';
import { MAX_EXEC_OUTPUT_BYTES, type Probe, type ProbeResult } from './health';

export interface ExecProbeOptions {
  /** argv; run without a shell. argv[0] was checked at load (check-files.ts commandProblem). */
  readonly command: readonly string[];
}

/** After the command exits, how long its output may still drain before the verdict (a grandchild may hold the pipes). */
const OUTPUT_DRAIN_MS = 50;

/**
 * Runs a command per probe: exit 0 means up. The command gets VIPD_BACKEND_HOST and VIPD_BACKEND_PORT,
 * runs in a process group of its own, and at the timeout the whole group gets SIGKILL, so a hung
 * script and anything it started are gone before the next probe. Its stdout+stderr, interleaved as
 * they arrive, go into the detail, at most MAX_EXEC_OUTPUT_BYTES.
 */
export class ExecProbe implements Probe {
  readonly kind = 'exec';

  constructor(private readonly options: ExecProbeOptions) {}

  check(target: Endpoint, timeoutMs: number): Promise<ProbeResult> {
    const [file, ...args] = this.options.command;
    return new Promise((resolve) => {
      const startedAt = performance.now();
      let settled = false;
      let output = Buffer.alloc(0);
      let truncated = false;
      let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      let drainTimer: NodeJS.Timeout | undefined;

      const killGroup = (): void => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // Already gone (ESRCH): nothing left of the group to kill.
        }
      };
      const finish = (ok: boolean, detail: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        clearTimeout(drainTimer);
        // Nothing the check started outlives it, whatever the verdict.
        killGroup();
        child.stdout?.destroy();
        child.stderr?.destroy();
        const text = output.toString('utf8').trim();
        const shown = text === '' ? '' : `: ${text}${truncated ? ` …(output cut at ${MAX_EXEC_OUTPUT_BYTES} bytes)` : ''}`;
        resolve({ ok, detail: `${detail}${shown}`, durationMs: Math.round(performance.now() - startedAt) });
      };
      const verdict = (): void => {
        if (exit === undefined) return;
        if (exit.code === 0) finish(true, 'exit 0');
        else if (exit.code !== null) finish(false, `exit ${exit.code}`);
        else finish(false, `killed by ${exit.signal ?? 'a signal'}`);
      };

      const child = spawn(file!, args, {
        detached: true,
        shell: false,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, VIPD_BACKEND_HOST: target.host, VIPD_BACKEND_PORT: String(target.port) },
      });
      const deadline = setTimeout(() => {
        killGroup();
        finish(false, `timeout after ${timeoutMs}ms (exec, killed)`);
      }, timeoutMs);
      const collect = (chunk: Buffer): void => {
        const room = MAX_EXEC_OUTPUT_BYTES - output.length;
        if (chunk.length > room) truncated = true;
        if (room > 0) output = Buffer.concat([output, chunk.subarray(0, room)]);
      };
      child.stdout!.on('data', collect);
      child.stderr!.on('data', collect);
      child.once('error', (err: NodeJS.ErrnoException) => finish(false, `exec ${err.code ?? err.message}`));
      child.once('exit', (code, signal) => {
        exit = { code, signal };
        drainTimer = setTimeout(verdict, OUTPUT_DRAIN_MS);
      });
      child.once('close', verdict);
    });
  }
}
