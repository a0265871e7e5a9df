import type { DrainInfo } from '../announce/drain-sequence';
import type { AnnounceReconciler } from '../announce/reconciler';
import type { DaemonStatus, DrainOrigin, DrainPhaseStatus } from '../control/control';
import type { PoolLoad } from '../dataplane/data-plane';
import type { PoolSnapshot } from '../health/health';
import { peerAnnounceStates } from '../speaker/peer-announce';
import type { Speaker } from '../speaker/speaker';
import type { DrainMark } from '../state/state';
import type { HeldDrain } from './drains';

/** Everything the status reply reads, as the daemon holds it now. */
export interface StatusInputs {
  readonly node: string;
  readonly version: string;
  readonly shuttingDown: boolean;
  readonly nodeDrain: HeldDrain<DrainMark> | undefined;
  readonly vipDrain: (vip: string) => HeldDrain<DrainMark> | undefined;
  readonly backendDrain: (pool: string, backend: string) => HeldDrain<DrainMark> | undefined;
  readonly announce: ReturnType<AnnounceReconciler['status']>;
  readonly peers: ReturnType<Speaker['peers']>;
  readonly advertised: ReturnType<Speaker['advertised']>;
  /** The speaker's read-back: desired per peer, drift, pending calls, last refused call. */
  readonly sync: ReturnType<Speaker['sync']>;
  /** The configured source address of the session with `peer` (beside a local router, docs/beside-frr.md). */
  readonly localAddress: (peer: string) => string | undefined;
  readonly listeners: ReadonlyArray<{ readonly vip: string; readonly id: string; readonly port: number; readonly pool: string; readonly bound: boolean; readonly activeSessions: number }>;
  readonly pools: ReadonlyArray<{ readonly name: string; readonly snapshot: PoolSnapshot; readonly load: PoolLoad }>;
  readonly drains: readonly DrainInfo[];
}

/** The reply of GET /status (and `vipd status`): pure over its inputs. */
export function statusReply(input: StatusInputs): DaemonStatus {
  const iso = (ms: number) => new Date(ms).toISOString();
  const { peers, advertised, sync } = input;
  return {
    node: input.node,
    version: input.version,
    drained: input.nodeDrain !== undefined,
    ...(input.nodeDrain ? { drain: drainOrigin(input.nodeDrain) } : {}),
    shuttingDown: input.shuttingDown,
    vips: input.announce.map((a) => {
      const drain = input.vipDrain(a.vip);
      return {
        name: a.vip,
        prefix: a.prefix,
        state: a.state,
        reason: a.reason,
        detail: a.detail,
        since: iso(a.since),
        penalty: a.penalty,
        ...(a.suppressedUntil !== undefined ? { suppressedUntil: iso(a.suppressedUntil) } : {}),
        ...(drain ? { drain: drainOrigin(drain) } : {}),
        listeners: input.listeners.filter((l) => l.vip === a.vip).map(({ vip: _, ...l }) => l),
        // Pessimized and draining paths are advertised too: per peer they are announced or not.
        peers: peerAnnounceStates(a.prefix, { state: a.state === 'withdrawn' ? 'withdrawn' : 'announced', reason: a.reason }, peers, advertised),
      };
    }),
    pools: input.pools.map((p) => ({
      name: p.name,
      healthy: p.snapshot.healthy.length,
      backends: p.snapshot.backends.map((b) => {
        const counters = p.load.counters(b.backend.key);
        const drain = input.backendDrain(p.name, b.backend.key);
        return {
          address: b.backend.key,
          health: b.state,
          since: iso(b.since),
          ...(b.lastResult
            ? { lastCheck: { ok: b.lastResult.ok, detail: b.lastResult.detail, durationMs: Math.round(b.lastResult.durationMs), at: iso(b.lastResult.at) } }
            : {}),
          activeConnections: counters.active,
          totalConnections: counters.total,
          connectErrors: counters.connectErrors,
          ...(counters.ejectedUntil !== undefined ? { ejectedUntil: iso(counters.ejectedUntil) } : {}),
          drained: counters.drained,
          ...(drain ? { drain: drainOrigin(drain) } : {}),
        };
      }),
    })),
    peers: peers.map((p) => ({
      address: p.address,
      asn: p.asn,
      state: p.state,
      since: iso(p.since),
      families: p.families,
      ...(p.negotiated ? { negotiated: p.negotiated } : {}),
      advertised: advertised.get(p.address) ?? [],
      ...localAddressOf(input.localAddress(p.address)),
      desired: sync.desired.get(p.address) ?? [],
      ...(sync.drift.has(p.address) ? { drift: sync.drift.get(p.address)! } : {}),
    })),
    speakerSync: {
      state: sync.state,
      since: iso(sync.since),
      pendingAdd: sync.pendingAdd,
      pendingDelete: sync.pendingDelete,
      ...(sync.lastError ? { lastError: { at: iso(sync.lastError.at), call: sync.lastError.call, reply: sync.lastError.reply } } : {}),
    },
    drains: input.drains.map(drainPhaseStatus),
  };
}

function drainPhaseStatus(d: DrainInfo): DrainPhaseStatus {
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    target: d.target,
    phase: d.phase,
    drainedBy: d.source,
    drainedAt: d.at,
    ...(d.graceUntil !== undefined ? { graceUntil: iso(d.graceUntil) } : {}),
    ...(d.closeAt !== undefined ? { closeAt: iso(d.closeAt) } : {}),
    ...(d.restoredFrom !== undefined ? { restoredFrom: d.restoredFrom } : {}),
  };
}

function localAddressOf(localAddress: string | undefined): { localAddress?: string } {
  return localAddress !== undefined ? { localAddress } : {};
}

function drainOrigin(mark: HeldDrain<DrainMark>): DrainOrigin {
  return { drainedBy: mark.source, drainedAt: mark.at, ...(mark.restoredFrom !== undefined ? { restoredFrom: mark.restoredFrom } : {}) };
}
