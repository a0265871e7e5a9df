import { ADMIN_MAX_CONNECTIONS } from '../control/control';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { openFileCount, openFileLimit } from '../lib/process-fds';
import type { ProxyLimitsSpec } from './proxy';

/** Which process-wide cap refused a client; used as the `reason` label of listenerRefused. */
export type LimitRefusal = 'globalLimit' | 'fdLimit' | 'sourceLimit';

/**
 * Descriptors kept free for health probes (one per backend being checked), the BGP daemon's API and
 * log files. With them free, a node at its fd limit still checks its backends truthfully (a probe
 * failing with EMFILE would mark healthy backends down).
 */
export const PROBE_FD_RESERVE = 64;

/**
 * Descriptors kept free for everything that is not a client session: the probes' reserve plus one per
 * admin connection the admin server may hold (it refuses the 65th at once). 64 + 64 = 128: even 64 idle
 * admin connections leave the probes their 64, and /status and /metrics still answer at the limit.
 */
export const FD_HEADROOM = PROBE_FD_RESERVE + ADMIN_MAX_CONNECTIONS;

/**
 * The client sessions a process can carry with `limit` descriptors, `inUse` of which are taken
 * already (at start-up: stdio, epoll, listening sockets, logs), keeping FD_HEADROOM free: two per
 * session, the client's and the upstream's. Infinity when the limit is unknown or unlimited.
 */
export function sessionsByDescriptors(limit: number | undefined, inUse: number): number {
  if (limit === undefined) return Infinity;
  return Math.max(0, Math.floor((limit - inUse - FD_HEADROOM) / 2));
}

/**
 * Process-wide client connection caps, shared by every listener: one object per process, created by
 * the composition root and handed to each listener. A client admitted here holds its slot until its
 * session ends, whatever state the session is in (waiting for a first byte, queued, relaying).
 */
export interface ConnectionLimits {
  /** Takes a slot for a client from `source` (its IP address); returns the cap that refuses it, or undefined when admitted. */
  admit(source: string): LimitRefusal | undefined;
  /** Gives back the slot taken by a successful admit() for `source`. */
  release(source: string): void;
  /** Clients holding a slot now. */
  readonly active: number;
  /** Clients from `source` holding a slot now. */
  activeFrom(source: string): number;
  /** New caps for clients admitted from now on (a reload); clients already admitted keep their slots. */
  update(spec: ProxyLimitsSpec): void;
}

/**
 * `sessionCapacity` (sessionsByDescriptors) is a cap of its own, under the configured ones: a client
 * beyond it is refused with 'fdLimit', counted and reset at once, instead of being accepted and
 * dropped by libuv without a word when accept(2) fails with EMFILE, or blamed on a backend when the
 * upstream's socket(2) does.
 */
export function createConnectionLimits(spec: ProxyLimitsSpec, sessionCapacity = Infinity): ConnectionLimits {
  return new ProcessConnectionLimits(spec, sessionCapacity);
}

/**
 * The limits of this process: the configured caps, and the one its fd limit sets (read now, so call
 * it once the listeners' own descriptors and the logs are open or about to be). Logs the budget and
 * publishes it as vipd_proxy_fd_session_capacity.
 */
export function createProcessConnectionLimits(spec: ProxyLimitsSpec, log: Logger, metrics: Metrics): ConnectionLimits {
  const limit = openFileLimit();
  const inUse = openFileCount() ?? 0;
  const capacity = sessionsByDescriptors(limit, inUse);
  if (Number.isFinite(capacity)) metrics.fdSessionCapacity.set(capacity);
  const fields = { event: 'fdBudget', fdLimit: limit ?? 'unlimited', fdsInUse: inUse, fdHeadroom: FD_HEADROOM, sessionCapacity: Number.isFinite(capacity) ? capacity : 'unlimited' };
  if (capacity === 0) log.error(fields, `the fd limit (${limit}) leaves no descriptors for client connections: every client will be refused; raise LimitNOFILE`);
  else if (spec.maxConnections !== undefined && capacity < spec.maxConnections) {
    log.warn(fields, `the fd limit (${limit}) allows ${capacity} client connections, fewer than proxy.maxConnections (${spec.maxConnections}); raise LimitNOFILE`);
  } else log.info(fields, `fd limit ${limit ?? 'unlimited'}: room for ${fields.sessionCapacity} client connections`);
  return createConnectionLimits(spec, capacity);
}

class ProcessConnectionLimits implements ConnectionLimits {
  active = 0;
  private maxTotal = Infinity;
  private maxPerSource = Infinity;
  /** Only sources with a slot are present, so the map never grows past the connections open. */
  private readonly perSource = new Map<string, number>();

  constructor(
    spec: ProxyLimitsSpec,
    private readonly sessionCapacity: number,
  ) {
    this.update(spec);
  }

  update(spec: ProxyLimitsSpec): void {
    this.maxTotal = spec.maxConnections ?? Infinity;
    this.maxPerSource = spec.maxConnectionsPerSource ?? Infinity;
  }

  admit(source: string): LimitRefusal | undefined {
    if (this.active >= this.maxTotal) return 'globalLimit';
    if (this.active >= this.sessionCapacity) return 'fdLimit';
    // Counted per source even without a per-source cap, so that a reload adding one is exact at once.
    const fromSource = this.perSource.get(source) ?? 0;
    if (fromSource >= this.maxPerSource) return 'sourceLimit';
    this.perSource.set(source, fromSource + 1);
    this.active++;
    return undefined;
  }

  release(source: string): void {
    const fromSource = this.perSource.get(source);
    if (fromSource === undefined) return;
    if (fromSource <= 1) this.perSource.delete(source);
    else this.perSource.set(source, fromSource - 1);
    this.active--;
  }

  activeFrom(source: string): number {
    return this.perSource.get(source) ?? 0;
  }
}
