import type { Clock, TimerHandle } from '../lib/clock';
import { errorMessage } from '../lib/errors';
import { ListenerSet } from '../lib/listener-set';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { LatestOnlyQueue } from '../lib/serial-queue';
import type { Advertisement, Speaker } from '../speaker/speaker';
import { FlapDamping, type DampingSpec } from './damping';
import { decide, isHealthReason, type Decision, type RouteState, type VipInput } from './decide';

/** RFC 8326 GRACEFUL_SHUTDOWN: a receiver lowers the path's local-pref to 0. */
export const GRACEFUL_SHUTDOWN_COMMUNITY = '65535:0';

/** What the reconciler needs to know about one VIP; the composition root provides it. */
export interface VipSource {
  readonly name: string;
  /** The path while the gate passes (attributes.up). */
  readonly advertisement: Advertisement;
  /** The path while pessimized (attributes.pessimized); the up path when unset. */
  readonly pessimized?: Advertisement;
  /** The path in a drain's grace (attributes.draining); GRACEFUL_SHUTDOWN is added whatever it says. */
  readonly draining?: Advertisement;
  /** Flap damping of this VIP; none when unset (the hold-down still applies). */
  readonly damping?: DampingSpec;
  /** Current inputs, read fresh on every evaluation. */
  inputs(): VipInput;
}

/** `announced` is the up path; `pessimized` and `draining` are advertised too, with their attributes. */
export type VipState = 'announced' | 'pessimized' | 'draining' | 'withdrawn';

export interface VipAnnounceStatus {
  readonly vip: string;
  readonly prefix: string;
  readonly state: VipState;
  readonly reason: Decision['reason'];
  readonly detail: string;
  /** Wall-clock ms of the last change of state or reason. */
  readonly since: number;
  /** RFC 2439 penalty now (0 without damping). */
  readonly penalty: number;
  /** Wall-clock ms at which a damping suppression ends if the VIP does not flap again. */
  readonly suppressedUntil?: number;
}

/** A change of a VIP's state, as hooks and logs see it. */
export interface VipStateChange {
  readonly vip: string;
  readonly state: VipState;
  readonly previous: VipState;
  readonly reason: Decision['reason'];
  readonly detail: string;
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

interface VipRecord {
  /** Replaced on reload (setVips); state, hold-down and damping stay. */
  source: VipSource;
  /** The advertised path's attribute set; undefined while withdrawn. */
  route: RouteState | undefined;
  reason: Decision['reason'];
  detail: string;
  since: number;
  /** Monotonic ms before which a health-caused withdrawal may not be undone. */
  holdUntil: number;
  readonly damping: FlapDamping | undefined;
}

const STATE_OF: Record<RouteState, VipState> = { up: 'announced', pessimized: 'pessimized', draining: 'draining' };

function stateOf(route: RouteState | undefined): VipState {
  return route === undefined ? 'withdrawn' : STATE_OF[route];
}

/** The draining path: the configured draining attributes (or the up path's), always with GRACEFUL_SHUTDOWN. */
function drainingAdvertisement(source: VipSource): Advertisement {
  const base = source.draining ?? source.advertisement;
  const communities = base.communities.includes(GRACEFUL_SHUTDOWN_COMMUNITY) ? base.communities : [...base.communities, GRACEFUL_SHUTDOWN_COMMUNITY];
  return { ...base, communities };
}

/**
 * Turns decisions into the speaker's desired set. Only this class calls the speaker, one push at a
 * time; each push carries the full set, so a newer push simply replaces an older pending one. Between
 * decide() and the speaker sit the hold-down and flap damping (RFC 2439), both per VIP.
 */
export class AnnounceReconciler {
  private records: VipRecord[];
  private holdDownMs: number;
  private readonly queue = new LatestOnlyQueue();
  private readonly changes: ListenerSet<VipStateChange>;
  private timer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly options: ReconcilerOptions) {
    this.holdDownMs = options.holdDownMs;
    const now = options.clock.wallNow();
    this.changes = new ListenerSet((err) => options.logger.error({ event: 'listener', err: errorMessage(err) }, 'a VIP state listener threw'));
    this.records = options.vips.map((source) => ({
      source,
      route: undefined,
      reason: 'starting',
      detail: 'not evaluated yet',
      since: now,
      holdUntil: 0,
      damping: source.damping?.enabled ? new FlapDamping(source.damping) : undefined,
    }));
  }

