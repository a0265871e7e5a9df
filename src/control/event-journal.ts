import { ListenerSet } from '../lib/listener-set';
import type { DaemonStatus } from './control';

export type JournalKind = 'announce' | 'withdraw' | 'health' | 'drain' | 'peer' | 'reload';

/** One transition as the status page's timeline shows it. */
export interface JournalEvent {
  /** ISO time of the transition (the component's own `since` when it has one). */
  readonly at: string;
  readonly kind: JournalKind;
  /** What changed: a VIP, `pool/backend`, a peer, or `node`. */
  readonly subject: string;
  readonly from?: string;
  readonly to: string;
  readonly reason?: string;
}

/** Transitions kept; the page shows the last this many. */
export const JOURNAL_CAPACITY = 200;

/**
 * The last JOURNAL_CAPACITY transitions of the node, newest last. It is fed by diffing successive
 * status snapshots (observe()): every state the page shows comes from the same status, so the
 * timeline can never disagree with the tables beside it, and no component needs a second event path.
 * Events that leave no trace in the status (a reload) are recorded directly with record().
 */
export class EventJournal {
  private readonly events: JournalEvent[] = [];
  private previous: Snapshot | undefined;
  private readonly listeners: ListenerSet<JournalEvent>;

  constructor(
    private readonly capacity = JOURNAL_CAPACITY,
    onListenerError: (err: unknown) => void = () => {},
  ) {
    this.listeners = new ListenerSet(onListenerError);
  }

  record(event: JournalEvent): void {
    this.events.push(event);
    if (this.events.length > this.capacity) this.events.splice(0, this.events.length - this.capacity);
    this.listeners.emit(event);
  }

  /** Oldest first. */
  list(): readonly JournalEvent[] {
    return [...this.events];
  }

  /** Told after each recorded event. Returns an unsubscribe. */
  onEvent(listener: (event: JournalEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  /**
   * Records what changed since the previous snapshot. The first snapshot is the baseline: only
   * what is not at its starting value is recorded (a VIP already announced, a backend already down).
   */
  observe(status: DaemonStatus, now: string = new Date().toISOString()): void {
    const next = snapshotOf(status);
    const before = this.previous;
    this.previous = next;
    const found: JournalEvent[] = [];
    for (const [name, vip] of next.vips) {
      const old = before?.vips.get(name);
      if (old ? old.state === vip.state && old.reason === vip.reason : vip.state === 'withdrawn' && vip.reason === 'starting') continue;
      found.push({
        at: vip.since,
        // Pessimized and draining paths are still advertised (issue 10 policy).
        kind: vip.state === 'withdrawn' ? 'withdraw' : 'announce',
        subject: name,
        ...(old ? { from: `${old.state} (${old.reason})` } : {}),
        to: vip.state,
        reason: vip.reason,
      });
    }
    for (const [key, backend] of next.backends) {
      const old = before?.backends.get(key);
      if (old ? old.health !== backend.health : backend.health !== 'unknown') {
        found.push({ at: backend.since, kind: 'health', subject: key, ...(old ? { from: old.health } : {}), to: backend.health, ...(backend.detail ? { reason: backend.detail } : {}) });
      }
      if ((old?.drainedBy ?? undefined) !== backend.drainedBy && (old || backend.drainedBy !== undefined)) {
        found.push({ at: backend.drainedAt ?? now, kind: 'drain', subject: key, to: backend.drainedBy !== undefined ? 'drained' : 'undrained', ...(backend.drainedBy ? { reason: backend.drainedBy } : {}) });
      }
    }
    const oldNode = before?.nodeDrainedBy;
    if (oldNode !== next.nodeDrainedBy && (before || next.nodeDrainedBy !== undefined)) {
      found.push({ at: next.nodeDrainedAt ?? now, kind: 'drain', subject: 'node', to: next.nodeDrainedBy !== undefined ? 'drained' : 'undrained', ...(next.nodeDrainedBy ? { reason: next.nodeDrainedBy } : {}) });
    }
    for (const [address, peer] of next.peers) {
      const old = before?.peers.get(address);
      if (old ? old.state === peer.state : peer.state !== 'established') continue;
      found.push({ at: peer.since, kind: 'peer', subject: `peer ${address}`, ...(old ? { from: old.state } : {}), to: peer.state });
    }
    // Several components can change within one observation: keep the timeline in time order.
    found.sort((a, b) => a.at.localeCompare(b.at));
    for (const event of found) this.record(event);
  }
}

interface Snapshot {
  readonly vips: Map<string, { state: string; reason: string; since: string }>;
  readonly backends: Map<string, { health: string; since: string; detail?: string; drainedBy?: string; drainedAt?: string }>;
  readonly peers: Map<string, { state: string; since: string }>;
  readonly nodeDrainedBy?: string;
  readonly nodeDrainedAt?: string;
}

function snapshotOf(status: DaemonStatus): Snapshot {
  return {
    vips: new Map(status.vips.map((v) => [v.name, { state: v.state, reason: v.reason, since: v.since }])),
    backends: new Map(
      status.pools.flatMap((p) =>
        p.backends.map((b) => [
          `${p.name}/${b.address}`,
          {
            health: b.health,
            since: b.since,
            ...(b.lastCheck && !b.lastCheck.ok ? { detail: b.lastCheck.detail } : {}),
            ...(b.drain ? { drainedBy: b.drain.drainedBy, drainedAt: b.drain.drainedAt } : b.drained ? { drainedBy: 'operator' } : {}),
          },
        ]),
      ),
    ),
    peers: new Map(status.peers.map((p) => [p.address, { state: p.state, since: p.since }])),
    ...(status.drain ? { nodeDrainedBy: status.drain.drainedBy, nodeDrainedAt: status.drain.drainedAt } : status.drained ? { nodeDrainedBy: 'operator' } : {}),
  };
}
