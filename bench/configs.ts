import * as path from 'node:path';

/**
 * Configuration of every program in the benchmark, generated into the run's work directory. All of
 * them live in the benchmark's own network namespace, so fixed addresses and ports cannot collide
 * with anything on the host.
 */

/** The VIP: on `lo` of the balancer namespace (netns.ts), reached from the client through its veth. */
export const VIP = '198.18.99.1';
/** The checks block's VIP, on the client namespace's `lo` (that block runs on loopback alone). */
export const CHECKS_VIP = '198.18.99.2';
/** The routed topology's addresses (netns.ts). */
export const CLIENT_HOST = '198.18.101.2';
export const BALANCER_CLIENT_SIDE = '198.18.101.1';
export const BALANCER_BACKEND_SIDE = '198.18.102.1';
/** The nginx HTTP backend, in the backend namespace behind the balancer. */
export const BACKEND_HOST = '198.18.102.2';
export const BACKEND_PORT = 8080;
/** Listening ports on the VIP. vipd's variants (workers, first-byte wait) run one at a time on 8001. */
export const PROXY_PORTS = { vipd: 8001, 'vipd-firstbyte': 8001, 'vipd-kernel': 8005, haproxy: 8002, nginx: 8003, libuv: 8004 } as const;
/** vipd's admin API (loopback only, as vipd requires). Every port here stays below the ephemeral range (netns.ts). */
export const VIPD_ADMIN_PORT = 9180;

/** Bytes of the small static body (a typical small API answer). */
export const SMALL_BODY_BYTES = 128;
/**
 * The large file for the bulk download: sparse, so it costs no disk and the backend reads zero pages.
 * 512 MiB is a few seconds through the slowest proxy here, long enough that connection setup and
 * slow start are noise, short enough for three rounds of every path.
 */
export const LARGE_FILE_BYTES = 512 * 1024 * 1024;

export const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

/** Timeouts long enough that no proxy closes an idle connection during the idle-connection test. */
const IDLE_TIMEOUT = '1h';

export interface Layout {
  readonly dir: string;
  readonly www: string;
}

export function layout(dir: string): Layout {
  return { dir, www: path.join(dir, 'www') };
}

/** Temp paths of nginx's http modules, kept in the work dir so that nothing is written under /var/lib/nginx. */
function nginxHttpTempPaths(l: Layout, name: string): string {
  return ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((m) => `  ${m}_temp_path ${path.join(l.dir, 'tmp', `${name}-${m}`)};`)
    .join('\n');
}

/**
 * The HTTP backend: static files, no access log, keep-alive that never ends a connection by itself
 * (keepalive_requests high, timeouts long), so the keep-alive test measures keep-alive and the idle
 * test's connections stay open. Its listen backlog is large so that it never limits the accept rate
 * of a proxy in front of it.
 */
export function backendNginxConf(l: Layout, workers: number, nofile: number): string {
  return `${nginxMainContext(l, 'backend', workers, nofile)}
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout ${IDLE_TIMEOUT};
  keepalive_requests 1000000000;
  client_header_timeout ${IDLE_TIMEOUT};
  default_type application/octet-stream;
  # Keeps the two files open: no open()/fstat()/close() per request, so the backend, which shares its
  # core with the load generator, costs as little as it can.
  open_file_cache max=16 inactive=1h;
  open_file_cache_valid 1h;
${nginxHttpTempPaths(l, 'backend')}
  server {
    listen ${BACKEND_HOST}:${BACKEND_PORT} backlog=4096;
    root ${l.www};
    location / { }
  }
}
`;
}

/**
 * HAProxy in TCP mode with its defaults otherwise (no splicing, default buffers), as an operator's
 * kube-apiserver frontend is usually configured. `-db` keeps it in the foreground as one process.
 * The server check mirrors vipd's TCP health check so both do the same background work.
 */
export function haproxyConf(threads: number, maxconn: number): string {
  return `global
  nbthread ${threads}
  maxconn ${maxconn}

defaults
  mode tcp
  timeout connect 1s
  timeout client ${IDLE_TIMEOUT}
  timeout server ${IDLE_TIMEOUT}

frontend vip
  bind ${VIP}:${PROXY_PORTS.haproxy}
  default_backend pool

backend pool
  server b1 ${BACKEND_HOST}:${BACKEND_PORT} check inter 500ms
`;
}