  /** Tells `listener` of every change of a VIP's state (hooks); a throwing listener is logged. */
  onChange(listener: (change: VipStateChange) => void): () => void {
    return this.changes.add(listener);
  }

  /** Re-evaluates every VIP; call on any input change. Cheap when nothing changed. */
  evaluate(): void {
    if (this.closed) return;
    const now = this.options.clock.now();
    let changed = false;
    let nextWake = Infinity;
    for (const record of this.records) {
      let decision = decide(record.source.inputs());
      const reuseAt = decision.announce ? record.damping?.reuseAt(now) : undefined;
      if (decision.announce && reuseAt !== undefined) {
        const penalty = Math.round(record.damping!.penalty(now));
        decision = { announce: false, reason: 'damped', detail: `ready, but suppressed by flap damping (penalty ${penalty}) for ${Math.ceil((reuseAt - now) / 1000)} s more` };
        nextWake = Math.min(nextWake, reuseAt);
      } else if (decision.announce && now < record.holdUntil) {
        const waitMs = Math.ceil(record.holdUntil - now);
        decision = { announce: false, reason: 'holdDown', detail: `ready, but re-announce held down for ${waitMs}ms after a withdrawal` };
        nextWake = Math.min(nextWake, record.holdUntil);
      }
      const route = decision.announce ? decision.route : undefined;
      if (route === record.route && decision.reason === record.reason) {
        record.detail = decision.detail;
        continue;
      }
      if (record.route !== undefined && !decision.announce && isHealthReason(decision.reason)) {
        record.holdUntil = now + this.holdDownMs;
        if (record.damping?.withdrawn(now)) {
          const penalty = Math.round(record.damping.penalty(now));
          this.options.logger.warn({ event: 'damping', vip: record.source.name, penalty }, `${record.source.name} flaps: suppressed by flap damping (penalty ${penalty})`);
          const until = record.damping.reuseAt(now);
          if (until !== undefined) nextWake = Math.min(nextWake, until);
        }
      }
      if (this.transition(record, decision)) changed = true;
    }
    for (const record of this.records) {
      if (record.damping) this.options.metrics.dampingPenalty.set({ vip: record.source.name }, Math.round(record.damping.penalty(now)));
    }
    this.scheduleWake(nextWake, now);
    if (changed) this.push();
  }

  /**
   * Reload: the VIPs become `sources`. A VIP kept by name keeps its state, reason, hold-down and damping
   * penalty and takes its new source (attributes, gate, inputs); a new one starts as 'starting'; a
   * removed one leaves the desired set (withdrawn, logged with reason `removedByReload`). The set is
   * pushed only when an advertised VIP left or changed what it sends; the speaker diffs against what
   * gobgpd holds, so an unchanged path is never re-sent.
   */
  setVips(sources: readonly VipSource[]): void {
    if (this.closed) return;
    const old = new Map(this.records.map((r) => [r.source.name, r]));
    const now = this.options.clock.wallNow();
    let push = false;
    const next = sources.map((source): VipRecord => {
      const record = old.get(source.name);
      if (!record) {
        return { source, route: undefined, reason: 'starting', detail: 'added by reload', since: now, holdUntil: 0, damping: source.damping?.enabled ? new FlapDamping(source.damping) : undefined };
      }
      old.delete(source.name);
      if (record.route !== undefined) {
        const before = this.advertisementFor(record.source, record.route);
        const after = this.advertisementFor(source, record.route);
        if (JSON.stringify(before) !== JSON.stringify(after)) {
          push = true;
          this.options.logger.info(
            { event: 'route', op: 'update', vip: source.name, prefix: after.prefix, reason: 'reload', before, after },
            `update ${after.prefix}: reload changed its attributes`,
          );
        }
      }
      record.source = source;
      return record;
    });
    for (const gone of old.values()) {
      this.options.metrics.vipAnnounced.remove({ vip: gone.source.name });
      if (gone.route !== undefined) push = true;
      this.options.logger.info(
        { event: 'route', op: 'withdraw', vip: gone.source.name, prefix: gone.source.advertisement.prefix, reason: 'removedByReload', changed: gone.route !== undefined },
        `withdraw ${gone.source.advertisement.prefix}: removedByReload (the VIP is no longer in the config)`,
      );
    }
    this.records = next;
    if (push) this.push();
    this.evaluate();
  }

