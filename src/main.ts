import { resolve as resolvePath } from 'node:path';
import type { DrainTarget } from './announce/drain-sequence';
import { HookRunner } from './announce/hooks';
import { AnnounceReconciler, type VipSource } from './announce/reconciler';
import type { Config, PoolConfig, VipConfig } from './config/config';
import type { ConfigChanges } from './config/diff';
import { ConfigReloader, type Refusal, type ReloadResult, type ReloadTarget } from './reload';
import { adminSocketPath } from './config/schema';
import { AdminServer } from './control/admin-server';
import { AdminInputError, type AdminActions, type DaemonStatus, type DrainRequest } from './control/control';
import { EventJournal } from './control/event-journal';
import { Drains } from './daemon/drains';
import { dataPathOf, dataPathsOf, gobgpPeers, listenerSpec, proxyLimits, toCheckSpec, toDampingSpec, toPoolSpec, vipAdvertisements } from './daemon/specs';
import { statusReply } from './daemon/status-reply';
import type { DataPlaneListener, DataPlanePool } from './dataplane/data-plane';
import type { DataPlaneSet } from './dataplane/data-plane-set';
import { createDataPlanes } from './dataplane/data-planes';
import type { PoolHealth } from './health/health';
import { createPoolHealth } from './health/pool-health';
import { systemClock, sleep, type Clock } from './lib/clock';
import { errorMessage } from './lib/errors';
import type { Logger } from './lib/logger';
import { createMetrics, type Metrics } from './lib/metrics';
import { vipdVersion } from './lib/version';
import { IpAddressManager } from './net/ip-address-manager';
import { localAddressIssues } from './net/local-address';
import type { VipAddressManager } from './net/net';
import { VipWatcher } from './net/vip-watcher';
import { createGobgpSpeaker, type GobgpPeerOptions } from './speaker/gobgp/gobgp-speaker';
import { ownerMark, routerIdAsOwnerId } from './speaker/gobgp/ownership';
import { NullSpeaker, type Speaker } from './speaker/speaker';
import { DrainStateFile } from './state/drain-state-file';

/**
 * Composition root: the only place that builds concrete implementations and wires them. Start order
 * makes sure nothing is announced before it can be served; stop order withdraws before it stops serving.
 */
export interface RunOptions {
  readonly configPath: string;
  readonly logger: Logger;
  readonly clock?: Clock;
}

/** Sessions of a listener that a reload removed get this long to end by themselves before they are cut. */
const REMOVED_LISTENER_DRAIN_MS = 30_000;
/** Keys outside vips, pools and peers that a reload applies in place (any other one is refused by name). */
const APPLIED_SETTINGS: ReadonlySet<string> = new Set(['announce.holdDown', 'shutdown.grace']);
/** How often vipd re-checks that its VIPs are still on the interface (someone may remove them). */
const VIP_CHECK_INTERVAL_MS = 2000;
/** How often an unbound listener retries its bind (the VIP may appear later when not managed). */
const BIND_RETRY_MS = 1000;
/** After the shutdown grace, how long sessions get to finish before they are cut. */
const SESSION_CLOSE_MS = 1000;
/** A graceful close that has not finished this long after the grace is given up: destroy and exit. */
const CLOSE_DEADLINE_SLACK_MS = 15_000;

interface PoolRuntime {
  readonly name: string;
  readonly health: PoolHealth;
  /** The pool over every data plane: counters, drains and ejections for status, the admin API and reloads. */
  readonly load: DataPlanePool;
}

interface ListenerRuntime {
  readonly vip: string;
  readonly port: number;
  readonly pool: string;
  /** Whichever data plane carries it; `listener.pool` is that plane's view of the pool (the gate reads it). */
  readonly listener: DataPlaneListener;
  retry?: { cancel(): void };
}

