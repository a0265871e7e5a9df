import type { Clock, TimerHandle } from '../lib/clock';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { LatestOnlyQueue } from '../lib/serial-queue';
import type { Advertisement, Speaker } from '../speaker/speaker';
import { decide, isHealthReason, type Decision, type VipInput } from './decide';

/** What the reconciler needs to know about one VIP; the composition root provides it. */
export interface VipSource {
  readonly name: string;
  readonly advertisement: Advertisement;
  /** Current inputs, read fresh on every evaluation. */
  inputs(): VipInput;
}

export interface VipAnnounceStatus {
  readonly vip: string;
  readonly prefix: string;
  readonly state: 'announced' | 'withdrawn';
  readonly reason: Decision['reason'];
  readonly detail: string;
  /** Wall-clock ms of the last change of state or reason. */
  readonly since: number;
}

export interface ReconcilerOptions {
  readonly vips: readonly VipSource[];
  readonly speaker: Speaker;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** After a health-caused withdrawal, a VIP stays withdrawn at least this long (anti-flap). */
  readonly holdDownMs: number;
}

interface VipState {
  source: VipSource;
  announced: boolean;
  reason: Decision['reason'];
  detail: string;
  since: number;
  /** Monotonic ms before which a health-caused withdrawal may not be undone. */
  holdUntil: number;
}

/**
 * Turns decisions into the speaker's desired set. Only this class calls the speaker, one push at a
 * time; each push carries the full set, so a newer push simply replaces an older pending one.
 */