/** The main and events contexts both nginx instances share: foreground, own pid and log files, fd limits. */
function nginxMainContext(l: Layout, name: string, workers: number, nofile: number): string {
  return `daemon off;
master_process on;
worker_processes ${workers};
worker_rlimit_nofile ${nofile};
pid ${path.join(l.dir, `${name}.pid`)};
error_log ${path.join(l.dir, `${name}.error.log`)} warn;
events {
  worker_connections ${nofile - 100};
}`;
}

/** nginx's stream (L4) proxy with defaults (16 KiB proxy buffers, accept_mutex off). */
export function nginxStreamConf(l: Layout, workers: number, nofile: number): string {
  return `load_module ${STREAM_MODULE};
${nginxMainContext(l, 'nginx-stream', workers, nofile)}
stream {
  upstream pool {
    server ${BACKEND_HOST}:${BACKEND_PORT};
  }
  server {
    listen ${VIP}:${PROXY_PORTS.nginx};
    proxy_pass pool;
    proxy_connect_timeout 1s;
    proxy_timeout ${IDLE_TIMEOUT};
  }
}
`;
}

/** Which vipd the benchmark runs: the user-space proxy (1 or N workers, with or without the first-byte wait) or the kernel data path. */
export interface VipdVariant {
  readonly workers: number;
  /** `timeouts.firstByte`; undefined leaves vipd's default (10s), i.e. the wait for the client's first byte. */
  readonly firstByte: string | undefined;
  /** `dataPath: kernel` (nftables DNAT/SNAT on the balancer) instead of the proxy. */
  readonly kernel: boolean;
}

/**
 * vipd without BGP (`speaker.driver: none`), the VIP already on `lo` (`manageAddresses: false`), and a
 * pool of the one backend. The proxy runs with `firstByte: 0s` in the tables: the idle-connection test's
 * clients stay silent after their first exchange, and HAProxy and nginx dial at once too; the
 * first-byte block measures vipd's default (10s) against it. The kernel listener's pool sets none of
 * what a kernel listener refuses (first byte, queue, retry before reply, least-conn). JSON is valid
 * YAML, so the config is written as JSON and needs no YAML library here.
 */
export function vipdConfig(v: VipdVariant, adminPort: number, stateDir: string, adminSocket: string): Record<string, unknown> {
  const check = { kind: 'tcp', interval: '500ms', timeout: '200ms', rise: 1, fall: 3 };
  const backends = [`${BACKEND_HOST}:${BACKEND_PORT}`];
  const listener = v.kernel ? { port: PROXY_PORTS['vipd-kernel'], pool: 'web', dataPath: 'kernel' } : { port: PROXY_PORTS.vipd, pool: 'web' };
  const pool: Record<string, unknown> = { balance: 'round-robin', backends, check };
  if (!v.kernel && v.firstByte !== undefined) pool.timeouts = { firstByte: v.firstByte };
  return {
    node: { name: 'bench' },
    // Per run: a drain left by one run must not carry into the next, and parallel runs never meet on /run/vipd.
    stateDir,
    admin: { listen: `127.0.0.1:${adminPort}`, socket: adminSocket },
    net: { interface: 'lo', manageAddresses: false },
    shutdown: { grace: '0s' },
    speaker: { driver: 'none' },
    proxy: { workers: v.workers },
    vips: [{ name: 'bench', address: VIP, listeners: [listener] }],
    pools: { web: pool },
  };
}

/**
 * The wrk script: prints one machine-readable line from done(), with exact microsecond percentiles
 * (wrk's own text output rounds them and changes units). `close` adds `Connection: close`, so each
 * request is a new TCP connection; `delayMs` paces every connection (wrk's delay() hook runs before
 * a request is sent, and wrk starts the latency clock only after it, so the pause is not counted).
 */
export function wrkScript(opts: { close: boolean; delayMs?: number }): string {
  return `${opts.close ? 'wrk.headers["Connection"] = "close"\n' : ''}${
    opts.delayMs !== undefined ? `function delay()\n  return ${opts.delayMs}\nend\n` : ''
  }function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'VBENCH {"requests":%d,"durationUs":%d,"bytes":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"statusErrors":%d,"timeouts":%d,"p50Us":%d,"p99Us":%d,"meanUs":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
`;
}