export class Daemon implements AdminActions {
  private readonly clock: Clock;
  private readonly logger: Logger;
  readonly metrics: Metrics;
  /** The status page's timeline (announce, withdraw, health, drain, peer; reloads are recorded here too). */
  readonly journal = new EventJournal();
  private readonly addresses: VipAddressManager;
  private readonly pools = new Map<string, PoolRuntime>();
  private listeners: ListenerRuntime[] = [];
  /** Every data plane (proxy in process or in workers, kernel), behind one face. */
  private readonly dataPlanes: DataPlaneSet;
  private readonly reloader: ConfigReloader;
  /** The gobgp speaker's peer reload (unset with speaker.driver none). */
  private setSpeakerPeers: ((peers: readonly GobgpPeerOptions[]) => Promise<void>) | undefined;
  private readonly vips: VipWatcher;
  private readonly speaker: Speaker;
  private readonly reconciler: AnnounceReconciler;
  private readonly admin: AdminServer;
  /** Node, VIP and backend drains, their state file, drain.file and the drain sequence. */
  private readonly drains: Drains;
  private readonly hooks: HookRunner | undefined;
  /** SIGTERM's own GRACEFUL_SHUTDOWN phase (not a drain: nothing is persisted). */
  private stopDraining = false;
  private shuttingDown = false;
  /** start() has finished: a reload before that is refused. */
  private started = false;
  private closing: Promise<void> | undefined;
  /** Set once start() gets past the admin socket and the speaker: only then may close() remove the VIPs. */
  private ownsAddresses = false;
  private destroyed = false;

