import type { ProxyLimitsSpec } from './proxy';

/** Which process-wide cap refused a client; used as the `reason` label of listenerRefused. */
export type LimitRefusal = 'globalLimit' | 'sourceLimit';

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

export function createConnectionLimits(spec: ProxyLimitsSpec): ConnectionLimits {
  return new ProcessConnectionLimits(spec);
}

class ProcessConnectionLimits implements ConnectionLimits {
  active = 0;
  private maxTotal = Infinity;
  private maxPerSource = Infinity;
  /** Only sources with a slot are present, so the map never grows past the connections open. */
  private readonly perSource = new Map<string, number>();

  constructor(spec: ProxyLimitsSpec) {
    this.update(spec);
  }

  update(spec: ProxyLimitsSpec): void {
    this.maxTotal = spec.maxConnections ?? Infinity;
    this.maxPerSource = spec.maxConnectionsPerSource ?? Infinity;
  }

  admit(source: string): LimitRefusal | undefined {
    if (this.active >= this.maxTotal) return 'globalLimit';
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
