import { spawn, type ChildProcess } from 'node:child_process';
import type { Clock, TimerHandle } from '../lib/clock';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import type { VipStateChange } from './reconciler';

/** Output of a hook kept for the log line; the rest is read and dropped so the child never blocks on a pipe. */
const OUTPUT_LIMIT = 4096;

export interface HookSpec {
  /** argv; argv[0] is run directly, no shell. */
  readonly argv: readonly string[];
  readonly timeoutMs: number;
}

export interface HookRunnerOptions {
  readonly hook: HookSpec;
  readonly node: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Test seam: how the child is started. */
  readonly spawnProcess?: (argv: readonly string[], env: NodeJS.ProcessEnv) => ChildProcess;
}

interface VipSlot {
  running: boolean;
  /** The newest change seen while a run was going on; older ones coalesce into it. */
  pending: VipStateChange | undefined;
  /** The state the last started run reported, so a coalesced change reports where it came from. */
  lastReported: VipStateChange | undefined;
}

/**
 * Runs hooks.onChange for VIP state changes, off the decision path: notify() only records the change
 * and returns, so no announcement ever waits for a hook. At most one run per VIP at a time; changes
 * that arrive during a run coalesce into one run for the newest state (its VIPD_PREVIOUS_STATE is the
 * state the previous run reported, so the hook sees a continuous history). A run past its timeout is
 * killed (SIGKILL to its process group); a failing, hanging or unstartable hook is logged and counted.
 */
export class HookRunner {
  private readonly slots = new Map<string, VipSlot>();
  private readonly children = new Set<ChildProcess>();
  private closed = false;

  constructor(private readonly options: HookRunnerOptions) {}

  notify(change: VipStateChange): void {
    if (this.closed) return;
    let slot = this.slots.get(change.vip);
    if (!slot) {
      slot = { running: false, pending: undefined, lastReported: undefined };
      this.slots.set(change.vip, slot);
    }
    if (slot.running) {
      slot.pending = change;
      return;
    }
    this.run(slot, change);
  }

  /** Resolves when no hook runs and none is pending (tests). */
  async idle(): Promise<void> {
    while ([...this.slots.values()].some((s) => s.running || s.pending)) await new Promise((r) => setTimeout(r, 10));
  }

  /** Stops starting hooks and kills those running. Idempotent. */
  close(): void {
    this.closed = true;
    for (const child of this.children) killGroup(child);
  }

  private run(slot: VipSlot, change: VipStateChange): void {
    const previous = slot.lastReported && slot.lastReported.state !== change.previous ? slot.lastReported.state : change.previous;
    slot.lastReported = change;
    slot.running = true;
    const { hook, logger, metrics, clock } = this.options;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      VIPD_VIP: change.vip,
      VIPD_STATE: change.state,
      VIPD_PREVIOUS_STATE: previous,
      VIPD_REASON: change.reason,
      VIPD_NODE: this.options.node,
    };
    const log = logger.child({ vip: change.vip });
    const started = clock.now();
    let output = '';
    let timedOut = false;
    let timer: TimerHandle | undefined;
    const finish = (result: 'ok' | 'failed' | 'timeout' | 'error', detail: string): void => {
      timer?.cancel();
      metrics.hookRuns.inc({ vip: change.vip, result });
      const ms = Math.round(clock.now() - started);
      const fields = { event: 'hook', vip: change.vip, state: change.state, previous, result, ms, argv: hook.argv, output: output.trim() };
      if (result === 'ok') log.info(fields, `hook for ${change.vip} (${previous} -> ${change.state}) done in ${ms} ms`);
      else log.warn(fields, `hook for ${change.vip} (${previous} -> ${change.state}) ${detail}`);
      slot.running = false;
      const next = slot.pending;
      slot.pending = undefined;
      if (next && !this.closed) this.run(slot, next);
    };
    let child: ChildProcess;
    try {
      child = (this.options.spawnProcess ?? defaultSpawn)(hook.argv, env);
    } catch (err) {
      finish('error', `could not start: ${errorMessage(err)}`);
      return;
    }
    this.children.add(child);
    const collect = (chunk: Buffer) => {
      if (output.length < OUTPUT_LIMIT) output += chunk.toString('utf8').slice(0, OUTPUT_LIMIT - output.length);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    let done = false;
    const end = (result: 'ok' | 'failed' | 'timeout' | 'error', detail: string) => {
      if (done) return;
      done = true;
      this.children.delete(child);
      finish(result, detail);
    };
    child.once('error', (err) => end('error', `could not start: ${errorMessage(err)}`));
    child.once('close', (code, signal) => {
      if (timedOut) end('timeout', `killed after its timeout of ${hook.timeoutMs} ms`);
      else if (code === 0) end('ok', 'done');
      else end('failed', `failed (${signal ? `signal ${signal}` : `exit ${code}`})`);
    });
    timer = clock.setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, hook.timeoutMs);
  }
}

function defaultSpawn(argv: readonly string[], env: NodeJS.ProcessEnv): ChildProcess {
  // Its own process group, so that a timeout kills what the hook started too (a shell script's children).
  return spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
