import type { Clock, TimerHandle } from '../lib/clock';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';

/**
 * Planned maintenance of the node or of one VIP (RFC 8326):
 * 1. `grace`: the path stays advertised with the draining attributes (GRACEFUL_SHUTDOWN), so the
 *    fabric moves new flows away while the BGP session and the path stay up;
 * 2. `withdrawn`: after the grace the path is withdrawn;
 * 3. `closed`: at closeAfter (counted from the start of the drain, off by default) the client
 *    connections that remain are closed.
 * A drain restored from the state file after a restart starts at `withdrawn`: it was past its grace,
 * or the process that ran it is gone, and a drained node must never announce for an instant.
 */
export type DrainPhase = 'grace' | 'withdrawn' | 'closed';

/** `undefined` drains the whole node. */
export type DrainTarget = string | undefined;

export interface DrainInfo {
  /** "node" or the VIP name. */
  readonly target: string;
  readonly vip?: string;
  readonly phase: DrainPhase;
  readonly source: string;
  /** ISO 8601 time the drain began. */
  readonly at: string;
  /** Wall-clock ms at which the grace ends (the withdraw); absent once past or for a restored drain. */
  readonly graceUntil?: number;
  /** Wall-clock ms at which remaining connections are closed; absent when closeAfter is off or past. */
  readonly closeAt?: number;
  readonly restoredFrom?: string;
}

export interface DrainSequenceOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Off when undefined. */
  readonly closeAfterMs: number | undefined;
  /** A phase changed: re-evaluate the announcements. */
  onPhase(target: DrainTarget, phase: DrainPhase): void;
  /** closeAfter came: close the client connections of the target's listeners. */
  closeConnections(target: DrainTarget): void;
}

interface Running {
  info: DrainInfo;
  timers: TimerHandle[];
}

const NODE = 'node';

function keyOf(target: DrainTarget): string {
  return target === undefined ? NODE : `vip:${target}`;
}

export class DrainSequence {
  private readonly drains = new Map<string, Running>();

  constructor(private readonly options: DrainSequenceOptions) {}

  /** Starts the sequence for `target`; a drain already held is left as it is (returns false). */
  begin(target: DrainTarget, mark: { source: string; at: string }, graceMs: number): boolean {
    const key = keyOf(target);
    if (this.drains.has(key)) return false;
    const { clock } = this.options;
    const wall = clock.wallNow();
    const closeAfter = this.options.closeAfterMs;
    const running: Running = {
      info: {
        target: target ?? NODE,
        ...(target !== undefined ? { vip: target } : {}),
        phase: graceMs > 0 ? 'grace' : 'withdrawn',
        source: mark.source,
        at: mark.at,
        ...(graceMs > 0 ? { graceUntil: wall + graceMs } : {}),
        ...(closeAfter !== undefined ? { closeAt: wall + Math.max(closeAfter, graceMs) } : {}),
      },
      timers: [],
    };
    this.drains.set(key, running);
    this.log(running, `drain of ${running.info.target} by ${mark.source}: ${graceMs > 0 ? `GRACEFUL_SHUTDOWN for ${graceMs} ms, then withdraw` : 'withdraw now'}${closeAfter !== undefined ? `; connections closed after ${Math.max(closeAfter, graceMs)} ms` : ''}`);
    if (graceMs > 0) running.timers.push(clock.setTimeout(() => this.setPhase(key, 'withdrawn'), graceMs));
    if (closeAfter !== undefined) running.timers.push(clock.setTimeout(() => this.closeNow(key), Math.max(closeAfter, graceMs)));
    this.gauge(running.info);
    this.options.onPhase(target, running.info.phase);
    return true;
  }

  /** A drain from the state file: already withdrawn, no grace, nothing to close. */
  restore(target: DrainTarget, mark: { source: string; at: string }, file: string): void {
    const key = keyOf(target);
    const info: DrainInfo = { target: target ?? NODE, ...(target !== undefined ? { vip: target } : {}), phase: 'withdrawn', source: mark.source, at: mark.at, restoredFrom: file };
    this.drains.set(key, { info, timers: [] });
    this.gauge(info);
    this.options.onPhase(target, 'withdrawn');
  }

  /** Ends the drain of `target` (undrain): its timers stop, announcements go back through the gate. */
  end(target: DrainTarget): boolean {
    const key = keyOf(target);
    const running = this.drains.get(key);
    if (!running) return false;
    for (const t of running.timers) t.cancel();
    this.drains.delete(key);
    for (const phase of ['grace', 'withdrawn', 'closed'] as const) this.options.metrics.vipDrainPhase.remove({ target: running.info.target, phase });
    this.options.onPhase(target, 'withdrawn');
    return true;
  }

  has(target: DrainTarget): boolean {
    return this.drains.has(keyOf(target));
  }

  get(target: DrainTarget): DrainInfo | undefined {
    return this.drains.get(keyOf(target))?.info;
  }

  /**
   * How a VIP is drained, the node's drain included: `withdrawn` when either is past its grace,
   * `grace` when one is in its grace, undefined when neither holds.
   */
  phaseFor(vip: string): 'grace' | 'withdrawn' | undefined {
    const phases = [this.drains.get(NODE)?.info.phase, this.drains.get(keyOf(vip))?.info.phase];
    if (phases.some((p) => p === 'withdrawn' || p === 'closed')) return 'withdrawn';
    if (phases.includes('grace')) return 'grace';
    return undefined;
  }

  list(): readonly DrainInfo[] {
    return [...this.drains.values()].map((d) => d.info);
  }

  /** Stops every timer (daemon stop); the drains themselves live on in the state file. */
  close(): void {
    for (const d of this.drains.values()) for (const t of d.timers) t.cancel();
  }

  private setPhase(key: string, phase: DrainPhase): void {
    const running = this.drains.get(key);
    if (!running || running.info.phase === phase) return;
    const { graceUntil: _, ...rest } = running.info;
    running.info = { ...rest, phase };
    this.log(running, `drain of ${running.info.target}: ${phase === 'withdrawn' ? 'grace over, withdrawing' : phase}`);
    this.gauge(running.info);
    this.options.onPhase(running.info.vip, phase);
  }

  private closeNow(key: string): void {
    const running = this.drains.get(key);
    if (!running) return;
    this.setPhase(key, 'withdrawn');
    const { closeAt: _, ...rest } = running.info;
    running.info = { ...rest, phase: 'closed' };
    this.log(running, `drain of ${running.info.target}: closeAfter reached, closing the remaining client connections`);
    this.gauge(running.info);
    this.options.closeConnections(running.info.vip);
  }

  private gauge(info: DrainInfo): void {
    for (const phase of ['grace', 'withdrawn', 'closed'] as const) this.options.metrics.vipDrainPhase.set({ target: info.target, phase }, phase === info.phase ? 1 : 0);
  }

  private log(running: Running, msg: string): void {
    this.options.logger.info({ event: 'drainPhase', target: running.info.target, phase: running.info.phase, source: running.info.source }, msg);
  }
}