  /** Reload: the hold-down for withdrawals from now on (one under way keeps its end). */
  setHoldDown(ms: number): void {
    this.holdDownMs = ms;
  }

  /** Withdraws everything now and resolves once the speaker has applied it. */
  async withdrawAll(reason: 'shuttingDown'): Promise<void> {
    for (const record of this.records) {
      if (record.route !== undefined || record.reason !== reason) this.transition(record, { announce: false, reason, detail: 'vipd is shutting down' });
    }
    this.closed = true;
    this.timer?.cancel();
    this.push();
    await this.queue.idle();
  }

  status(): readonly VipAnnounceStatus[] {
    const now = this.options.clock.now();
    const wall = this.options.clock.wallNow();
    return this.records.map((r) => {
      const reuseAt = r.damping?.reuseAt(now);
      return {
        vip: r.source.name,
        prefix: r.source.advertisement.prefix,
        state: stateOf(r.route),
        reason: r.reason,
        detail: r.detail,
        since: r.since,
        penalty: Math.round(r.damping?.penalty(now) ?? 0),
        ...(reuseAt !== undefined ? { suppressedUntil: Math.round(wall + (reuseAt - now)) } : {}),
      };
    });
  }

  desired(): readonly Advertisement[] {
    return this.records.filter((r) => r.route !== undefined).map((r) => this.advertisementFor(r.source, r.route!));
  }

  /** Resolves when no push is running or pending. */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
  }

  private advertisementFor(source: VipSource, route: RouteState): Advertisement {
    if (route === 'up') return source.advertisement;
    if (route === 'pessimized') return source.pessimized ?? source.advertisement;
    return drainingAdvertisement(source);
  }

  /** Records the decision; returns true when the advertised set changes (a path added, removed or re-attributed). */
  private transition(record: VipRecord, decision: Decision): boolean {
    const previousRoute = record.route;
    const previous = stateOf(previousRoute);
    record.route = decision.announce ? decision.route : undefined;
    record.reason = decision.reason;
    record.detail = decision.detail;
    record.since = this.options.clock.wallNow();
    const state = stateOf(record.route);
    const { logger, metrics } = this.options;
    const vip = record.source.name;
    metrics.vipAnnounced.set({ vip }, decision.announce ? 1 : 0);
    for (const s of ['announced', 'pessimized', 'draining', 'withdrawn'] as const) metrics.vipState.set({ vip, state: s }, s === state ? 1 : 0);
    const action = decision.announce ? 'announce' : 'withdraw';
    const wasAnnounced = previousRoute !== undefined;
    if (wasAnnounced !== decision.announce) metrics.vipDecisions.inc({ vip, action, reason: decision.reason });
    const attrs = decision.announce ? ` with ${decision.route} attributes` : '';
    logger.info(
      { event: 'route', op: action, vip, prefix: record.source.advertisement.prefix, state, previous, reason: decision.reason, detail: decision.detail, changed: previousRoute !== record.route },
      `${action} ${record.source.advertisement.prefix}${attrs}: ${decision.reason} (${decision.detail})`,
    );
    if (previous !== state) this.changes.emit({ vip, state, previous, reason: decision.reason, detail: decision.detail });
    return previousRoute !== record.route;
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

  /** One timer for the earliest hold-down expiry or damping reuse, so the VIP returns without a new input change. */
  private scheduleWake(at: number, now: number): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (at === Infinity) return;
    this.timer = this.options.clock.setTimeout(() => this.evaluate(), Math.max(1, Math.ceil(at - now) + 1));
  }
}