  constructor(private config: Config, options: RunOptions) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ node: config.node.name });
    this.metrics = createMetrics({ defaultMetrics: true });
    this.addresses = new IpAddressManager(config.net.interface);

    this.dataPlanes = createDataPlanes({ config, logger: this.logger, metrics: this.metrics, clock: this.clock });
    // Every plane the config uses is built now, so that start() starts them all before a listener binds.
    for (const path of dataPathsOf(config)) this.dataPlanes.plane(path);
    for (const [name, pool] of Object.entries(config.pools)) this.pools.set(name, this.buildPool(name, pool));
    this.vips = new VipWatcher({
      addresses: this.addresses,
      manage: config.net.manageAddresses,
      interfaceName: config.net.interface,
      intervalMs: VIP_CHECK_INTERVAL_MS,
      clock: this.clock,
      logger: this.logger,
      onChange: () => this.reconciler.evaluate(),
    });
    this.vips.setVips(config.vips);
    for (const vip of config.vips) for (const l of vip.listeners) this.listeners.push(this.buildListener(vip, l));

    this.speaker = this.buildSpeaker();
    this.drains = new Drains({
      config: () => this.config,
      store: new DrainStateFile(config.stateDir, config.node.name),
      pools: this.pools,
      shuttingDown: () => this.shuttingDown,
      // The reconciler is built after the drains (its VIP sources read their phases); drains change only from start() on.
      onChange: () => this.reconciler?.evaluate(),
      settled: () => this.reconciler.idle(),
      closeConnections: (target) => this.closeClientConnections(target),
      clock: this.clock,
      logger: this.logger,
      metrics: this.metrics,
    });
    const sources: VipSource[] = config.vips.map((vip) => this.vipSource(vip));
    this.reconciler = new AnnounceReconciler({
      vips: sources,
      speaker: this.speaker,
      clock: this.clock,
      logger: this.logger.child({ component: 'announce' }),
      metrics: this.metrics,
      holdDownMs: config.announce.holdDown,
    });
    const hook = config.hooks.onChange;
    this.hooks = hook
      ? new HookRunner({ hook: { argv: hook, timeoutMs: config.hooks.timeout }, node: config.node.name, clock: this.clock, logger: this.logger.child({ component: 'hooks' }), metrics: this.metrics })
      : undefined;
    if (this.hooks) this.reconciler.onChange((change) => this.hooks!.notify(change));
    this.admin = new AdminServer({
      listen: config.admin.listen,
      socket: { path: adminSocketPath(config), ...(config.admin.socketGroup !== undefined ? { group: config.admin.socketGroup } : {}) },
      ...(config.admin.tokenFile !== undefined ? { tokenFile: config.admin.tokenFile } : {}),
      actions: this,
      logger: this.logger.child({ component: 'admin' }),
      metrics: this.metrics,
      journal: this.journal,
    });
    // The reloader sees the running config and the two apply steps, nothing else of the daemon.
    const daemon = this;
    const target: ReloadTarget = {
      get config() {
        return daemon.config;
      },
      refusals: (next, changes) => this.refusals(next, changes),
      apply: (next, changes) => this.apply(next, changes),
    };
    this.reloader = new ConfigReloader({ file: resolvePath(options.configPath), target, logger: this.logger.child({ component: 'reload' }), metrics: this.metrics });
  }

  async start(): Promise<void> {
    const log = this.logger.child({ component: 'daemon' });
    log.info({ event: 'start', version: vipdVersion, vips: this.config.vips.length, speaker: this.config.speaker.driver }, 'vipd starting');
    // Before anything can be announced: a node drained before a restart must not announce for an instant.
    await this.drains.start();
    await this.admin.start();
    // The speaker comes up first so sessions establish while checks run; it advertises nothing until told.
    this.speaker.onEvent(() => this.reconciler.evaluate());
    await this.speaker.start();
    // From here this process owns the VIPs on the interface. A start that failed earlier (most often a
    // second vipd refused by the live admin socket) must not remove the addresses of the one running.
    this.ownsAddresses = true;
    await this.vips.start();
    await this.dataPlanes.start();
    for (const l of this.listeners) await this.startListener(l);
    for (const pool of this.pools.values()) this.startPool(pool);
    this.started = true;
    this.reconciler.evaluate();
    log.info({ event: 'started', admin: this.config.admin.listen.key, adminSocket: adminSocketPath(this.config) }, 'vipd running');
  }

  /**
   * Graceful stop: withdraw, let the router move traffic away, then stop serving. Idempotent and
   * awaitable: a second call returns the first call's promise (its reason is the one logged).
   */
  close(reason: string): Promise<void> {
    this.closing ??= this.doClose(reason);
    return this.closing;
  }

  /**
   * Stops at once, for when a graceful close cannot be trusted (a second fault, a close past its
   * deadline). The speaker goes first and synchronously: a managed gobgpd is killed, so the router
   * withdraws by its Cease; sessions are cut. Idempotent; resolves when the admin server is closed.
   */
  destroy(): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.destroyed = true;
    this.shuttingDown = true;
    // Each step on its own: this runs when something is already broken, and one more throw must not
    // keep the speaker (and so the route) alive.
    const attempt = (what: string, step: () => void): void => {
      try {
        step();
      } catch (err) {
        this.logger.error({ component: 'daemon', event: 'destroy', step: what, err: errorMessage(err) }, `destroy: ${what} failed`);
      }
    };
    attempt('speaker', () => this.speaker.destroy());
    attempt('timers', () => {
      this.vips.close();
      this.drains.close();
      this.reconciler.close();
      this.hooks?.close();
    });
    for (const l of this.listeners) attempt(`listener ${l.listener.spec.id}`, () => l.retry?.cancel());
    attempt('data planes', () => void this.dataPlanes.destroy().catch(() => undefined));
    for (const pool of this.pools.values()) attempt(`pool ${pool.name}`, () => pool.health.close());
    return this.admin.close().catch(() => undefined);
  }

  private async doClose(reason: string): Promise<void> {
    const log = this.logger.child({ component: 'daemon' });
    // The drain sequence, bounded by shutdown.grace: GRACEFUL_SHUTDOWN for at most half of it (so the
    // fabric moves new flows first), then withdraw, and the rest of the grace for the withdraw to spread.
    const drainMs = Math.min(this.config.drain.grace, Math.floor(this.config.shutdown.grace / 2));
    log.info({ event: 'stop', reason, graceMs: this.config.shutdown.grace, drainMs }, `vipd stopping (${reason}): ${drainMs > 0 ? `GRACEFUL_SHUTDOWN for ${drainMs} ms, then ` : ''}withdrawing routes`);
    this.vips.close();
    this.drains.close();
    if (drainMs > 0) {
      this.stopDraining = true;
      this.reconciler.evaluate();
      await withTimeout(this.reconciler.idle(), 5000).catch((err) => log.warn({ err: errorMessage(err) }, 'draining push did not complete'));
      await sleep(this.clock, drainMs);
    }
    this.shuttingDown = true;
    await withTimeout(this.reconciler.withdrawAll('shuttingDown'), 5000).catch((err) => log.warn({ err: errorMessage(err) }, 'withdraw did not complete'));
    if (this.config.shutdown.grace - drainMs > 0) await sleep(this.clock, this.config.shutdown.grace - drainMs);
    for (const l of this.listeners) l.retry?.cancel();
    await this.dataPlanes.close(SESSION_CLOSE_MS);
    for (const pool of this.pools.values()) pool.health.close();
    await withTimeout(this.speaker.close(), 5000).catch((err) => {
      log.warn({ err: errorMessage(err) }, 'speaker did not close cleanly; destroying');
      // Bounded: a SIGKILLed gobgpd is gone at once.
      return withTimeout(this.speaker.destroy(), 2000).catch(() => undefined);
    });
    if (this.config.net.manageAddresses && this.ownsAddresses) {
      for (const vip of this.config.vips) {
        await this.addresses.remove(vip.address).catch((err) => log.warn({ vip: vip.name, err: errorMessage(err) }, 'could not remove VIP'));
      }
    }
    this.reconciler.close();
    this.hooks?.close();
    await this.admin.close();
    log.info({ event: 'stopped', reason }, 'vipd stopped');
  }

  // Reload (ReloadTarget): the orchestration, validation and diff are in reload.ts and config/diff.ts.

  /** Re-reads the file the daemon was started with; see docs/reload.md. */
  async reload(source: string): Promise<ReloadResult> {
    if (!this.started || this.shuttingDown) throw new AdminInputError(409, this.shuttingDown ? 'vipd is shutting down' : 'vipd is still starting');
    const result = await this.reloader.reload(source);
    // A reload leaves no trace in the status the timeline is diffed from: recorded here.
    this.journal.record({
      at: new Date(this.clock.wallNow()).toISOString(),
      kind: 'reload',
      subject: result.file,
      to: result.result,
      reason: 'summary' in result ? `${result.summary} (${source})` : `${result.reason.split('\n')[0]} (${source})`,
    });
    return result;
  }

  private refusals(next: Config, changes: ConfigChanges): Refusal[] {
    const refused: Refusal[] = [];
    refused.push(...localAddressIssues(next.speaker));
    for (const key of changes.settings) {
      if (!APPLIED_SETTINGS.has(key)) refused.push({ key, path: key.split('.'), message: 'restart needed: this key is not applied in place by a reload' });
    }
    next.vips.forEach((vip, vi) => {
      const oldVip = this.config.vips.find((v) => v.name === vip.name);
      if (!oldVip) return;
      vip.listeners.forEach((l, li) => {
        const before = oldVip.listeners.find((o) => o.port === l.port);
        if (before && before.pool !== l.pool) {
          refused.push({
            key: `vips[${vi}].listeners[${li}].pool`,
            path: ['vips', vi, 'listeners', li, 'pool'],
            message: `restart needed: listener ${vip.name}:${l.port} moves from pool ${before.pool} to ${l.pool}; its sessions belong to the old pool`,
          });
        }
        if (before && dataPathOf(before) !== dataPathOf(l)) {
          refused.push({
            key: `vips[${vi}].listeners[${li}].dataPath`,
            path: ['vips', vi, 'listeners', li, 'dataPath'],
            message: `restart needed: listener ${vip.name}:${l.port} moves from the ${dataPathOf(before)} data path to ${dataPathOf(l)}; a listener stays on the plane that bound it`,
          });
        }
      });
    });
    return refused;
  }

  /**
   * Applies an accepted config in place. Order: new pools and listeners first (a new VIP serves before
   * it is announced), then the VIP set (withdrawals of removed VIPs go out), then changed pools, then
   * what is left over is closed after the withdrawal: removed listeners drain, removed pools stop.
   */
  private async apply(next: Config, changes: ConfigChanges): Promise<void> {
    const log = this.logger.child({ component: 'reload' });
    const previous = this.config;
    // Peers first: gobgpd may refuse them (its --dry-run), and then nothing else has changed yet.
    // Compared as gobgp takes them, since a new VIP family can change a peer's families too.
    if (this.setSpeakerPeers && JSON.stringify(gobgpPeers(previous)) !== JSON.stringify(gobgpPeers(next))) {
      await this.setSpeakerPeers(gobgpPeers(next));
      log.info({ event: 'peers', added: changes.peers.added, removed: changes.peers.removed, changed: changes.peers.changed }, 'BGP peers reloaded: gobgpd applies the changed ones only; unchanged sessions stay up');
    }
    this.config = next;
    this.reconciler.setHoldDown(next.announce.holdDown);

    for (const name of changes.pools.added) {
      const pool = this.buildPool(name, next.pools[name]!);
      this.pools.set(name, pool);
      this.startPool(pool);
    }
    for (const change of changes.pools.changed) {
      const pool = this.pools.get(change.name)!;
      const cfg = next.pools[change.name]!;
      const spec = toPoolSpec(change.name, cfg);
      // Health first: a removed backend leaves the snapshot (so no picker sees it) before its entry goes.
      pool.health.reconfigure(cfg.backends.map((b) => b.endpoint), toCheckSpec(cfg.check));
      // Every data plane reconfigures the pool and hands its listeners of the pool the new spec.
      const removed = pool.load.reconfigure(spec);
      for (const backend of removed) this.drains.dropBackend(change.name, backend, 'removed by reload');
    }

    // Listeners of kept VIPs (by id), new VIPs' listeners, and those to retire.
    const wanted = new Map<string, { vip: VipConfig; l: VipConfig['listeners'][number] }>();
    for (const vip of next.vips) for (const l of vip.listeners) wanted.set(`${vip.name}:${l.port}`, { vip, l });
    const retired = this.listeners.filter((l) => !wanted.has(l.listener.spec.id));
    const kept = this.listeners.filter((l) => wanted.has(l.listener.spec.id));
    for (const l of kept) {
      const { vip, l: lc } = wanted.get(l.listener.spec.id)!;
      if (lc.maxConnections !== l.listener.spec.maxConnections) l.listener.reconfigure(listenerSpec(next, vip, lc));
    }
    const keptIds = new Set(kept.map((l) => l.listener.spec.id));
    const added: ListenerRuntime[] = [];
    for (const [id, { vip, l }] of wanted) if (!keptIds.has(id)) added.push(this.buildListener(vip, l));
    this.listeners = [...kept, ...added];
    this.vips.setVips(next.vips);
    if (changes.vips.added.length > 0) await this.vips.checkOnce();
    for (const l of added) await this.startListener(l);

    this.reconciler.setVips(next.vips.map((vip) => this.vipSource(vip)));
    // Removed VIPs are withdrawn before their listeners stop and their addresses go.
    await this.reconciler.idle();
    for (const name of changes.vips.removed) {
      const vip = previous.vips.find((v) => v.name === name)!;
      if (previous.net.manageAddresses) {
        await this.addresses.remove(vip.address).catch((err) => log.warn({ vip: name, err: errorMessage(err) }, 'could not remove VIP'));
      }
    }
    for (const l of retired) {
      l.retry?.cancel();
      log.info({ event: 'listenerRemoved', listener: l.listener.spec.id, active: l.listener.stats().active, drainMs: REMOVED_LISTENER_DRAIN_MS }, `listener ${l.listener.spec.id} removed by reload: accepts nothing new; its sessions get ${REMOVED_LISTENER_DRAIN_MS} ms`);
      void l.listener.close(REMOVED_LISTENER_DRAIN_MS).catch(() => undefined);
    }
    for (const name of changes.pools.removed) {
      const pool = this.pools.get(name)!;
      this.pools.delete(name);
      for (const b of previous.pools[name]!.backends) this.drains.dropBackend(name, b.endpoint.key, 'its pool was removed by reload');
      const sessionsDone = Promise.all(retired.filter((l) => l.pool === name).map((l) => l.listener.close(REMOVED_LISTENER_DRAIN_MS).catch(() => undefined)));
      void sessionsDone.then(() => {
        pool.load.close();
        return pool.health.close();
      });
    }
    this.reconciler.evaluate();
    await this.reconciler.idle();
  }

  private buildHealth(name: string, pool: PoolConfig): PoolHealth {
    return createPoolHealth({
      pool: name,
      backends: pool.backends.map((b) => b.endpoint),
      check: toCheckSpec(pool.check),
      clock: this.clock,
      logger: this.logger.child({ component: 'health', pool: name }),
      metrics: this.metrics,
    });
  }

  /** The pool's health, and the pool in every data plane (a reload's new pool joins them now). */
  private buildPool(name: string, pool: PoolConfig): PoolRuntime {
    const health = this.buildHealth(name, pool);
    return { name, health, load: this.dataPlanes.addPool(toPoolSpec(name, pool), health) };
  }

  private startPool(pool: PoolRuntime): void {
    pool.health.onChange(() => this.reconciler.evaluate());
    // A drain or an ejection (which ends by time) changes what the pool can serve, not its health.
    pool.load.onServiceChange(() => this.reconciler.evaluate());
    pool.health.start();
  }

  /** A listener on the data plane of its dataPath; the plane refuses a spec it cannot serve, by feature. */
  private buildListener(vip: VipConfig, l: VipConfig['listeners'][number]): ListenerRuntime {
    const listener = this.dataPlanes.listener(dataPathOf(l), listenerSpec(this.config, vip, l), proxyLimits(this.config));
    return { vip: vip.name, port: l.port, pool: l.pool, listener };
  }

  private async startListener(l: ListenerRuntime): Promise<void> {
    l.listener.onBoundChange(() => this.reconciler.evaluate());
    await this.bindListener(l);
  }

  private vipSource(vip: VipConfig): VipSource {
    return {
      name: vip.name,
      ...vipAdvertisements(vip, this.config.speaker.asn, this.config.speaker.peers),
      damping: toDampingSpec(vip.damping),
      inputs: () => ({
        vip: vip.address,
        shuttingDown: this.shuttingDown,
        drained: this.drains.phaseFor(vip.name) === 'withdrawn',
        draining: this.stopDraining || this.drains.phaseFor(vip.name) === 'grace',
        vipBound: this.vips.isBound(vip.name),
        minHealthyBackends: vip.minHealthyBackends,
        gate: vip.gate,
        onFailure: vip.onFailure,
        listeners: this.listeners
          .filter((l) => l.vip === vip.name)
          .map((l) => {
            // Drains and ejections as the listener's own data plane applies them.
            return { id: l.listener.spec.id, bound: l.listener.bound(), pool: this.pools.get(l.pool)!.health.snapshot(), ...l.listener.pool.outOfService() };
          }),
      }),
    };
  }

  // AdminActions

  status(): DaemonStatus {
    return statusReply({
      node: this.config.node.name,
      version: vipdVersion,
      shuttingDown: this.shuttingDown,
      nodeDrain: this.drains.node(),
      vipDrain: (vip) => this.drains.vip(vip),
      backendDrain: (pool, backend) => this.drains.backend(pool, backend),
      announce: this.reconciler.status(),
      peers: this.speaker.peers(),
      advertised: this.speaker.advertised(),
      sync: this.speaker.sync(),
      localAddress: (peer) => this.config.speaker.peers.find((p) => p.address === peer)?.localAddress,
      listeners: this.listeners.map((l) => ({ vip: l.vip, id: l.listener.spec.id, port: l.port, pool: l.pool, bound: l.listener.bound(), activeSessions: l.listener.stats().active })),
      pools: [...this.pools.values()].map((p) => ({ name: p.name, snapshot: p.health.snapshot(), load: p.load })),
      drains: this.drains.list(),
    });
  }

  drain(source: string, request: DrainRequest = {}): Promise<void> {
    return this.drains.drain(source, request);
  }

  undrain(source: string, request: { readonly vip?: string } = {}): Promise<void> {
    return this.drains.undrain(source, request);
  }

  drainBackend(pool: string, backend: string, drained: boolean, source: string): Promise<void> {
    return this.drains.drainBackend(pool, backend, drained, source);
  }

  async metricsText(): Promise<{ contentType: string; body: string }> {
    return {
      contentType: this.metrics.registry.contentType,
      body: await this.dataPlanes.metricsText(this.metrics.registry),
    };
  }

  /** drain.closeAfter: the client connections still open on the target's listeners are closed. */
  private closeClientConnections(target: DrainTarget): void {
    let closed = 0;
    for (const l of this.listeners) {
      if (target !== undefined && l.vip !== target) continue;
      if (l.listener.closeConnections === undefined) {
        this.logger.warn({ component: 'announce', event: 'drainClose', listener: l.listener.spec.id }, `drain.closeAfter: listener ${l.listener.spec.id} runs in a data plane that cannot cut its connections from here (workers); they are left to end by themselves`);
        continue;
      }
      closed += l.listener.closeConnections();
    }
    this.logger.info({ component: 'announce', event: 'drainClose', target: target ?? 'node', closed }, `drain.closeAfter: closed ${closed} client connection(s) of ${target ?? 'the node'}`);
  }

  private buildSpeaker(): Speaker {
    const s = this.config.speaker;
    if (s.driver === 'none') return new NullSpeaker();
    const speaker = createGobgpSpeaker({
      asn: s.asn!,
      routerId: s.routerId!,
      manage: s.gobgp.manage,
      ...(s.gobgp.api !== undefined ? { api: s.gobgp.api } : {}),
      allowTcpApi: s.gobgp.allowTcpApi,
      user: s.gobgp.user,
      ...(s.gobgp.runtimeDir !== undefined ? { runtimeDir: s.gobgp.runtimeDir } : {}),
      hangTimeoutMs: s.gobgp.hangTimeout,
      gobgpdPath: s.gobgp.binary,
      ...(s.gobgp.listen !== undefined ? { listenPort: s.gobgp.listen.port, listenAddresses: s.gobgp.listen.addresses } : {}),
      ...(s.gracefulRestart.enabled ? { gracefulRestart: { restartTimeS: Math.ceil(s.gracefulRestart.restartTime / 1000), notification: false } } : {}),
      reconcileIntervalMs: s.gobgp.reconcileInterval,
      peers: gobgpPeers(this.config),
      // External gobgpd: vipd's paths carry its mark, and a guardian deletes them if vipd dies.
      ...(!s.gobgp.manage && { ownerMark: ownerMark(s.asn!, s.gobgp.ownerId ?? routerIdAsOwnerId(s.routerId!)) }),
      ...(!s.gobgp.manage && s.gobgp.guardian && { guardian: {} }),
      clock: this.clock,
      logger: this.logger.child({ component: 'speaker' }),
      metrics: this.metrics,
    });
    this.setSpeakerPeers = (peers) => speaker.setPeers(peers);
    return speaker;
  }

  private async bindListener(l: ListenerRuntime): Promise<void> {
    if (this.shuttingDown || l.listener.bound()) return;
    try {
      await l.listener.start();
    } catch (err) {
      this.logger.warn({ component: 'proxy', vip: l.vip, listener: l.listener.spec.id, err: errorMessage(err) }, `cannot bind ${l.listener.spec.id}; retrying`);
      l.retry = this.clock.setTimeout(() => void this.bindListener(l), BIND_RETRY_MS);
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms}ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });
}

