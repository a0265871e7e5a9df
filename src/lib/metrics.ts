import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every vipd metric is defined here, named vipd_<subsystem>_<name>_<unit>. Each Metrics owns its
 * Registry so that several daemons (or tests) in one process never collide.
 */
export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'vipd_process_' });
  const r = [registry];
  return {
    registry,
    // announce
    vipAnnounced: new Gauge({ name: 'vipd_announce_vip_announced', help: '1 while the VIP is in the desired advertisement set', labelNames: ['vip'], registers: r }),
    vipDecisions: new Counter({ name: 'vipd_announce_decisions_total', help: 'Announce/withdraw decisions that changed state, by reason', labelNames: ['vip', 'action', 'reason'], registers: r }),
    drained: new Gauge({ name: 'vipd_announce_drained', help: '1 while the node is drained by the operator', registers: r }),
    vipState: new Gauge({ name: 'vipd_announce_vip_state', help: '1 for the current state of a VIP (announced, pessimized, draining, withdrawn)', labelNames: ['vip', 'state'], registers: r }),
    dampingPenalty: new Gauge({ name: 'vipd_announce_damping_penalty', help: 'RFC 2439 flap damping penalty of a VIP', labelNames: ['vip'], registers: r }),
    vipDrainPhase: new Gauge({ name: 'vipd_announce_drain_phase', help: '1 for the current phase of a drain (grace, withdrawn, closed); target is "node" or a VIP name', labelNames: ['target', 'phase'], registers: r }),
    hookRuns: new Counter({ name: 'vipd_announce_hook_runs_total', help: 'hooks.onChange runs, by result (ok, failed, timeout, error)', labelNames: ['vip', 'result'], registers: r }),
    // health
    backendState: new Gauge({ name: 'vipd_health_backend_state', help: '1 for the current health state of a backend', labelNames: ['pool', 'backend', 'state'], registers: r }),
    healthChecks: new Counter({ name: 'vipd_health_checks_total', help: 'Health probes run, by result', labelNames: ['pool', 'backend', 'result'], registers: r }),
    healthCheckDuration: new Histogram({ name: 'vipd_health_check_duration_seconds', help: 'Health probe duration', labelNames: ['pool'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: r }),
    healthTransitions: new Counter({ name: 'vipd_health_transitions_total', help: 'Backend health transitions', labelNames: ['pool', 'backend', 'to'], registers: r }),
    // proxy
    listenerAccepted: new Counter({ name: 'vipd_proxy_listener_accepted_total', help: 'Client connections accepted', labelNames: ['listener'], registers: r }),
    listenerRefused: new Counter({ name: 'vipd_proxy_listener_refused_total', help: 'Client connections closed at once, by reason', labelNames: ['listener', 'reason'], registers: r }),
    listenerErrors: new Counter({ name: 'vipd_proxy_listener_errors_total', help: 'Client-side errors, by kind', labelNames: ['listener', 'kind'], registers: r }),
    listenerBound: new Gauge({ name: 'vipd_proxy_listener_bound', help: '1 while the listener socket is bound', labelNames: ['listener'], registers: r }),
    sessionsActive: new Gauge({ name: 'vipd_proxy_sessions_active', help: 'Proxied sessions open now', labelNames: ['listener'], registers: r }),
    backendActive: new Gauge({ name: 'vipd_proxy_backend_connections_active', help: 'Upstream connections open now', labelNames: ['pool', 'backend'], registers: r }),
    backendConnections: new Counter({ name: 'vipd_proxy_backend_connections_total', help: 'Upstream connections established', labelNames: ['pool', 'backend'], registers: r }),
    backendConnectErrors: new Counter({ name: 'vipd_proxy_backend_connect_errors_total', help: 'Upstream connect failures, by kind', labelNames: ['pool', 'backend', 'kind'], registers: r }),
    backendBytes: new Counter({ name: 'vipd_proxy_backend_bytes_total', help: 'Bytes relayed; direction in = backend to client, out = client to backend', labelNames: ['pool', 'backend', 'direction'], registers: r }),
    connectRetries: new Counter({ name: 'vipd_proxy_connect_retries_total', help: 'Connections retried on another backend after a connect failure', labelNames: ['listener'], registers: r }),
    sessionsClosed: new Counter({ name: 'vipd_proxy_sessions_closed_total', help: 'Sessions ended by vipd policy, by reason (firstByteTimeout, idleTimeout, maxAge, backendDown)', labelNames: ['listener', 'reason'], registers: r }),
    backendQueued: new Gauge({ name: 'vipd_proxy_backend_queued_connections', help: 'Clients waiting in the pool queue, attributed to the full backend the balancer chose for them', labelNames: ['pool', 'backend'], registers: r }),
    backendEjected: new Gauge({ name: 'vipd_proxy_backend_ejected', help: '1 while passive health keeps the backend out of picking', labelNames: ['pool', 'backend'], registers: r }),
    backendEjections: new Counter({ name: 'vipd_proxy_backend_ejections_total', help: 'Ejections after consecutive connect failures', labelNames: ['pool', 'backend'], registers: r }),
    backendDrained: new Gauge({ name: 'vipd_proxy_backend_drained', help: '1 while the operator drains the backend (no new connections)', labelNames: ['pool', 'backend'], registers: r }),
    fdSessionCapacity: new Gauge({ name: 'vipd_proxy_fd_session_capacity', help: 'Client connections the fd limit leaves room for (two descriptors each, after those in use at start and a reserve); clients beyond it are refused with reason fdLimit', registers: r }),
    poolConnectionSkew: new Gauge({ name: 'vipd_proxy_pool_connection_skew_ratio', help: 'Busiest backend in service: its connections per unit of weight over the pool average per unit of weight (1 = even)', labelNames: ['pool'], registers: r }),
    proxyWorkerRestarts: new Counter({ name: 'vipd_proxy_worker_restarts_total', help: 'Proxy worker processes restarted, by reason: exited (died) or hung (silent for proxy.hangTimeout, killed)', labelNames: ['reason'], registers: r }),
    proxyWorkersAnswering: new Gauge({ name: 'vipd_proxy_workers_answering', help: 'Proxy worker processes up and answering their heartbeat', registers: r }),
    // kernel data path (nftables): counted by the kernel, read back by vipd
    kernelBackendPackets: new Counter({ name: 'vipd_kernel_backend_packets_total', help: 'Packets of kernel-path connections to and from the backend (nft counters, forward chain)', labelNames: ['pool', 'backend'], registers: r }),
    kernelBackendBytes: new Counter({ name: 'vipd_kernel_backend_bytes_total', help: 'Bytes of kernel-path connections to and from the backend (nft counters, forward chain)', labelNames: ['pool', 'backend'], registers: r }),
    kernelBackendConnections: new Counter({ name: 'vipd_kernel_backend_connections_total', help: 'Connections the kernel path rewrote to the backend (nft counters, postrouting chain)', labelNames: ['pool', 'backend'], registers: r }),
    kernelBackendActive: new Gauge({ name: 'vipd_kernel_backend_connections_active', help: 'Open kernel-path connections to the backend (conntrack)', labelNames: ['pool', 'backend'], registers: r }),
    kernelConntrackDeleted: new Counter({ name: 'vipd_kernel_conntrack_deleted_total', help: 'Conntrack entries deleted when a backend went down (closeOnBackendDown)', labelNames: ['pool', 'backend'], registers: r }),
    kernelTableWrites: new Counter({ name: 'vipd_kernel_table_writes_total', help: 'Transactions that replace the nftables table, by result (ok, failed)', labelNames: ['result'], registers: r }),
    kernelListenerVerified: new Gauge({ name: 'vipd_kernel_listener_verified', help: '1 while the read-back shows every rule of the kernel listener in place', labelNames: ['listener'], registers: r }),
    // speaker
    peerState: new Gauge({ name: 'vipd_speaker_peer_state', help: '1 for the current BGP session state of a peer', labelNames: ['peer', 'state'], registers: r }),
    peerTransitions: new Counter({ name: 'vipd_speaker_peer_transitions_total', help: 'BGP session state changes', labelNames: ['peer', 'to'], registers: r }),
    pathsAdvertised: new Gauge({ name: 'vipd_speaker_paths_advertised', help: 'Paths vipd has in the BGP daemon now', registers: r }),
    pushes: new Counter({ name: 'vipd_speaker_pushes_total', help: 'Desired-set pushes to the BGP daemon, by result', labelNames: ['result'], registers: r }),
    reconciles: new Counter({ name: 'vipd_speaker_reconciles_total', help: 'RIB reconciliations, by trigger and result', labelNames: ['trigger', 'result'], registers: r }),
    pathsRepaired: new Counter({ name: 'vipd_speaker_paths_repaired_total', help: 'Paths changed by reconciliation: added (missing) or deleted (not owned)', labelNames: ['op'], registers: r }),
    drift: new Counter({ name: 'vipd_speaker_drift_total', help: "Confirmed differences between a peer's adj-RIB-out and the desired set (missing or extra), each repaired", labelNames: ['peer', 'kind'], registers: r }),
    apiErrors: new Counter({ name: 'vipd_speaker_api_errors_total', help: 'gobgpd API calls refused or unanswered, by method and gRPC status; the reconciliation is retried with back-off', labelNames: ['method', 'code'], registers: r }),
    daemonRestarts: new Counter({ name: 'vipd_speaker_daemon_restarts_total', help: 'Managed BGP daemon restarts', registers: r }),
    daemonUp: new Gauge({ name: 'vipd_speaker_daemon_up', help: '1 while the BGP daemon API answers', registers: r }),
    // control
    configReloads: new Counter({ name: 'vipd_config_reloads_total', help: 'Config reloads, by result', labelNames: ['result'], registers: r }),
    adminRequests: new Counter({ name: 'vipd_admin_requests_total', help: 'Admin API requests', labelNames: ['route', 'code'], registers: r }),
    adminRefused: new Counter({ name: 'vipd_admin_refused_total', help: 'Admin requests and connections refused, by reason (host, origin, token, contentType, connectionLimit, ...)', labelNames: ['reason'], registers: r }),
    adminConnections: new Gauge({ name: 'vipd_admin_connections', help: 'Admin connections open now, both transports', registers: r }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

const collectors = new WeakMap<object, Set<() => void>>();

/**
 * Runs `fold` whenever `metric` is read (a scrape, get(), getMetricsAsJSON()), before its values are:
 * hot paths count in plain fields and fold them into the metric then, so that no label set is hashed
 * per event while what a scrape sees stays exact. Returns an unsubscribe.
 */
export function onCollect(metric: Counter<string> | Gauge<string>, fold: () => void): () => void {
  let folds = collectors.get(metric);
  if (folds === undefined) {
    const set = new Set<() => void>();
    folds = set;
    collectors.set(metric, set);
    // prom-client calls a metric's collect() (set here, after construction) at the start of get().
    (metric as { collect?: () => void }).collect = () => {
      for (const run of set) run();
    };
  }
  folds.add(fold);
  return () => void folds.delete(fold);
}
