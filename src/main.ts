import { AnnounceReconciler, type VipSource } from './announce/reconciler';
import type { Config, PoolConfig } from './config/config';
import { adminSocketPath } from './config/schema';
import { AdminServer } from './control/admin-server';
import { AdminInputError, type AdminActions, type DaemonStatus } from './control/control';
import type { CheckSpec, PoolHealth } from './health/health';
import { createPoolHealth } from './health/pool-health';
import { systemClock, sleep, type Clock } from './lib/clock';
import { errorMessage } from './lib/errors';
import type { Logger } from './lib/logger';
import { createMetrics, type Metrics } from './lib/metrics';
import { vipdVersion } from './lib/version';
import { IpAddressManager } from './net/ip-address-manager';
import { parseEndpoint } from './net/endpoint';
import { hostPrefix, type VipAddressManager } from './net/net';
import { BackendLoadTracker } from './proxy/backend-load';
import { createProcessConnectionLimits } from './proxy/limits';
import { createListener } from './proxy/listener';
import type { ListenerSpec, PoolLoad, PoolSpec, ProxyLimitsSpec, ProxyListener } from './proxy/proxy';
import { WorkerPool } from './proxy/worker-pool';
import { createGobgpSpeaker } from './speaker/gobgp/gobgp-speaker';
import { NullSpeaker, type Speaker } from './speaker/speaker';

/**
 * Composition root: the only place that builds concrete implementations and wires them. Start order
 * makes sure nothing is announced before it can be served; stop order withdraws before it stops serving.
 */
export interface RunOptions {
  readonly configPath: string;
  readonly logger: Logger;
  readonly clock?: Clock;
}

/** How often vipd re-checks that its VIPs are still on the interface (someone may remove them). */
const VIP_CHECK_INTERVAL_MS = 2000;
/** How often an unbound listener retries its bind (the VIP may appear later when not managed). */
const BIND_RETRY_MS = 1000;
/** After the shutdown grace, how long sessions get to finish before they are cut. */
const SESSION_CLOSE_MS = 1000;

interface PoolRuntime {
  readonly name: string;
  readonly health: PoolHealth;
  /** In-process tracker, or the sum of the workers' trackers when proxy.workers > 1. */
  readonly load: PoolLoad & { drainBackend(backendKey: string, drained: boolean): boolean; close?(): void };
}

interface ListenerRuntime {
  readonly vip: string;
  readonly port: number;
  readonly pool: string;
  readonly listener: ProxyListener;
  retry?: { cancel(): void };
}

export class Daemon implements AdminActions {
  private readonly clock: Clock;
  private readonly logger: Logger;
  readonly metrics: Metrics;
  private readonly addresses: VipAddressManager;
  private readonly pools = new Map<string, PoolRuntime>();
  private readonly listeners: ListenerRuntime[] = [];
  private readonly vipBound = new Map<string, boolean>();
  private readonly speaker: Speaker;
  private readonly reconciler: AnnounceReconciler;
  private readonly admin: AdminServer;
  private readonly workerPool: WorkerPool | undefined;
  private drained = false;
  private shuttingDown = false;
  private vipCheck: { cancel(): void } | undefined;
  private stopped: Promise<void> | undefined;