/** Signals that are logged and ignored (SIGHUP reloads; see runDaemon). */
const IGNORED_SIGNALS: ReadonlyArray<{ readonly signal: NodeJS.Signals; readonly why: string }> = [
  // A listener of our own also keeps Node from opening its inspector on SIGUSR1 (its default).
  { signal: 'SIGUSR1', why: 'no meaning to vipd (and no inspector is opened); ignored' },
  { signal: 'SIGUSR2', why: 'no meaning to vipd; ignored' },
];

/**
 * Test-only: `VIPD_TEST_FAULT_AFTER_MS=<ms>` throws an error on the event loop that long after start
 * (`VIPD_TEST_FAULT_KIND=rejection` rejects a promise nobody handles instead; `double` throws a second
 * time 100 ms later), so that a test can watch a real daemon take its fault path. Only the environment
 * of the process can set it, never a request.
 */
function armTestFault(log: Logger): void {
  const raw = process.env.VIPD_TEST_FAULT_AFTER_MS;
  if (raw === undefined) return;
  const ms = Number(raw);
  if (!Number.isFinite(ms) || ms < 0) return;
  const kinds = ['exception', 'rejection', 'double'] as const;
  const kind = kinds.find((k) => k === process.env.VIPD_TEST_FAULT_KIND) ?? 'exception';
  log.warn({ event: 'testFault', afterMs: ms, kind }, `VIPD_TEST_FAULT_AFTER_MS is set: an injected ${kind} will fire in ${ms} ms (test only)`);
  const fault = (n: number) => () => {
    const err = new Error(`injected test fault #${n} (VIPD_TEST_FAULT_AFTER_MS=${raw})`);
    if (kind === 'rejection') void Promise.reject(err);
    else throw err;
  };
  setTimeout(fault(1), ms);
  // 'double': a second fault while the first one's graceful stop is running.
  if (kind === 'double') setTimeout(fault(2), ms + 100);
}

