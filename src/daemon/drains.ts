import { mkdir, stat } from 'node:fs/promises';
import { DrainSequence, type DrainInfo, type DrainTarget } from '../announce/drain-sequence';
import type { Config } from '../config/config';
import { AdminInputError, type DrainRequest } from '../control/control';
import type { DataPlanePool } from '../dataplane/data-plane';
import type { Clock } from '../lib/clock';
import { VipdError, errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { Metrics } from '../lib/metrics';
import { parseEndpoint } from '../net/endpoint';
import type { BackendDrainMark, DrainMark, DrainState, DrainStateStore, VipDrainMark } from '../state/state';

/**
 * The operator's drains as the daemon holds them: of the node, of single VIPs and of backends. Every
 * change is saved to the state file before it is applied, so a restart puts back exactly what was held.
 * The node and VIP drains run through the drain sequence (grace, withdrawn, closed); the announce
 * reconciler reads their phases, and is told (`onChange`) whenever a drain or a phase changes.
 *
 * This file is the daemon's only contract with its drains: the Daemon builds one and calls it.
 */

/** A drain as the daemon holds it: the persisted mark, plus the file it came from when restored at start. */
export type HeldDrain<M extends DrainMark> = M & { readonly restoredFrom?: string };

export interface DrainsOptions {
  /** The running config (a reload replaces it): VIPs, pools and their backends, drain.*, stateDir. */
  readonly config: () => Config;
  readonly store: DrainStateStore;
  /** The daemon's pools by name (a reload adds and removes them): a backend drain is applied to `load`. */
  readonly pools: ReadonlyMap<string, { readonly load: Pick<DataPlanePool, 'drainBackend'> }>;
  /** True once the daemon stops serving: a drain change is refused from then on. */
  readonly shuttingDown: () => boolean;
  /** A drain or a drain phase changed: the announce decision must be made again. */
  readonly onChange: () => void;
  /** Resolves when the announce reconciler has pushed what the last change asked for. */
  readonly settled: () => Promise<void>;
  /** drain.closeAfter: closes the client connections still open on the target's listeners. */
  readonly closeConnections: (target: DrainTarget) => void;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** How often drain.file is looked for. */
const DRAIN_FILE_CHECK_MS = 1000;

export class Drains {
  private nodeDrain: HeldDrain<DrainMark> | undefined;
  /** Drains of single VIPs, by VIP name. */
  private readonly vipDrains = new Map<string, HeldDrain<VipDrainMark>>();
  /** Keyed by backendDrainKey(pool, backend). */
  private readonly backendDrains = new Map<string, HeldDrain<BackendDrainMark>>();
  /** Phases and deadlines of the drains held (grace, withdrawn, closed). */
  private readonly sequence: DrainSequence;
  /** Drain changes run one at a time: each writes the whole state, so two at once could lose one. */
  private changes: Promise<void> = Promise.resolve();
  private fileCheck: { cancel(): void } | undefined;
  private closed = false;

  constructor(private readonly options: DrainsOptions) {
    this.sequence = new DrainSequence({
      clock: options.clock,
      logger: options.logger.child({ component: 'announce' }),
      metrics: options.metrics,
      closeAfterMs: options.config().drain.closeAfter,
      onPhase: () => options.onChange(),
      closeConnections: (target) => options.closeConnections(target),
    });
  }

  /**
   * Puts back the drains of the state file, then looks at drain.file (once now, then every second).
   * Runs first in the daemon's start, before the speaker or a listener exists, so a node drained before
   * a restart never announces for an instant. A state file that exists but cannot be read or parsed
   * rejects (see docs/operations.md): the node cannot know whether its operator drained it, so it must
   * not guess.
   */
  async start(): Promise<void> {
    await this.restore();
    await this.checkDrainFile();
  }

  /** Stops looking at drain.file and ends the sequence's timers. Idempotent. */
  close(): void {
    this.closed = true;
    this.fileCheck?.cancel();
    this.sequence.close();
  }

  // What the announce decision and the status read.

  /** The drain phase of `vip` (a node drain counts for every VIP). */
  phaseFor(vip: string): 'grace' | 'withdrawn' | undefined {
    return this.sequence.phaseFor(vip);
  }

  node(): HeldDrain<DrainMark> | undefined {
    return this.nodeDrain;
  }

  vip(vip: string): HeldDrain<VipDrainMark> | undefined {
    return this.vipDrains.get(vip);
  }

  backend(pool: string, backend: string): HeldDrain<BackendDrainMark> | undefined {
    return this.backendDrains.get(backendDrainKey(pool, backend));
  }

  /** The drains running through the sequence, with their phases and deadlines. */
  list(): readonly DrainInfo[] {
    return this.sequence.list();
  }

  // Changes (the admin API, drain.file, a reload).

  /** Drains the node, or `request.vip`; does nothing when it is already drained. */
  async drain(source: string, request: DrainRequest = {}): Promise<void> {
    const vip = request.vip;
    if (vip !== undefined) this.knownVip(vip);
    const graceMs = request.graceMs ?? this.options.config().drain.grace;
    await this.change(() => {
      const at = new Date(this.options.clock.wallNow()).toISOString();
      if (vip === undefined) {
        if (this.nodeDrain) return undefined;
        const mark = { source, at };
        return { state: { ...this.state(), node: mark }, apply: () => this.setNodeDrain(mark, source, graceMs) };
      }
      if (this.vipDrains.has(vip)) return undefined;
      const mark: VipDrainMark = { vip, source, at };
      const current = this.state();
      return { state: { ...current, vips: [...(current.vips ?? []), mark] }, apply: () => this.setVipDrain(mark, true, graceMs) };
    });
    await this.options.settled();
  }

  /** Ends the drain of the node, or of `request.vip`; does nothing when it is not drained. */
  async undrain(source: string, request: { readonly vip?: string } = {}): Promise<void> {
    const vip = request.vip;
    if (vip !== undefined) this.knownVip(vip);
    await this.change(() => {
      if (vip === undefined) {
        if (!this.nodeDrain) return undefined;
        const { node: _, ...rest } = this.state();
        return { state: rest, apply: () => this.setNodeDrain(undefined, source) };
      }
      const held = this.vipDrains.get(vip);
      if (!held) return undefined;
      const current = this.state();
      return { state: { ...current, vips: (current.vips ?? []).filter((v) => v.vip !== vip) }, apply: () => this.setVipDrain({ ...held, source }, false, 0) };
    });
    await this.options.settled();
  }

  /** Drains or undrains one backend of a pool; unknown pools and backends are refused by name. */
  async drainBackend(poolName: string, backend: string, drained: boolean, source: string): Promise<void> {
    const pool = this.options.pools.get(poolName);
    if (!pool) throw new AdminInputError(404, `no pool "${poolName}"; pools: ${[...this.options.pools.keys()].join(', ')}`);
    const configured = this.options.config().pools[poolName]!.backends.map((b) => b.endpoint.key);
    const endpoint = parseEndpoint(backend);
    if (!endpoint) throw new AdminInputError(400, `"${backend}" is not IP:PORT (IPv6 as [ADDR]:PORT)`);
    if (!configured.includes(endpoint.key)) throw new AdminInputError(404, `backend ${endpoint.key} is not in pool "${poolName}"; it has ${configured.join(', ')}`);
    const key = backendDrainKey(poolName, endpoint.key);
    await this.change(() => {
      if (this.backendDrains.has(key) === drained) return undefined;
      const current = this.state();
      const mark: BackendDrainMark = { pool: poolName, backend: endpoint.key, source, at: new Date(this.options.clock.wallNow()).toISOString() };
      const backends = drained ? [...current.backends, mark] : current.backends.filter((b) => backendDrainKey(b.pool, b.backend) !== key);
      return { state: { ...current, backends }, apply: () => this.setBackendDrain(pool.load, mark, drained) };
    });
    await this.options.settled();
  }

  /** A drain of a backend the reload removed is dropped from the running node and the state file. */
  dropBackend(pool: string, backend: string, why: string): void {
    const key = backendDrainKey(pool, backend);
    const mark = this.backendDrains.get(key);
    if (!mark) return;
    const { logger, store } = this.options;
    void this.change(() => {
      if (!this.backendDrains.has(key)) return undefined;
      const current = this.state();
      return {
        state: { ...current, backends: current.backends.filter((b) => backendDrainKey(b.pool, b.backend) !== key) },
        apply: () => {
          this.backendDrains.delete(key);
          logger.warn({ component: 'state', event: 'drainDropped', pool, backend, source: mark.source, file: store.file }, `drain of ${backend} in pool ${pool} (by ${mark.source}) dropped: ${why}`);
        },
      };
    }).catch((err) => logger.error({ component: 'state', event: 'drainDropped', pool, backend, err: errorMessage(err) }, 'could not save the drain state without the removed backend'));
  }

  /** Throws the 404 that lists the known VIPs. */
  private knownVip(vip: string): void {
    const vips = this.options.config().vips;
    if (!vips.some((v) => v.name === vip)) {
      throw new AdminInputError(404, `no VIP "${vip}"; VIPs: ${vips.map((v) => v.name).join(', ')}`);
    }
  }

  /** The drains held now, as the store keeps them. */
  private state(): DrainState {
    const strip = <M extends DrainMark>({ restoredFrom: _, ...mark }: HeldDrain<M>): M => mark as unknown as M;
    return {
      ...(this.nodeDrain ? { node: strip(this.nodeDrain) } : {}),
      backends: [...this.backendDrains.values()].map((b) => strip(b)),
      ...(this.vipDrains.size > 0 ? { vips: [...this.vipDrains.values()].map((v) => strip(v)) } : {}),
    };
  }

  /**
   * Runs one drain change: `plan` sees the drains as they are (after every earlier change) and returns
   * the new state and how to apply it, or undefined when there is nothing to do. The state is made
   * durable first and applied only then, so the file and the running node never disagree: a change
   * that cannot be saved fails and changes nothing.
   */
  private change(plan: () => { state: DrainState; apply: () => void } | undefined): Promise<void> {
    const run = this.changes.then(async () => {
      if (this.options.shuttingDown()) throw new AdminInputError(409, 'vipd is shutting down');
      const change = plan();
      if (!change) return;
      await this.options.store.save(change.state);
      change.apply();
    });
    this.changes = run.catch(() => undefined);
    return run;
  }

  /** A restored drain (mark.restoredFrom) starts withdrawn; a new one runs the sequence from its grace. */
  private setNodeDrain(mark: HeldDrain<DrainMark> | undefined, source: string, graceMs = 0): void {
    this.nodeDrain = mark;
    const drained = mark !== undefined;
    const restored = mark?.restoredFrom !== undefined ? ` (restored from ${mark.restoredFrom})` : '';
    this.options.logger.info(
      { component: 'daemon', event: drained ? 'drain' : 'undrain', source, graceMs, ...(mark?.restoredFrom !== undefined ? { restoredFrom: mark.restoredFrom } : {}) },
      `node ${drained ? 'drained' : 'undrained'} by ${source}${restored}: every VIP ${drained ? (graceMs > 0 && !restored ? `carries GRACEFUL_SHUTDOWN for ${graceMs} ms, then is withdrawn (reason drained)` : 'is withdrawn (reason drained)') : 'goes back through the health gate'}`,
    );
    this.options.metrics.drained.set(drained ? 1 : 0);
    this.applyDrain(undefined, mark, graceMs);
  }

  private setVipDrain(mark: HeldDrain<VipDrainMark>, drained: boolean, graceMs: number): void {
    if (drained) this.vipDrains.set(mark.vip, mark);
    else this.vipDrains.delete(mark.vip);
    const restored = mark.restoredFrom !== undefined ? ` (restored from ${mark.restoredFrom})` : '';
    this.options.logger.info(
      { component: 'daemon', event: drained ? 'drainVip' : 'undrainVip', vip: mark.vip, source: mark.source, graceMs, ...(mark.restoredFrom !== undefined ? { restoredFrom: mark.restoredFrom } : {}) },
      `VIP ${mark.vip} ${drained ? 'drained' : 'undrained'} by ${mark.source}${restored}; the other VIPs are left alone`,
    );
    this.applyDrain(mark.vip, drained ? mark : undefined, graceMs);
  }

  private applyDrain(target: DrainTarget, mark: HeldDrain<DrainMark> | undefined, graceMs: number): void {
    if (!mark) this.sequence.end(target);
    else if (mark.restoredFrom !== undefined) this.sequence.restore(target, mark, mark.restoredFrom);
    else this.sequence.begin(target, mark, graceMs);
    this.options.onChange();
  }

  private setBackendDrain(load: Pick<DataPlanePool, 'drainBackend'>, mark: HeldDrain<BackendDrainMark>, drained: boolean): void {
    const key = backendDrainKey(mark.pool, mark.backend);
    if (drained) this.backendDrains.set(key, mark);
    else this.backendDrains.delete(key);
    const restored = mark.restoredFrom !== undefined ? ` (restored from ${mark.restoredFrom})` : '';
    this.options.logger.info(
      { component: 'proxy', event: drained ? 'drainBackend' : 'undrainBackend', pool: mark.pool, backend: mark.backend, source: mark.source, ...(mark.restoredFrom !== undefined ? { restoredFrom: mark.restoredFrom } : {}) },
      `backend ${mark.backend} of pool ${mark.pool} ${drained ? 'drained' : 'undrained'} by ${mark.source}${restored}; a VIP whose pool is left with no usable backend is withdrawn (reason noUsableBackends)`,
    );
    // The load view tells the reconciler (onServiceChange) once the daemon's start has subscribed it.
    load.drainBackend(mark.backend, drained);
  }

  private async restore(): Promise<void> {
    const { store, logger } = this.options;
    const config = this.options.config();
    const log = logger.child({ component: 'state' });
    const file = store.file;
    try {
      await mkdir(config.stateDir, { recursive: true, mode: 0o750 });
    } catch (err) {
      throw new VipdError('VIPD_ERR_STATE', `stateDir ${config.stateDir} cannot be created: ${errorMessage(err)}`, { cause: err });
    }
    const state = await store.load();
    if (state.node) this.setNodeDrain({ ...state.node, restoredFrom: file }, state.node.source);
    for (const mark of state.vips ?? []) {
      if (!config.vips.some((v) => v.name === mark.vip)) {
        log.warn({ event: 'drainDropped', vip: mark.vip, source: mark.source, file }, `drain of VIP ${mark.vip} (by ${mark.source}) dropped: that VIP is no longer in the config`);
        continue;
      }
      this.setVipDrain({ ...mark, restoredFrom: file }, true, 0);
    }
    for (const mark of state.backends) {
      const pool = this.options.pools.get(mark.pool);
      const endpoint = parseEndpoint(mark.backend);
      const configured = endpoint !== undefined && config.pools[mark.pool]?.backends.some((b) => b.endpoint.key === endpoint.key);
      if (!pool || !endpoint || !configured) {
        log.warn({ event: 'drainDropped', pool: mark.pool, backend: mark.backend, source: mark.source, file }, `drain of ${mark.backend} in pool ${mark.pool} (by ${mark.source}) dropped: that backend is no longer in the config`);
        continue;
      }
      this.setBackendDrain(pool.load, { ...mark, backend: endpoint.key, restoredFrom: file }, true);
    }
    log.info({ event: 'drainsRestored', file, node: state.node !== undefined, backends: this.backendDrains.size }, `drain state ${file}: node ${state.node ? 'drained' : 'not drained'}, ${this.backendDrains.size} backend drain(s)`);
  }

  /**
   * drain.file: while the file exists the node is drained (source "drain file PATH"); once it is gone,
   * a node drain that the file made ends. A drain set by anyone else is never ended by the file.
   */
  private async checkDrainFile(): Promise<void> {
    const file = this.options.config().drain.file;
    if (file === undefined || this.closed || this.options.shuttingDown()) return;
    const source = `drain file ${file}`;
    const exists = await stat(file).then(
      () => true,
      () => false,
    );
    try {
      if (exists && !this.nodeDrain) await this.drain(source);
      else if (!exists && this.nodeDrain?.source === source) await this.undrain(`${source} (removed)`);
    } catch (err) {
      this.options.logger.warn({ component: 'daemon', event: 'drainFile', file, err: errorMessage(err) }, `drain file ${file}: ${errorMessage(err)}`);
    }
    if (!this.closed && !this.options.shuttingDown()) this.fileCheck = this.options.clock.setTimeout(() => void this.checkDrainFile(), DRAIN_FILE_CHECK_MS);
  }
}

function backendDrainKey(pool: string, backend: string): string {
  return `${pool}\u0000${backend}`;
}