export class AnnounceReconciler {
  private states: VipState[];
  private holdDownMs: number;
  private readonly queue = new LatestOnlyQueue();
  private holdTimer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly options: ReconcilerOptions) {
    this.holdDownMs = options.holdDownMs;
    const now = options.clock.wallNow();
    this.states = options.vips.map((source) => ({
      source,
      announced: false,
      reason: 'starting',
      detail: 'not evaluated yet',
      since: now,
      holdUntil: 0,
    }));
  }

  /** Re-evaluates every VIP; call on any input change. Cheap when nothing changed. */
  evaluate(): void {
    if (this.closed) return;
    const now = this.options.clock.now();
    let changed = false;
    let nextHoldExpiry = Infinity;
    for (const state of this.states) {
      let decision = decide(state.source.inputs());
      if (decision.announce && now < state.holdUntil) {
        const waitMs = Math.ceil(state.holdUntil - now);
        decision = { announce: false, reason: 'holdDown', detail: `ready, but re-announce held down for ${waitMs}ms after a withdrawal` };
        nextHoldExpiry = Math.min(nextHoldExpiry, state.holdUntil);
      }
      if (decision.announce === state.announced && decision.reason === state.reason) {
        state.detail = decision.detail;
        continue;
      }
      if (state.announced && !decision.announce && isHealthReason(decision.reason)) {
        state.holdUntil = now + this.holdDownMs;
      }
      if (this.transition(state, decision)) changed = true;
    }
    this.scheduleHoldExpiry(nextHoldExpiry, now);
    if (changed) this.push();
  }

  /**
   * Reload: the VIPs become `sources`. A VIP kept by name keeps its state, reason and hold-down and
   * takes its new source (attributes, inputs); a new one starts as 'starting'; a removed one leaves the
   * desired set (withdrawn, logged with reason `removedByReload`). The set is pushed only when a VIP
   * that is announced left or changed what it sends; the speaker diffs against what gobgpd holds, so an
   * unchanged path is never re-sent.
   */
  setVips(sources: readonly VipSource[]): void {
    if (this.closed) return;
    const old = new Map(this.states.map((s) => [s.source.name, s]));
    const now = this.options.clock.wallNow();
    let push = false;
    const next = sources.map((source): VipState => {
      const state = old.get(source.name);
      if (!state) return { source, announced: false, reason: 'starting', detail: 'added by reload', since: now, holdUntil: 0 };
      old.delete(source.name);
      const before = state.source.advertisement;
      if (state.announced && JSON.stringify(before) !== JSON.stringify(source.advertisement)) {
        push = true;
        this.options.logger.info(
          { event: 'route', op: 'update', vip: source.name, prefix: source.advertisement.prefix, reason: 'reload', before, after: source.advertisement },
          `update ${source.advertisement.prefix}: reload changed its attributes`,
        );
      }
      state.source = source;
      return state;
    });
    for (const gone of old.values()) {
      this.options.metrics.vipAnnounced.remove({ vip: gone.source.name });
      if (gone.announced) push = true;
      this.options.logger.info(
        { event: 'route', op: 'withdraw', vip: gone.source.name, prefix: gone.source.advertisement.prefix, reason: 'removedByReload', changed: gone.announced },
        `withdraw ${gone.source.advertisement.prefix}: removedByReload (the VIP is no longer in the config)`,
      );
    }
    this.states = next;
    if (push) this.push();
    this.evaluate();
  }

  /** Reload: the hold-down for withdrawals from now on (one under way keeps its end). */
  setHoldDown(ms: number): void {
    this.holdDownMs = ms;
  }

  /** Withdraws everything now and resolves once the speaker has applied it. */
  async withdrawAll(reason: 'shuttingDown'): Promise<void> {
    for (const state of this.states) {
      if (state.announced || state.reason !== reason) this.transition(state, { announce: false, reason, detail: 'vipd is shutting down' });
    }
    this.closed = true;
    this.holdTimer?.cancel();
    this.push();
    await this.queue.idle();
  }

  status(): readonly VipAnnounceStatus[] {
    return this.states.map((s) => ({
      vip: s.source.name,
      prefix: s.source.advertisement.prefix,
      state: s.announced ? 'announced' : 'withdrawn',
      reason: s.reason,
      detail: s.detail,
      since: s.since,
    }));
  }

  desired(): readonly Advertisement[] {
    return this.states.filter((s) => s.announced).map((s) => s.source.advertisement);
  }

  /** Resolves when no push is running or pending. */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  close(): void {
    this.closed = true;
    this.holdTimer?.cancel();
  }

  /** Records the decision; returns true when the advertised set changes. */
  private transition(state: VipState, decision: Decision): boolean {
    const wasAnnounced = state.announced;
    state.announced = decision.announce;
    state.reason = decision.reason;
    state.detail = decision.detail;
    state.since = this.options.clock.wallNow();
    const { logger, metrics } = this.options;
    const vip = state.source.name;
    metrics.vipAnnounced.set({ vip }, decision.announce ? 1 : 0);
    const action = decision.announce ? 'announce' : 'withdraw';
    if (wasAnnounced !== decision.announce) metrics.vipDecisions.inc({ vip, action, reason: decision.reason });
    logger.info(
      { event: 'route', op: action, vip, prefix: state.source.advertisement.prefix, reason: decision.reason, detail: decision.detail, changed: wasAnnounced !== decision.announce },
      `${action} ${state.source.advertisement.prefix}: ${decision.reason} (${decision.detail})`,
    );
    return wasAnnounced !== decision.announce;
  }

  private push(): void {
    const ads = this.desired();
    this.queue.pushLatest(async () => {
      try {
        await this.options.speaker.setAdvertisements(ads);
      } catch (err) {
        // The speaker keeps the desired set and re-applies it when the daemon is back.
        this.options.logger.warn({ event: 'push', err: errorMessage(err), paths: ads.length }, 'speaker push failed; it will re-apply on reconnect');
      }
    });
  }

  private scheduleHoldExpiry(at: number, now: number): void {
    this.holdTimer?.cancel();
    this.holdTimer = undefined;
    if (at === Infinity) return;
    this.holdTimer = this.options.clock.setTimeout(() => this.evaluate(), Math.max(1, at - now + 1));
  }
}