/**
 * Runs the daemon until SIGTERM/SIGINT or a fault, then stops it and exits the process.
 * - SIGTERM, SIGINT: graceful close (withdraw, grace, stop), exit 0; a second one exits 1 at once.
 * - SIGHUP: reloads the config file in place (docs/reload.md); SIGUSR1, SIGUSR2: logged and ignored.
 * - An uncaught exception or unhandled rejection: logged with its stack, then the same graceful close,
 *   exit 1. A loop that threw cannot be trusted to keep deciding, so the node must stop announcing. A
 *   second fault, or a signal, during that close destroys the daemon and exits 1 at once.
 * - A close that has not finished shutdown.grace + 15 s after it began is given up the same way.
 */
export async function runDaemon(config: Config, options: RunOptions): Promise<void> {
  const log = options.logger.child({ component: 'daemon' });
  // Installed before anything else, so that no fault or signal finds the process without them.
  let daemon: Daemon | undefined;
  let stopping: 'signal' | 'fault' | undefined;
  const exitNow = (why: string, extra: Record<string, unknown>): never => {
    log.fatal({ event: 'exit', ...extra }, `${why}: exiting at once`);
    try {
      void daemon?.destroy();
    } finally {
      process.exit(1);
    }
  };
  const closeAndExit = (reason: string, code: number): void => {
    const deadlineMs = config.shutdown.grace + CLOSE_DEADLINE_SLACK_MS;
    setTimeout(() => exitNow(`graceful stop did not finish in ${deadlineMs} ms`, { reason }), deadlineMs).unref();
    holdProcessOpen();
    const closing = daemon?.close(reason) ?? Promise.resolve();
    closing.then(
      () => process.exit(code),
      (err) => {
        log.error({ event: 'stop', err: errorStack(err) }, `shutdown failed: ${errorMessage(err)}`);
        process.exit(1);
      },
    );
  };
  const onStopSignal = (signal: NodeJS.Signals) => {
    if (stopping !== undefined) exitNow(`${signal} while stopping`, { signal });
    stopping = 'signal';
    log.info({ event: 'signal', signal }, `${signal}: stopping gracefully`);
    closeAndExit(signal, 0);
  };
  const onFault = (kind: 'uncaughtException' | 'unhandledRejection', err: unknown) => {
    if (stopping !== undefined) exitNow(`${kind} while stopping`, { kind, err: errorStack(err) });
    stopping = 'fault';
    log.fatal({ event: 'fault', kind, err: errorStack(err) }, `${kind}: ${errorMessage(err)}; withdrawing and stopping`);
    closeAndExit(`fault: ${kind}`, 1);
  };
  process.on('SIGTERM', onStopSignal);
  process.on('SIGINT', onStopSignal);
  for (const { signal, why } of IGNORED_SIGNALS) process.on(signal, () => log.warn({ event: 'signal', signal }, `${signal}: ${why}`));
  // SIGHUP reloads the config file (docs/reload.md); the result is logged by the reloader. A SIGHUP
  // before the daemon has started, or while it stops, is logged and changes nothing.
  process.on('SIGHUP', () => {
    log.info({ event: 'signal', signal: 'SIGHUP' }, `SIGHUP: reloading ${options.configPath}`);
    if (!daemon || stopping !== undefined) return void log.warn({ event: 'signal', signal: 'SIGHUP' }, 'SIGHUP ignored: vipd is not running (starting or stopping)');
    daemon.reload('SIGHUP').catch((err) => log.warn({ event: 'reload', source: 'SIGHUP', err: errorMessage(err) }, `SIGHUP: reload not done: ${errorMessage(err)}`));
  });
  process.on('uncaughtException', (err) => onFault('uncaughtException', err));
  process.on('unhandledRejection', (reason) => onFault('unhandledRejection', reason));

  daemon = new Daemon(config, options);
  try {
    await daemon.start();
  } catch (err) {
    log.error({ event: 'start', err: errorStack(err) }, `vipd failed to start: ${errorMessage(err)}`);
    holdProcessOpen();
    await daemon.close('start failed').catch(() => undefined);
    process.exit(1);
  }
  armTestFault(log);
}

/**
 * Keeps the event loop alive until process.exit(). A stop closes every server and socket and then sleeps
 * on unref'd timers, so without this Node would run out of work and exit 0 in the middle of a stop: a
 * failed start or a fault would look like success to systemd.
 */
function holdProcessOpen(): void {
  setInterval(() => undefined, 60_000);
}

function errorStack(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