  constructor(private readonly config: Config, options: RunOptions) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ node: config.node.name });
    this.metrics = createMetrics({ defaultMetrics: true });
    this.addresses = new IpAddressManager(config.net.interface);

    const poolSpecs = new Map(Object.entries(config.pools).map(([name, pool]) => [name, toPoolSpec(name, pool)]));
    const healths = new Map<string, PoolHealth>();
    for (const [name, pool] of Object.entries(config.pools)) {
      healths.set(
        name,
        createPoolHealth({
          pool: name,
          backends: pool.backends.map((b) => b.endpoint),
          check: toCheckSpec(pool.check),
          clock: this.clock,
          logger: this.logger.child({ component: 'health', pool: name }),
          metrics: this.metrics,
        }),
      );
    }
    const limits: ProxyLimitsSpec = {
      ...(config.proxy.maxConnections !== undefined ? { maxConnections: config.proxy.maxConnections } : {}),
      ...(config.proxy.maxConnectionsPerSource !== undefined ? { maxConnectionsPerSource: config.proxy.maxConnectionsPerSource } : {}),
    };
    const proxyLogger = this.logger.child({ component: 'proxy' });
    // With workers, health and BGP stay here and the workers carry the data plane.
    this.workerPool =
      config.proxy.workers > 1
        ? new WorkerPool({
            workers: config.proxy.workers,
            pools: [...poolSpecs.values()].map((spec) => ({ spec, health: healths.get(spec.name)! })),
            limits,
            logger: proxyLogger,
            metrics: this.metrics,
            clock: this.clock,
          })
        : undefined;
    const trackers = new Map<string, BackendLoadTracker>();
    for (const [name, spec] of poolSpecs) {
      const health = healths.get(name)!;
      let load: PoolRuntime['load'];
      if (this.workerPool) {
        load = this.workerPool.load(name);
      } else {
        const tracker = new BackendLoadTracker({ spec, health, metrics: this.metrics, clock: this.clock, logger: proxyLogger.child({ pool: name }) });
        trackers.set(name, tracker);
        load = tracker;
      }
      this.pools.set(name, { name, health, load });
    }

    const connectionLimits = this.workerPool ? undefined : createProcessConnectionLimits(limits, proxyLogger, this.metrics);
    for (const vip of config.vips) {
      this.vipBound.set(vip.name, false);
      for (const l of vip.listeners) {
        const spec: ListenerSpec = {
          id: `${vip.name}:${l.port}`,
          vip: vip.name,
          address: vip.address,
          port: l.port,
          pool: poolSpecs.get(l.pool)!,
          ...(l.maxConnections !== undefined ? { maxConnections: l.maxConnections } : {}),
        };
        const listener: ProxyListener = this.workerPool
          ? this.workerPool.listener(spec)
          : createListener({
              spec,
              load: trackers.get(l.pool)!,
              ...(connectionLimits ? { limits: connectionLimits } : {}),
              logger: this.logger.child({ component: 'proxy', vip: vip.name }),
              metrics: this.metrics,
              clock: this.clock,
            });
        this.listeners.push({ vip: vip.name, port: l.port, pool: l.pool, listener });
      }
    }

    this.speaker = this.buildSpeaker();
    const sources: VipSource[] = config.vips.map((vip) => ({
      name: vip.name,
      advertisement: {
        prefix: hostPrefix(vip.address),
        communities: vip.communities,
        ...(vip.nextHop !== undefined ? { nextHop: vip.nextHop } : {}),
        ...(vip.med !== undefined ? { med: vip.med } : {}),
      },
      inputs: () => ({
        vip: vip.address,
        shuttingDown: this.shuttingDown,
        drained: this.drained,
        vipBound: this.vipBound.get(vip.name) ?? false,
        minHealthyBackends: vip.minHealthyBackends,
        listeners: this.listeners
          .filter((l) => l.vip === vip.name)
          .map((l) => ({ id: l.listener.spec.id, bound: l.listener.bound(), pool: this.pools.get(l.pool)!.health.snapshot() })),
      }),
    }));
    this.reconciler = new AnnounceReconciler({
      vips: sources,
      speaker: this.speaker,
      clock: this.clock,
      logger: this.logger.child({ component: 'announce' }),
      metrics: this.metrics,
      holdDownMs: config.announce.holdDown,
    });
    this.admin = new AdminServer({
      listen: config.admin.listen,
      socket: { path: adminSocketPath(config), ...(config.admin.socketGroup !== undefined ? { group: config.admin.socketGroup } : {}) },
      ...(config.admin.tokenFile !== undefined ? { tokenFile: config.admin.tokenFile } : {}),
      actions: this,
      logger: this.logger.child({ component: 'admin' }),
      metrics: this.metrics,
    });
  }

  async start(): Promise<void> {
    const log = this.logger.child({ component: 'daemon' });
    log.info({ event: 'start', version: vipdVersion, vips: this.config.vips.length, speaker: this.config.speaker.driver }, 'vipd starting');
    await this.admin.start();
    // The speaker comes up first so sessions establish while checks run; it advertises nothing until told.
    this.speaker.onEvent(() => this.reconciler.evaluate());
    await this.speaker.start();
    await this.checkVips();
    for (const l of this.listeners) {
      l.listener.onBoundChange(() => this.reconciler.evaluate());
      await this.bindListener(l);
    }
    for (const pool of this.pools.values()) {
      pool.health.onChange(() => this.reconciler.evaluate());
      pool.health.start();
    }
    this.reconciler.evaluate();
    log.info({ event: 'started', admin: this.config.admin.listen.key, adminSocket: adminSocketPath(this.config) }, 'vipd running');
  }

  /** Graceful stop: withdraw, let the router move traffic away, then stop serving. Idempotent. */
  stop(reason: string): Promise<void> {
    this.stopped ??= this.doStop(reason);
    return this.stopped;
  }

  private async doStop(reason: string): Promise<void> {
    const log = this.logger.child({ component: 'daemon' });
    log.info({ event: 'stop', reason, graceMs: this.config.shutdown.grace }, `vipd stopping (${reason}): withdrawing routes`);
    this.shuttingDown = true;
    this.vipCheck?.cancel();
    await withTimeout(this.reconciler.withdrawAll('shuttingDown'), 5000).catch((err) => log.warn({ err: errorMessage(err) }, 'withdraw did not complete'));
    if (this.config.shutdown.grace > 0) await sleep(this.clock, this.config.shutdown.grace);
    for (const l of this.listeners) l.retry?.cancel();
    await Promise.all(this.listeners.map((l) => l.listener.close(SESSION_CLOSE_MS)));
    await this.workerPool?.close();
    for (const pool of this.pools.values()) {
      pool.load.close?.();
      pool.health.close();
    }
    await withTimeout(this.speaker.close(), 5000).catch((err) => {
      log.warn({ err: errorMessage(err) }, 'speaker did not close cleanly; destroying');
      this.speaker.destroy();
    });
    if (this.config.net.manageAddresses) {
      for (const vip of this.config.vips) {
        await this.addresses.remove(vip.address).catch((err) => log.warn({ vip: vip.name, err: errorMessage(err) }, 'could not remove VIP'));
      }
    }
    this.reconciler.close();
    await this.admin.close();
    log.info({ event: 'stopped' }, 'vipd stopped');
  }

  // AdminActions

  status(): DaemonStatus {
    const iso = (ms: number) => new Date(ms).toISOString();
    const announce = this.reconciler.status();
    return {
      node: this.config.node.name,
      version: vipdVersion,
      drained: this.drained,
      shuttingDown: this.shuttingDown,
      vips: announce.map((a) => ({
        name: a.vip,
        prefix: a.prefix,
        state: a.state,
        reason: a.reason,
        detail: a.detail,
        since: iso(a.since),
        listeners: this.listeners
          .filter((l) => l.vip === a.vip)
          .map((l) => ({ id: l.listener.spec.id, port: l.port, pool: l.pool, bound: l.listener.bound(), activeSessions: l.listener.stats().active })),
      })),
      pools: [...this.pools.values()].map((p) => {
        const snap = p.health.snapshot();
        return {
          name: p.name,
          healthy: snap.healthy.length,
          backends: snap.backends.map((b) => {
            const counters = p.load.counters(b.backend.key);
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
              drained: counters.drained,
            };
          }),
        };
      }),
      peers: this.speaker.peers().map((p) => ({ address: p.address, asn: p.asn, state: p.state, since: iso(p.since) })),
    };
  }

  async drain(_source: string): Promise<void> {
    this.setDrained(true);
    await this.reconciler.idle();
  }

  async undrain(_source: string): Promise<void> {
    this.setDrained(false);
    await this.reconciler.idle();
  }

  async drainBackend(poolName: string, backend: string, drained: boolean, _source: string): Promise<void> {
    const pool = this.pools.get(poolName);
    if (!pool) throw new AdminInputError(404, `no pool "${poolName}"; pools: ${[...this.pools.keys()].join(', ')}`);
    const configured = this.config.pools[poolName]!.backends.map((b) => b.endpoint.key);
    const endpoint = parseEndpoint(backend);
    if (!endpoint) throw new AdminInputError(400, `"${backend}" is not IP:PORT (IPv6 as [ADDR]:PORT)`);
    if (!configured.includes(endpoint.key)) throw new AdminInputError(404, `backend ${endpoint.key} is not in pool "${poolName}"; it has ${configured.join(', ')}`);
    pool.load.drainBackend(endpoint.key, drained);
    this.logger.info({ component: 'proxy', event: drained ? 'drainBackend' : 'undrainBackend', pool: poolName, backend: endpoint.key }, `backend ${endpoint.key} ${drained ? 'drained' : 'undrained'} by operator`);
  }

  async metricsText(): Promise<{ contentType: string; body: string }> {
    return {
      contentType: this.metrics.registry.contentType,
      body: this.workerPool ? await this.workerPool.metricsText() : await this.metrics.registry.metrics(),
    };
  }

  private setDrained(drained: boolean): void {
    if (this.drained !== drained) {
      this.logger.info({ component: 'daemon', event: drained ? 'drain' : 'undrain' }, drained ? 'node drained by operator' : 'node undrained by operator');
    }
    this.drained = drained;
    this.metrics.drained.set(drained ? 1 : 0);
    this.reconciler.evaluate();
  }

  private buildSpeaker(): Speaker {
    const s = this.config.speaker;
    if (s.driver === 'none') return new NullSpeaker();
    return createGobgpSpeaker({
      asn: s.asn!,
      routerId: s.routerId!,
      manage: s.gobgp.manage,
      ...(s.gobgp.api !== undefined ? { api: s.gobgp.api } : {}),
      ...(s.gobgp.runtimeDir !== undefined ? { runtimeDir: s.gobgp.runtimeDir } : {}),
      hangTimeoutMs: s.gobgp.hangTimeout,
      gobgpdPath: s.gobgp.binary,
      listenPort: s.gobgp.listenPort,
      reconcileIntervalMs: s.gobgp.reconcileInterval,
      peers: s.peers.map((p) => ({
        address: p.address,
        asn: p.asn,
        holdTimeS: p.holdTime / 1000,
        keepaliveS: p.keepalive / 1000,
        connectRetryS: p.connectRetry / 1000,
        ...(p.password !== undefined ? { password: p.password } : {}),
      })),
      clock: this.clock,
      logger: this.logger.child({ component: 'speaker' }),
      metrics: this.metrics,
    });
  }

  /** Puts (or finds) each VIP on the interface, then re-checks periodically. */
  private async checkVips(): Promise<void> {
    let changed = false;
    for (const vip of this.config.vips) {
      let bound = false;
      try {
        if (this.config.net.manageAddresses) await this.addresses.ensure(vip.address);
        bound = await this.addresses.has(vip.address);
      } catch (err) {
        this.logger.error({ component: 'net', vip: vip.name, err: errorMessage(err) }, `cannot put ${vip.address} on ${this.config.net.interface}`);
      }
      if (this.vipBound.get(vip.name) !== bound) {
        this.logger.info({ component: 'net', vip: vip.name, bound }, `${vip.address} ${bound ? 'is' : 'is NOT'} on ${this.config.net.interface}`);
        this.vipBound.set(vip.name, bound);
        changed = true;
      }
    }
    if (changed) this.reconciler.evaluate();
    if (!this.shuttingDown) {
      this.vipCheck = this.clock.setTimeout(() => void this.checkVips(), VIP_CHECK_INTERVAL_MS);
    }
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

function toPoolSpec(name: string, p: PoolConfig): PoolSpec {
  return {
    name,
    balance: p.balance,
    backends: p.backends.map((b) => ({
      endpoint: b.endpoint,
      weight: b.weight,
      ...((b.maxConnections ?? p.maxConnectionsPerBackend) !== undefined ? { maxConnections: (b.maxConnections ?? p.maxConnectionsPerBackend)! } : {}),
    })),
    slowStartMs: p.slowStart,
    connectTimeoutMs: p.connectTimeout,
    maxConnectAttempts: p.maxConnectAttempts,
    retryBeforeReply: p.retryBeforeReply,
    queue: { size: p.queue.size, timeoutMs: p.queue.timeout },
    timeouts: {
      firstByteMs: p.timeouts.firstByte,
      idleMs: p.timeouts.idle,
      maxConnectionAgeMs: p.timeouts.maxConnectionAge,
      maxConnectionAgeJitterMs: p.timeouts.maxConnectionAgeJitter,
    },
    tcpKeepaliveMs: p.tcpKeepalive,
    outlier: {
      consecutiveConnectFailures: p.outlierDetection.consecutiveConnectFailures,
      baseEjectionMs: p.outlierDetection.baseEjectionTime,
      maxEjectionMs: p.outlierDetection.maxEjectionTime,
    },
    closeOnBackendDown: p.closeOnBackendDown,
  };
}

function toCheckSpec(c: Config['pools'][string]['check']): CheckSpec {
  return {
    kind: c.kind,
    intervalMs: c.interval,
    timeoutMs: c.timeout,
    rise: c.rise,
    fall: c.fall,
    path: c.path,
    expectStatus: c.expectStatus,
    insecureSkipVerify: c.tls.insecureSkipVerify,
    ...(c.host !== undefined ? { host: c.host } : {}),
    ...(c.tls.caFile !== undefined ? { caFile: c.tls.caFile } : {}),
    ...(c.tls.serverName !== undefined ? { serverName: c.tls.serverName } : {}),
  };
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

/** Runs the daemon until SIGTERM/SIGINT, then stops gracefully and exits. */
export async function runDaemon(config: Config, options: RunOptions): Promise<void> {
  const daemon = new Daemon(config, options);
  const log = options.logger.child({ component: 'daemon' });
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      log.warn({ event: 'stop', signal }, 'second signal: exiting at once');
      process.exit(1);
    }
    void daemon.stop(signal).then(
      () => process.exit(0),
      (err) => {
        log.error({ err: errorMessage(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await daemon.start();
  } catch (err) {
    log.error({ event: 'start', err: errorMessage(err) }, `vipd failed to start: ${errorMessage(err)}`);
    await daemon.stop('start failed').catch(() => undefined);
    process.exit(1);
  }
}
