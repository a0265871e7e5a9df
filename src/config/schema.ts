import { isIP } from 'node:net';
import { Address4, Address6 } from 'ip-address';
import { z } from 'zod';
import { parseDuration } from '../lib/duration';
import { canonicalAddress, isIpv4Mapped, isLoopbackAddress, isUnspecifiedAddress, sameAddress } from '../net/address';
import { endpoint, parseEndpoint } from '../net/endpoint';
import { commandProblem, parseProbeBytes, tlsFileProblems } from '../health/check-files';

/**
 * The config schema. Everything the daemon reads is validated here, so the rest of the code can trust
 * the Config type: ranges, addresses, cross references. Durations become milliseconds.
 */

function duration(minMs: number, maxMs: number) {
  return z.string().transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" is not a duration (write e.g. 200ms, 2s, 1m)` });
      return z.NEVER;
    }
    if (ms < minMs || ms > maxMs) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `${text} is out of range (${minMs}ms..${maxMs}ms)` });
      return z.NEVER;
    }
    return ms;
  });
}

/** Any IP address, in canonical form (net/address.ts: every notation of one address compares equal). */
const ipAddress = z.string().transform((text, ctx) => {
  const canonical = canonicalAddress(text);
  if (canonical === undefined) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" is not an IP address` });
    return z.NEVER;
  }
  return canonical;
});
const ipv4Address = z.string().transform((text, ctx) => {
  if (isIP(text) !== 4) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" is not an IPv4 address` });
    return z.NEVER;
  }
  return canonicalAddress(text)!;
});

/** A VIP must be one usable host address: no network, no loopback, multicast or unspecified address. */
export function hostAddressProblem(text: string): string | undefined {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) return `"${text}" is not an IP address`;
  // Announced as an IPv6 /128 but reached as IPv4: say which one is meant.
  if (isIpv4Mapped(addr)) return `"${addr}" is an IPv4-mapped IPv6 address; write the IPv4 address ${canonicalAddress(addr)} (announced as /32)`;
  if (slash >= 0) {
    const len = text.slice(slash + 1);
    const hostLen = family === 4 ? '32' : '128';
    if (len !== hostLen) return `"${text}" is not a host address (a VIP is one address, /${hostLen})`;
  }
  if (family === 4) {
    const a = new Address4(addr);
    if (a.isInSubnet(new Address4('0.0.0.0/8'))) return `"${addr}" is in 0.0.0.0/8, not a host address`;
    if (a.isInSubnet(new Address4('127.0.0.0/8'))) return `"${addr}" is a loopback address`;
    if (a.isInSubnet(new Address4('224.0.0.0/4'))) return `"${addr}" is a multicast address`;
    if (a.isInSubnet(new Address4('240.0.0.0/4'))) return `"${addr}" is reserved or broadcast`;
  } else {
    const a = new Address6(addr);
    if (a.isLoopback()) return `"${addr}" is a loopback address`;
    if (a.isMulticast()) return `"${addr}" is a multicast address`;
    if (a.isInSubnet(new Address6('::/128'))) return `"${addr}" is the unspecified address`;
    if (a.isLinkLocal()) return `"${addr}" is link-local`;
  }
  return undefined;
}

const vipAddress = z.string().transform((text, ctx) => {
  const problem = hostAddressProblem(text);
  if (problem) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: problem });
    return z.NEVER;
  }
  const slash = text.indexOf('/');
  return canonicalAddress(slash < 0 ? text : text.slice(0, slash))!;
});

const port = z.number().int('must be a whole number').min(1, 'port must be 1..65535').max(65535, 'port must be 1..65535');

const asn = z
  .number()
  .int('an ASN is a whole number')
  .min(1, 'ASN must be 1..4294967295')
  .max(4294967295, 'ASN must be 1..4294967295')
  .refine((n) => n !== 23456, 'ASN 23456 is AS_TRANS, reserved');

const community = z.string().refine((s) => {
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(s);
  return !!m && Number(m[1]) <= 65535 && Number(m[2]) <= 65535;
}, (s) => ({ message: `"${s}" is not a community (write ASN:VALUE, each 0..65535)` }));

const UINT32_MAX = 4294967295;

/** RFC 8092 large community, "GLOBAL:LOCAL1:LOCAL2", each 0..4294967295. */
const largeCommunity = z.string().refine((s) => {
  const m = /^(\d{1,10}):(\d{1,10}):(\d{1,10})$/.exec(s);
  return !!m && [m[1], m[2], m[3]].every((n) => Number(n) <= UINT32_MAX);
}, (s) => ({ message: `"${s}" is not a large community (write ASN:X:Y, each 0..4294967295)` }));

/** One attribute set of a VIP's path (vips[].attributes.up / pessimized / draining). */
const attributeSetSchema = z
  .object({
    communities: z.array(community).default([]),
    largeCommunities: z.array(largeCommunity).default([]),
    med: z.number().int('med is a whole number').min(0, 'med must be 0..4294967295').max(UINT32_MAX, 'med must be 0..4294967295').optional(),
    /** The own AS put this many extra times in front of the AS path (eBGP peers only). */
    asPathPrepend: z.number().int('asPathPrepend is a whole number').min(0, 'asPathPrepend must be 0..10').max(10, 'asPathPrepend must be 0..10').default(0),
    /** iBGP only: eBGP peers never see LOCAL_PREF. */
    localPref: z.number().int('localPref is a whole number').min(0, 'localPref must be 0..4294967295').max(UINT32_MAX, 'localPref must be 0..4294967295').optional(),
  })
  .strict();

const gateSchema = z
  .object({
    /** A number of usable backends, or "P%" of the pool's configured backends; each listener's pool must have it. */
    minHealthy: z.union([
      z.number().int('minHealthy is a whole number or "P%"').min(1, 'minHealthy must be 1..1000').max(1000, 'minHealthy must be 1..1000'),
      z.string().transform((text, ctx) => {
        const m = /^(\d{1,3})%$/.exec(text);
        const percent = m ? Number(m[1]) : NaN;
        if (!(percent >= 1 && percent <= 100)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" is not a percentage 1%..100%` });
          return z.NEVER;
        }
        return { percent };
      }),
    ]),
    listeners: z.enum(['all', 'any']).default('all'),
  })
  .strict();

const dampingSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Added per health-caused withdrawal. */
    penalty: z.number().int().min(1, 'penalty must be 1..100000').max(100_000, 'penalty must be 1..100000').default(1000),
    halfLife: duration(1000, 3_600_000).default('30s'),
    suppress: z.number().int().min(1, 'suppress must be 1..1000000').max(1_000_000, 'suppress must be 1..1000000').default(2000),
    reuse: z.number().int().min(1, 'reuse must be 1..1000000').max(1_000_000, 'reuse must be 1..1000000').default(750),
    maxSuppress: duration(1000, 86_400_000).default('10m'),
  })
  .strict()
  .superRefine((d, ctx) => {
    if (d.reuse >= d.suppress) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['reuse'], message: `reuse (${d.reuse}) must be below suppress (${d.suppress})` });
  });

const commandArgv = z
  .array(z.string().min(1, 'an argument is never empty'))
  .min(1, 'a command needs at least argv[0]')
  .superRefine((argv, ctx) => {
    const problem = commandProblem(argv[0]!);
    if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [0], message: problem });
  });

const endpointText = z.string().transform((text, ctx) => {
  const ep = parseEndpoint(text);
  if (!ep) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" is not IP:PORT (IPv6 as [ADDR]:PORT, port 1..65535)` });
    return z.NEVER;
  }
  return ep;
});

const loopbackListen = z.string().transform((text, ctx) => {
  const ep = parseEndpoint(text);
  if (!ep || !(ep.host.startsWith('127.') || ep.host === '::1')) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" must be a loopback IP:PORT (127.0.0.0/8 or [::1]); the admin API is never exposed` });
    return z.NEVER;
  }
  return ep;
});

/** A unix socket path must fit sockaddr_un.sun_path (108 bytes with its NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

/**
 * The admin API. Mutations go over the unix socket (file permissions are the authentication) or over
 * TCP with the bearer token; TCP without the token is read-only. See docs/admin.md.
 */
const adminSchema = z
  .object({
    /** Loopback TCP: /status and /metrics for anyone on the node; mutations only with the token. */
    listen: loopbackListen.default('127.0.0.1:9180'),
    /** Default /run/vipd/<node.name>.sock (adminSocketPath). */
    socket: z
      .string()
      .startsWith('/', 'must be an absolute path')
      .refine((s) => Buffer.byteLength(s) <= MAX_SOCKET_PATH_BYTES, `a unix socket path is at most ${MAX_SOCKET_PATH_BYTES} bytes`)
      .optional(),
    /** Group owning the socket (name or gid): its members may drain. Unset: vipd's own group. */
    socketGroup: z.union([z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*\$?$/, 'not a group name'), z.number().int().min(0).max(4294967294)]).optional(),
    /** File holding the bearer token that allows mutations over TCP (must not be world-readable). */
    tokenFile: z.string().startsWith('/', 'must be an absolute path').optional(),
  })
  .strict()
  .default({});

/** Where the admin socket is: `admin.socket`, or /run/vipd/<node.name>.sock. */
export function adminSocketPath(config: { readonly node: { readonly name: string }; readonly admin: { readonly socket?: string | undefined } }): string {
  return config.admin.socket ?? `/run/vipd/${config.node.name}.sock`;
}

const gobgpApi = z.string().refine((s) => {
  if (s.startsWith('unix:/')) return true;
  const ep = parseEndpoint(s);
  return !!ep && (ep.host.startsWith('127.') || ep.host === '::1');
}, (s) => ({ message: `"${s}" must be a loopback IP:PORT or unix:/absolute/path; gobgpd's API has no authentication` }));

/** tcp send/expect: text, or bytes written as `hex:0a1b…`; kept as text (a frozen config holds no Buffer). */
const probeBytes = z.string().min(1).superRefine((text, ctx) => {
  const bytes = parseProbeBytes(text);
  if (bytes === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, fatal: true, message: `"${text}" is not hex: write hex: then pairs of hex digits` });
  else if (bytes.length > 65_536) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'longer than the 64 KiB a probe reads' });
});

/** Keys that only mean something for some kinds; on another kind they are refused rather than ignored. */
const CHECK_KEYS_BY_KIND: ReadonlyArray<readonly [key: 'path' | 'expectStatus' | 'host' | 'expectBody' | 'expectJson' | 'send' | 'expect' | 'service' | 'command', kinds: readonly string[]]> = [
  ['path', ['http', 'https']],
  ['expectStatus', ['http', 'https']],
  ['host', ['http', 'https']],
  ['expectBody', ['http', 'https']],
  ['expectJson', ['http', 'https']],
  ['send', ['tcp']],
  ['expect', ['tcp']],
  ['service', ['grpc']],
  ['command', ['exec']],
];

/** POSIX user name, as useradd accepts it (no leading dash, no colon or slash). */
const unixUser = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/, 'not a user name');

const SPEAKER_FAMILIES = ['ipv4-unicast', 'ipv6-unicast'] as const;
type SpeakerFamily = (typeof SPEAKER_FAMILIES)[number];

/**
 * A next hop that routers install. FRR 8.4 marks an IPv4-mapped next hop (gobgpd's own default for IPv6
 * over an IPv4 session) valid and best but never puts it in the kernel (docs/bgp.md), and a link-local one
 * needs an interface the path does not carry.
 */
const nextHopIpv6 = z.string().superRefine((s, ctx) => {
  if (isIP(s) !== 6) return void ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}" is not an IPv6 address` });
  const a = new Address6(s);
  if (a.is4()) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}" is IPv4-mapped: FRR marks such a next hop best but never installs it; use a global IPv6 address of this node on the link to the peer` });
  else if (a.isLinkLocal() || a.isLoopback() || a.isMulticast() || a.isInSubnet(new Address6('::/128'))) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}" is not a global unicast address; use a global IPv6 address of this node on the link to the peer` });
  }
});

const nextHopIpv4 = z.string().superRefine((s, ctx) => {
  if (isIP(s) !== 4) return void ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}" is not an IPv4 address` });
  const a = new Address4(s);
  if (a.isInSubnet(new Address4('0.0.0.0/8')) || a.isInSubnet(new Address4('127.0.0.0/8')) || a.isInSubnet(new Address4('224.0.0.0/3'))) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}" is not a unicast address of this node` });
  }
});

const checkSchema = z
  .object({
    kind: z.enum(['tcp', 'http', 'https', 'etcd', 'grpc', 'exec']).default('tcp'),
    path: z.string().startsWith('/', 'must start with /').optional(),
    expectStatus: z.array(z.number().int().min(100).max(599)).min(1).optional(),
    host: z.string().min(1).optional(),
    /** http(s): the body must contain this (read at most 64 KiB). */
    expectBody: z.string().min(1).optional(),
    /** http(s): the body is JSON with these values at these dotted paths. */
    expectJson: z.record(z.string().regex(/^[^.]+(\.[^.]+)*$/, 'a dotted path: a.b.0.c'), z.unknown()).optional(),
    /** tcp: written once connected. */
    send: probeBytes.optional(),
    /** tcp: must arrive within the timeout (substring of the first 64 KiB). */
    expect: probeBytes.optional(),
    /** grpc: the service asked about (grpc.health.v1); the whole server when unset. */
    service: z.string().optional(),
    /** exec: argv, no shell; exit 0 means up. */
    command: z.array(z.string().min(1)).min(1, 'command needs at least the program').optional(),
    interval: duration(50, 300_000).default('1s'),
    /** While a transition is pending (HAProxy fastinter); default: interval. */
    fastInterval: duration(50, 300_000).optional(),
    /** While down (HAProxy downinter); default: interval. */
    downInterval: duration(50, 300_000).optional(),
    timeout: duration(10, 60_000).default('1s'),
    rise: z.number().int().min(1, 'rise must be 1..20').max(20, 'rise must be 1..20').default(2),
    fall: z.number().int().min(1, 'fall must be 1..20').max(20, 'fall must be 1..20').default(2),
    /** https always speaks TLS; etcd and grpc speak TLS when this block is present. */
    tls: z
      .object({
        caFile: z.string().min(1).optional(),
        certFile: z.string().min(1).optional(),
        keyFile: z.string().min(1).optional(),
        insecureSkipVerify: z.boolean().default(false),
        serverName: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (const key of ['interval', 'fastInterval', 'downInterval'] as const) {
      const ms = c[key];
      if (ms !== undefined && c.timeout > ms) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['timeout'], message: `timeout (${c.timeout}ms) must not exceed ${key} (${ms}ms)` });
      }
    }
    for (const [key, kinds] of CHECK_KEYS_BY_KIND) {
      if (c[key] !== undefined && !kinds.includes(c.kind)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: [key], message: `${key} applies to kind ${kinds.join(' or ')}, not ${c.kind}` });
      }
    }
    if (c.expectBody !== undefined && c.expectJson !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['expectJson'], message: 'use expectBody or expectJson, not both' });
    }
    if (c.kind === 'exec' && c.command === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['command'], message: 'kind exec needs command: [program, args...]' });
    }
  });

/**
 * What the files a config names say about it (TLS material, exec commands): read at load, so a missing
 * file or a key that is not the certificate's is refused with its key and line, never a stream of
 * probe failures. Apart from the schema because it depends on the machine, not on the text: config.ts
 * runs it unless told the config is for another machine (the examples name a kubeadm node's files).
 */
export function checkFileProblems(config: Config): Array<{ path: Array<string | number>; message: string }> {
  const problems: Array<{ path: Array<string | number>; message: string }> = [];
  for (const [name, pool] of Object.entries(config.pools)) {
    const c = pool.check;
    const at = (...rest: Array<string | number>) => ['pools', name, 'check', ...rest];
    if (c.kind === 'exec' && c.command !== undefined) {
      const problem = commandProblem(c.command[0]!);
      if (problem !== undefined) problems.push({ path: at('command', 0), message: problem });
    }
    const speaksTls = c.kind === 'https' || ((c.kind === 'etcd' || c.kind === 'grpc') && c.tls !== undefined);
    if (c.tls !== undefined && speaksTls) {
      for (const problem of tlsFileProblems(c.tls)) problems.push({ path: at('tls', problem.key), message: problem.message });
    }
  }
  return problems;
}

const backendObject = z
  .object({
    address: endpointText,
    /** Relative share of new connections (weighted pickers) and of hash slots (source-hash). */
    weight: z.number().int('weight is a whole number').min(1, 'weight must be 1..1000').max(1000, 'weight must be 1..1000').default(1),
    maxConnections: z.number().int().min(1, 'maxConnections must be 1..1000000').max(1_000_000, 'maxConnections must be 1..1000000').optional(),
  })
  .strict();

/** A backend is "IP:PORT" or {address, weight, maxConnections}. */
const backendSchema = z
  .union([endpointText, backendObject])
  .transform((b) => ('address' in b ? { endpoint: b.address, weight: b.weight, maxConnections: b.maxConnections } : { endpoint: b, weight: 1, maxConnections: undefined }));

const poolSchema = z
  .object({
    balance: z.enum(['round-robin', 'least-conn', 'random-two', 'random', 'source-hash']).default('round-robin'),
    backends: z.array(backendSchema).min(1, 'a pool needs at least one backend'),
    check: checkSchema.default({}),
    connectTimeout: duration(10, 60_000).default('1s'),
    maxConnectAttempts: z.number().int().min(1).max(10).default(3),
    /** A backend that fails before its first byte: move the client to another, sending its bytes again (proxy.ts RetryBeforeReply). Default tls. */
    retryBeforeReply: z.enum(['tls', 'always', 'off']).optional(),
    /** A backend that has just come up gets a weight ramping from ~0 to its full weight over this time. */
    slowStart: duration(0, 3_600_000).default('0s'),
    /** Default cap for backends that set no maxConnections of their own. */
    maxConnectionsPerBackend: z.number().int().min(1).max(1_000_000).optional(),
    queue: z
      .object({
        size: z.number().int().min(0, 'queue.size must be 0..100000').max(100_000, 'queue.size must be 0..100000').default(0),
        timeout: duration(1, 60_000).default('1s'),
      })
      .strict()
      .default({}),
    timeouts: z
      .object({
        /** A client that sends nothing for this long after connecting is closed; no upstream is opened before its first byte. 0 = off. Default 10s. */
        firstByte: duration(0, 3_600_000).optional(),
        /** A session with no bytes in either direction for this long is closed. 0 = off. */
        idle: duration(0, 86_400_000).default('0s'),
        /** Sessions older than this (plus up to maxConnectionAgeJitter) are closed, so long-lived clients reconnect and rebalance. 0 = off. */
        maxConnectionAge: duration(0, 86_400_000).default('0s'),
        maxConnectionAgeJitter: duration(0, 86_400_000).default('0s'),
      })
      .strict()
      .default({}),
    /** TCP keepalive on both legs: first probe after this much silence, so half-open peers are found. */
    tcpKeepalive: duration(1000, 7_200_000).default('10s'),
    outlierDetection: z
      .object({
        /** Consecutive connect failures that eject a backend from picking; 0 = off. */
        consecutiveConnectFailures: z.number().int().min(0).max(1000).default(5),
        baseEjectionTime: duration(100, 3_600_000).default('5s'),
        maxEjectionTime: duration(100, 86_400_000).default('5m'),
      })
      .strict()
      .default({}),
    /** Close established sessions of a backend when active checks mark it down (default: let them run). */
    closeOnBackendDown: z.boolean().default(false),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.outlierDetection.maxEjectionTime < p.outlierDetection.baseEjectionTime) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['outlierDetection', 'maxEjectionTime'], message: 'must be at least baseEjectionTime' });
    }
  })
  // Defaults filled here rather than by .default(), so that the kernel data path can tell a key the
  // operator asked for (refused: the kernel cannot do it) from a default it would only ignore.
  .transform((p) => {
    const pool = {
      ...p,
      retryBeforeReply: p.retryBeforeReply ?? ('tls' as const),
      timeouts: { ...p.timeouts, firstByte: p.timeouts.firstByte ?? 10_000 },
    };
    explicitPoolKeys.set(pool, { retryBeforeReply: p.retryBeforeReply !== undefined, firstByte: p.timeouts.firstByte !== undefined });
    return pool;
  });

/** Which defaulted pool keys the operator wrote, for checkKernelListeners (only read while the schema runs). */
const explicitPoolKeys = new WeakMap<object, { readonly retryBeforeReply: boolean; readonly firstByte: boolean }>();

const listenerSchema = z
  .object({
    port,
    pool: z.string().min(1),
    maxConnections: z.number().int().min(1, 'maxConnections must be 1..10000000').max(10_000_000, 'maxConnections must be 1..10000000').optional(),
    /** proxy: vipd relays the bytes (every pool feature); kernel: nftables DNAT/SNAT, packets never reach vipd (docs/kernel-data-path.md). */
    dataPath: z.enum(['proxy', 'kernel']).default('proxy'),
  })
  .strict();

const vipSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'use letters, digits, . _ - (max 63)'),
    address: vipAddress,
    /** Shorthand of attributes.up.communities. */
    communities: z.array(community).optional(),
    /** Shorthand of attributes.up.med. */
    med: z.number().int().min(0).max(4294967295).optional(),
    nextHop: ipAddress.optional(),
    /** Shorthand of gate: {minHealthy: N, listeners: all}. */
    minHealthyBackends: z.number().int().min(1).max(1000).optional(),
    gate: gateSchema.optional(),
    /** What a failing gate does: withdraw the path, or keep it with the pessimized attributes while every listener can still serve. */
    onFailure: z.enum(['withdraw', 'pessimize']).default('withdraw'),
    attributes: z
      .object({ up: attributeSetSchema.optional(), pessimized: attributeSetSchema.optional(), draining: attributeSetSchema.optional() })
      .strict()
      .default({}),
    damping: dampingSchema.default({}),
    listeners: z.array(listenerSchema).min(1, 'a VIP needs at least one listener'),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.nextHop !== undefined && isIP(v.nextHop) !== isIP(v.address)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['nextHop'], message: `next hop ${v.nextHop} is IPv${isIP(v.nextHop)} but the VIP ${v.address} is IPv${isIP(v.address)}` });
    }
    if (v.gate !== undefined && v.minHealthyBackends !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['minHealthyBackends'], message: 'minHealthyBackends is the shorthand of gate.minHealthy; give one of them (gate: {minHealthy: N})' });
    }
    if (v.attributes.up !== undefined) {
      for (const key of ['communities', 'med'] as const) {
        if (v[key] !== undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [key], message: `${key} is the shorthand of attributes.up.${key}; give one of them` });
      }
    }
  })
  .transform((v) => {
    const up = v.attributes.up ?? { communities: v.communities ?? [], largeCommunities: [], asPathPrepend: 0, ...(v.med !== undefined ? { med: v.med } : {}) };
    return {
      ...v,
      communities: up.communities,
      ...(up.med !== undefined ? { med: up.med } : {}),
      minHealthyBackends: v.minHealthyBackends ?? (typeof v.gate?.minHealthy === 'number' ? v.gate.minHealthy : 1),
      gate: v.gate ?? { minHealthy: v.minHealthyBackends ?? 1, listeners: 'all' as const },
      /** Which key the gate came from, so that errors name the one the operator wrote. */
      gateKey: v.gate !== undefined ? ('gate' as const) : ('minHealthyBackends' as const),
      attributes: { ...v.attributes, up },
    };
  });

/** GTSM: `true` means the peer is directly connected (hops 1). */
const ttlSecurity = z
  .union([z.literal(true), z.object({ hops: z.number().int().min(1).max(254) }).strict()])
  .transform((v) => (v === true ? { hops: 1 } : v));

const peerSchema = z
  .object({
    address: ipAddress,
    asn,
    holdTime: duration(3000, 65_535_000).default('3s'),
    keepalive: duration(1000, 21_845_000).default('1s'),
    connectRetry: duration(1000, 3_600_000).default('5s'),
    password: z.string().min(1).max(80).optional(),
    /** Source address of the session: a /32 (/128) of this node's own, e.g. on lo, when peering with the node's own FRR/BIRD (docs/beside-frr.md). Checked to be on the node at start and reload. */
    localAddress: ipAddress.optional(),
    /**
     * Address families the session carries (MP-BGP, RFC 4760). Managed default: the peer's own family,
     * plus the family of any VIP that no peer of its own family can carry. External gobgpd: what its
     * session really carries (default: the peer's own family), so that load can refuse a VIP no one carries.
     */
    families: z.array(z.enum(SPEAKER_FAMILIES)).min(1, 'at least one family').optional(),
    /** Next hop of IPv6 VIPs sent over this IPv4 session. Default: a global IPv6 address of this node on the interface towards the peer. */
    nextHopIpv6: nextHopIpv6.optional(),
    /** Next hop of IPv4 VIPs sent over this IPv6 session. Default: gobgpd's (the session's IPv6 address, RFC 8950), which FRR 8.4 installs. */
    nextHopIpv4: nextHopIpv4.optional(),
    /** gobgpd never dials this peer and waits for it to connect (needs speaker.gobgp.listen). */
    passive: z.boolean().default(false),
    /** eBGP to a peer this many hops away: the TTL of the session's packets (default: 1, a directly connected peer). */
    multihop: z.number().int().min(1).max(255).optional(),
    /**
     * GTSM (RFC 5082): packets leave with TTL 255 and only those that arrive with TTL >= 256 - hops are
     * taken, so nobody farther than `hops` routers away can reach the session. `true` is `{hops: 1}`.
     */
    ttlSecurity: ttlSecurity.optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.ttlSecurity !== undefined && p.multihop !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['ttlSecurity'], message: 'give ttlSecurity or multihop, not both: GTSM sends TTL 255 and counts hops itself (ttlSecurity: {hops: N} for a peer N hops away)' });
    }
    if (p.keepalive * 3 > p.holdTime) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['keepalive'], message: `keepalive (${p.keepalive}ms) must be at most a third of holdTime (${p.holdTime}ms)` });
    }
  });

const speakerSchema = z
  .object({
    driver: z.enum(['gobgp', 'none']),
    asn: asn.optional(),
    routerId: ipv4Address.optional(),
    gobgp: z
      .object({
        manage: z.boolean().default(true),
        /** Unset with manage: a unix socket in gobgpd's private runtime directory, reachable by vipd alone. */
        api: gobgpApi.optional(),
        /**
         * A TCP api with manage: true exposes gobgpd's unauthenticated gRPC API to every local user (any of
         * them could AddPath any prefix or delete the peers); refused unless this says it is meant.
         */
        allowTcpApi: z.boolean().default(false),
        /** Managed gobgpd runs as this user (setpriv), without capabilities; it must exist. */
        user: unixUser.default('nobody'),
        /** Where the managed gobgpd's private directory (config, API socket, log) is made; systemd's RuntimeDirectory. */
        runtimeDir: z.string().startsWith('/', 'must be an absolute path').optional(),
        binary: z.string().min(1).default('gobgpd'),
        /** Replaced by `listen`; refused with a pointer to it (see speakerSchema). */
        listenPort: z.unknown().optional(),
        /**
         * gobgpd accepts BGP connections from its configured peers on these addresses (never others), so
         * a peer that loses the session reconnects at once (T13). Unset: gobgpd only dials out.
         */
        listen: z
          .object({
            addresses: z.array(ipAddress).min(1, 'at least one address of this node'),
            port: z.number().int().min(1).max(65535).default(179),
          })
          .strict()
          .optional(),
        reconcileInterval: duration(500, 600_000).default('3s'),
        /** Managed gobgpd is stopped (routes withdrawn) when vipd's event loop has been silent this long: SIGSTOP, a blocked loop (T17). */
        hangTimeout: duration(500, 60_000).default('2s'),
        /**
         * External gobgpd: the last part of the large community `<asn>:1986621540:<ownerId>` that marks
         * vipd's paths (docs/beside-external-gobgpd.md). Default: the router id as a 32-bit number.
         */
        ownerId: z.number().int().min(0).max(0xffff_ffff).optional(),
        /** External gobgpd: a guardian process deletes vipd's marked paths if vipd dies (fate-sharing). */
        guardian: z.boolean().default(true),
      })
      .strict()
      .default({}),
    peers: z.array(peerSchema).default([]),
    /**
     * Graceful restart (RFC 4724) toward every peer: when gobgpd's session drops without a NOTIFICATION
     * (gobgpd killed or restarted), the peer keeps this node's paths for restartTime while gobgpd comes
     * back. The price: a node that dies silently keeps its paths as long (docs/directly-to-tor.md).
     */
    gracefulRestart: z
      .object({
        enabled: z.boolean().default(false),
        restartTime: duration(1000, 4_095_000).default('30s'),
      })
      .strict()
      .default({}),
  })
  .strict()
  .superRefine((s, ctx) => {
    checkPeerOptions(s, ctx);
    if (s.driver === 'none') return;
    if (s.asn === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['asn'], message: 'required when driver is gobgp' });
    if (s.routerId === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['routerId'], message: 'required when driver is gobgp' });
    if (s.gobgp.manage && s.gobgp.ownerId !== undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['gobgp', 'ownerId'], message: 'only with manage: false (a managed gobgpd holds vipd\'s paths alone)' });
    if (!s.gobgp.manage && s.gobgp.api === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['gobgp', 'api'], message: 'required when manage is false (where is the external gobgpd?)' });
    if (s.peers.length === 0) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['peers'], message: 'at least one peer is required when driver is gobgp' });
    if (s.gobgp.manage && s.gobgp.api !== undefined && !s.gobgp.api.startsWith('unix:') && !s.gobgp.allowTcpApi) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['gobgp', 'api'],
        message:
          "a TCP API for the managed gobgpd is refused: gobgpd's gRPC API is unauthenticated, so any local user could AddPath any prefix or delete the peers. " +
          'Leave api unset (a unix socket in a 0700 directory), or set allowTcpApi: true if this is really meant',
      });
    }
    s.peers.forEach((p, i) => checkPeerLocalAddress(s.routerId, p, i, ctx));
    s.peers.forEach((p, i) => {
      const own = isIP(p.address) === 6 ? 'ipv6-unicast' : 'ipv4-unicast';
      if (p.nextHopIpv6 !== undefined && own === 'ipv6-unicast') {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['peers', i, 'nextHopIpv6'], message: 'only for an IPv4 session (an IPv6 session uses its own address)' });
      }
      if (p.nextHopIpv4 !== undefined && own === 'ipv4-unicast') {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['peers', i, 'nextHopIpv4'], message: 'only for an IPv6 session (an IPv4 session uses its own address)' });
      }
    });
  });

/**
 * Peer keys that speaker.gobgp must be able to apply: unique addresses, passive only with a listening
 * gobgpd, and no session options for an external gobgpd (its peers are not vipd's to change).
 */
function checkPeerOptions(s: z.output<typeof speakerSchema>, ctx: z.RefinementCtx): void {
  const issue = (path: Array<string | number>, message: string): void => ctx.addIssue({ code: z.ZodIssueCode.custom, path, message });
  if (s.gobgp.listenPort !== undefined) {
    issue(['gobgp', 'listenPort'], 'replaced by speaker.gobgp.listen: {addresses: [<this node\'s address toward the peer>], port: 179}; without listen gobgpd dials out only (the old -1): delete the key');
  }
  const listen = s.gobgp.listen;
  if (listen) {
    const seen = new Set<string>();
    listen.addresses.forEach((a, i) => {
      if (isUnspecifiedAddress(a)) issue(['gobgp', 'listen', 'addresses', i], `${a} would accept on every address of the node; name the addresses the peers connect to`);
      if (seen.has(a)) issue(['gobgp', 'listen', 'addresses', i], `${a} is listed twice`);
      seen.add(a);
    });
  }
  const external = !s.gobgp.manage;
  if (external && listen) issue(['gobgp', 'listen'], "only for the managed gobgpd: an external gobgpd's listen addresses are its own config");
  if (external && s.gracefulRestart.enabled) issue(['gracefulRestart', 'enabled'], "only for the managed gobgpd: configure graceful restart in the external gobgpd's neighbors");
  const first = new Map<string, number>();
  s.peers.forEach((p, i) => {
    const earlier = first.get(p.address);
    if (earlier !== undefined) issue(['peers', i, 'address'], `${p.address} is listed twice (also peers[${earlier}]): one session per peer address`);
    else first.set(p.address, i);
    if (external) {
      for (const key of ['password', 'multihop', 'ttlSecurity'] as const) {
        if (p[key] !== undefined) issue(['peers', i, key], `not with gobgp.manage: false: the external gobgpd's peers are not vipd's to change; set it in that gobgpd's neighbor config`);
      }
      if (p.passive) issue(['peers', i, 'passive'], `not with gobgp.manage: false: the external gobgpd's peers are not vipd's to change; set passive-mode in that gobgpd's neighbor config`);
    } else if (p.passive) {
      const family = isIP(p.address);
      if (!listen) issue(['peers', i, 'passive'], 'a passive peer must connect to gobgpd, which listens only with speaker.gobgp.listen');
      else if (!listen.addresses.some((a) => isIP(a) === family)) issue(['peers', i, 'passive'], `${p.address} is IPv${family} and speaker.gobgp.listen has no IPv${family} address for it to connect to`);
    }
  });
}

/**
 * A session's source and this speaker's router id must not be the peer's own: a local router (FRR,
 * BIRD) refuses an OPEN whose BGP identifier equals its own, and its address usually is its router id.
 * Which addresses are really on the node is checked where the daemon starts (net/local-address.ts).
 */
function checkPeerLocalAddress(routerId: string | undefined, p: { address: string; localAddress?: string | undefined }, i: number, ctx: z.RefinementCtx): void {
  if (routerId !== undefined && routerId === p.address) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ['routerId'],
      message: `${routerId} is the address of peer ${i} (speaker.peers[${i}].address); a router refuses an OPEN carrying its own router id. Use an address of this node, e.g. the peer's localAddress`,
    });
  }
  if (p.localAddress === undefined) return;
  if (p.localAddress === p.address) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['peers', i, 'localAddress'], message: 'is the peer\'s own address: the session needs an address of its own on this node' });
  } else if (isIP(p.localAddress) !== isIP(p.address)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['peers', i, 'localAddress'], message: `${p.localAddress} is not of the family of the peer's address ${p.address}` });
  }
}

/**
 * The families each configured peer's session carries, as speaker/gobgp will configure them (managed) or
 * as the config declares them (external). See peerSchema.families.
 */
export function sessionFamilies(speaker: z.output<typeof speakerSchema>, vipAddresses: readonly string[]): SpeakerFamily[][] {
  const ownFamily = (address: string): SpeakerFamily => (isIP(address) === 6 ? 'ipv6-unicast' : 'ipv4-unicast');
  const vipFamilies = new Set(vipAddresses.map(ownFamily));
  const native = new Set(speaker.peers.map((p) => ownFamily(p.address)));
  return speaker.peers.map((p) => {
    if (p.families) return [...new Set(p.families)];
    const families = new Set([ownFamily(p.address)]);
    if (speaker.gobgp.manage) for (const f of vipFamilies) if (!native.has(f)) families.add(f);
    return [...families];
  });
}

/** A VIP that no session carries would be announced to nobody while status said otherwise: refused. */
function checkVipsCarried(cfg: { speaker: z.output<typeof speakerSchema>; vips: ReadonlyArray<{ name: string; address: string }> }, ctx: z.RefinementCtx): void {
  if (cfg.speaker.driver === 'none' || cfg.speaker.peers.length === 0) return;
  const families = sessionFamilies(cfg.speaker, cfg.vips.map((v) => v.address));
  cfg.vips.forEach((vip, vi) => {
    const family: SpeakerFamily = isIP(vip.address) === 6 ? 'ipv6-unicast' : 'ipv4-unicast';
    if (families.some((f) => f.includes(family))) return;
    const peers = cfg.speaker.peers.map((p, i) => `${p.address} (${families[i]!.join(', ')})`).join('; ');
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ['vips', vi, 'address'],
      message: `VIP "${vip.name}" (${vip.address}) is ${family} and no BGP session carries ${family}: peers ${peers}. Add ${family} to a peer's families, or a peer of that family`,
    });
  });
}

export const configSchema = z
  .object({
    node: z.object({ name: z.string().min(1).max(253) }).strict(),
    /** Where the drain state survives restarts (<stateDir>/<node.name>.state.json); systemd's StateDirectory. */
    stateDir: z
      .string()
      .min(1)
      .refine((p) => p.startsWith('/'), 'must be an absolute path')
      .default('/var/lib/vipd'),
    admin: adminSchema,
    net: z
      .object({
        interface: z.string().regex(/^[A-Za-z0-9_.:-]{1,15}$/, 'not an interface name').default('lo'),
        manageAddresses: z.boolean().default(true),
      })
      .strict()
      .default({}),
    shutdown: z.object({ grace: duration(0, 600_000).default('2s') }).strict().default({}),
    proxy: z
      .object({
        /** Worker processes sharing the listeners; health, decisions and BGP stay in the main process. */
        workers: z.number().int().min(1, 'workers must be 1..64').max(64, 'workers must be 1..64').default(1),
        /** With workers > 1: a worker that has not answered its heartbeat this long is killed and restarted; its listeners fail the gate meanwhile (T17). */
        hangTimeout: duration(500, 60_000).default('2s'),
        maxConnections: z.number().int().min(1).max(10_000_000).optional(),
        maxConnectionsPerSource: z.number().int().min(1).max(10_000_000).optional(),
      })
      .strict()
      .default({}),
    announce: z
      .object({
        /** After a health-caused withdrawal, keep the VIP withdrawn at least this long so a flapping pool cannot flap the route. */
        holdDown: duration(0, 600_000).default('3s'),
      })
      .strict()
      .default({}),
    /** Planned maintenance (`vipd drain`, the admin API, drain.file, SIGTERM): GRACEFUL_SHUTDOWN, grace, withdraw, close. */
    drain: z
      .object({
        /** How long a drained path stays advertised with GRACEFUL_SHUTDOWN before it is withdrawn. */
        grace: duration(0, 3_600_000).default('5s'),
        /** From the start of a drain: close the client connections that remain. Unset: never (they end by themselves). */
        closeAfter: duration(0, 86_400_000).optional(),
        /** While this file exists, the node is drained; checked every second and at start. */
        file: z.string().startsWith('/', 'must be an absolute path').optional(),
      })
      .strict()
      .default({}),
    hooks: z
      .object({
        /** argv run (no shell) on each VIP state change, with VIPD_VIP, VIPD_STATE, VIPD_PREVIOUS_STATE, VIPD_REASON, VIPD_NODE. */
        onChange: commandArgv.optional(),
        timeout: duration(100, 600_000).default('10s'),
      })
      .strict()
      .default({}),
    /** The kernel data path (listeners with dataPath: kernel): the nftables table vipd owns, and how it rewrites the source. */
    kernel: z
      .object({
        /** vipd owns table `inet <table>` and nothing else: it replaces it whole and removes it on a clean stop. */
        table: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,31}$/, 'a table name: a letter, then letters, digits or _ (max 32)').default('vipd'),
        /** Source address of IPv4 traffic to the backends; unset: masquerade (the address of the interface towards the backend). */
        snatIpv4: ipv4Address.optional(),
        /** Source address of IPv6 traffic to the backends; unset: masquerade. */
        snatIpv6: z.string().refine((s) => isIP(s) === 6, (s) => ({ message: `"${s}" is not an IPv6 address` })).optional(),
      })
      .strict()
      .default({}),
    speaker: speakerSchema,
    vips: z.array(vipSchema).min(1, 'at least one VIP is required'),
    pools: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'pool names use letters, digits, . _ -'), poolSchema),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    checkVipsCarried(cfg, ctx);
    // Addresses are canonical here (ipAddress, vipAddress, endpointText): plain text comparison is exact.
    const seenVipPort = new Map<string, string>();
    const seenVipAddress = new Map<string, number>();
    const seenName = new Set<string>();
    cfg.vips.forEach((vip, vi) => {
      if (seenName.has(vip.name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'name'], message: `duplicate VIP name "${vip.name}"` });
      seenName.add(vip.name);
      const firstWithAddress = seenVipAddress.get(vip.address);
      if (firstWithAddress !== undefined) {
        // Two VIPs with one address would be one prefix announced twice: list its ports under one VIP.
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'address'], message: `VIP address ${vip.address} is already vips[${firstWithAddress}] ("${cfg.vips[firstWithAddress]!.name}"); put all its listeners under one VIP` });
      } else seenVipAddress.set(vip.address, vi);
      vip.listeners.forEach((l, li) => {
        const key = endpoint(vip.address, l.port).key;
        const first = seenVipPort.get(key);
        if (first) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'listeners', li, 'port'], message: `duplicate VIP:port ${key} (already at ${first})` });
        else seenVipPort.set(key, `vips[${vi}].listeners[${li}]`);
        if (!Object.prototype.hasOwnProperty.call(cfg.pools, l.pool)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'listeners', li, 'pool'], message: `pool "${l.pool}" is not defined under pools` });
        }
      });
    });
    checkVipPolicies(cfg, ctx);
    checkKernelListeners(cfg, ctx);
    const listenerPorts = new Set(cfg.vips.flatMap((v) => v.listeners.map((l) => l.port)));
    for (const [poolName, pool] of Object.entries(cfg.pools)) {
      pool.backends.forEach(({ endpoint: b }, bi) => {
        const path = ['pools', poolName, 'backends', bi];
        if (seenVipPort.has(b.key)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, path, message: `backend ${b.key} is a VIP listener of this node; it would proxy to itself` });
        } else if ((isLoopbackAddress(b.host) || isUnspecifiedAddress(b.host)) && listenerPorts.has(b.port)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, path, message: `backend ${b.key} is a local address on a listener port; it could loop back into vipd` });
        } else if (cfg.vips.some((v) => sameAddress(v.address, b.host))) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, path, message: `backend ${b.key} is a VIP address; backends must be real servers` });
        }
      });
      const keys = pool.backends.map((b) => b.endpoint.key);
      keys.forEach((k, i) => {
        const first = keys.indexOf(k);
        if (first !== i) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['pools', poolName, 'backends', i], message: `duplicate backend ${k}: same address and port as backends[${first}] (addresses compare in canonical form)` });
      });
    }
  })
  .transform(withKernelPoolDefaults);

type RawConfig = {
  readonly speaker: z.output<typeof speakerSchema>;
  readonly vips: ReadonlyArray<z.output<typeof vipSchema>>;
  readonly pools: Readonly<Record<string, { readonly backends: readonly unknown[] }>>;
};

/** Gates against pool sizes, and attributes against the kind of sessions that would carry them. */
function checkVipPolicies(cfg: RawConfig, ctx: z.RefinementCtx): void {
  const s = cfg.speaker;
  const peers = s.driver === 'gobgp' ? s.peers : [];
  const ibgp = peers.filter((p) => p.asn === s.asn).length;
  const ebgp = peers.length - ibgp;
  cfg.vips.forEach((vip, vi) => {
    if (typeof vip.gate.minHealthy === 'number') {
      const need = vip.gate.minHealthy;
      vip.listeners.forEach((l) => {
        const size = cfg.pools[l.pool]?.backends.length;
        if (size !== undefined && need > size) {
          const path = vip.gateKey === 'gate' ? ['vips', vi, 'gate', 'minHealthy'] : ['vips', vi, 'minHealthyBackends'];
          ctx.addIssue({ code: z.ZodIssueCode.custom, path, message: `${need} is above the size of pool "${l.pool}" (${size} backends); the gate could never pass` });
        }
      });
    }
    for (const state of ['up', 'pessimized', 'draining'] as const) {
      const attrs = vip.attributes[state];
      if (!attrs) continue;
      if (attrs.localPref !== undefined && peers.length > 0 && ibgp === 0) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'attributes', state, 'localPref'], message: 'localPref is for iBGP peers only, and every peer here is eBGP (its asn differs from speaker.asn); use asPathPrepend or med' });
      }
      if (attrs.asPathPrepend > 0 && ibgp > 0) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'attributes', state, 'asPathPrepend'], message: `an iBGP peer would drop a path carrying its own AS (loop detection); use localPref toward iBGP peers` });
      }
    }
    if (vip.onFailure === 'pessimize' && vip.attributes.pessimized === undefined && ibgp > 0 && ebgp > 0) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vips', vi, 'attributes', 'pessimized'], message: 'required with onFailure: pessimize when peers are both iBGP and eBGP (no default makes the path worse to both)' });
    }
  });
}

/**
 * A pool that serves a kernel listener has no retry and no first-byte wait (the kernel can do neither,
 * and writing them is refused), so when the operator wrote neither they default to off and 0s rather
 * than to the proxy's tls and 10s.
 */
function withKernelPoolDefaults<C extends { readonly vips: ReadonlyArray<z.output<typeof vipSchema>>; readonly pools: Record<string, z.output<typeof poolSchema>> }>(cfg: C): C {
  const kernelPools = new Set(cfg.vips.flatMap((v) => v.listeners.filter((l) => l.dataPath === 'kernel').map((l) => l.pool)));
  if (kernelPools.size === 0) return cfg;
  const pools = { ...cfg.pools };
  for (const name of kernelPools) {
    const pool = pools[name];
    const explicit = pool && explicitPoolKeys.get(pool);
    if (!pool || !explicit) continue;
    pools[name] = {
      ...pool,
      retryBeforeReply: explicit.retryBeforeReply ? pool.retryBeforeReply : 'off',
      timeouts: { ...pool.timeouts, firstByte: explicit.firstByte ? pool.timeouts.firstByte : 0 },
    };
  }
  return { ...cfg, pools };
}

type KernelCheckConfig = {
  readonly proxy: { readonly maxConnectionsPerSource?: number | undefined };
  readonly vips: ReadonlyArray<z.output<typeof vipSchema>>;
  readonly pools: Readonly<Record<string, z.output<typeof poolSchema>>>;
};

/**
 * What a kernel listener cannot do, refused at load with the reason: its packets are rewritten by
 * nftables and never reach vipd, so nothing that needs to see a connection (its load, its first bytes,
 * its failure before a reply, a wait in a queue, a count per source) can apply. docs/kernel-data-path.md.
 */
function checkKernelListeners(cfg: KernelCheckConfig, ctx: z.RefinementCtx): void {
  const refuse = (path: Array<string | number>, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path, message });
  const checkedPools = new Set<string>();
  cfg.vips.forEach((vip, vi) => {
    vip.listeners.forEach((l, li) => {
      if (l.dataPath !== 'kernel') return;
      const at = `kernel listener vips[${vi}].listeners[${li}] (${vip.name}:${l.port})`;
      if (l.maxConnections !== undefined) {
        refuse(['vips', vi, 'listeners', li, 'maxConnections'], `${at}: a connection cap needs vipd to see each connection, and the kernel data path never does; remove it, or use dataPath: proxy`);
      }
      if (cfg.proxy.maxConnectionsPerSource !== undefined) {
        refuse(['proxy', 'maxConnectionsPerSource'], `per-source caps are counted by the proxy, and the packets of ${at} never reach it; remove the cap, or use dataPath: proxy for every listener`);
      }
      const pool = cfg.pools[l.pool];
      if (pool === undefined || checkedPools.has(l.pool)) return;
      checkedPools.add(l.pool);
      const p = (...rest: Array<string | number>) => ['pools', l.pool, ...rest];
      const users = `pool "${l.pool}" serves ${at}`;
      if (pool.balance === 'least-conn' || pool.balance === 'random-two') {
        refuse(p('balance'), `${users}: ${pool.balance} picks on each backend's open connections, and nftables picks from a map without them; use round-robin, random or source-hash`);
      }
      const explicit = explicitPoolKeys.get(pool);
      if (explicit?.retryBeforeReply && pool.retryBeforeReply !== 'off') {
        refuse(p('retryBeforeReply'), `${users}: the kernel cannot retry: the client's SYN is rewritten to one backend and, if that backend fails, the client sees it; remove the key or set it to off`);
      }
      if (pool.queue.size > 0) refuse(p('queue', 'size'), `${users}: there is no queue in the kernel data path (a connection is rewritten at once or not at all); remove it or set size 0`);
      if (explicit?.firstByte && pool.timeouts.firstByte > 0) {
        refuse(p('timeouts', 'firstByte'), `${users}: the kernel data path connects the client to its backend before any byte, so it cannot wait for the first one; remove the key or set it to 0s`);
      }
      for (const key of ['idle', 'maxConnectionAge'] as const) {
        if (pool.timeouts[key] > 0) refuse(p('timeouts', key), `${users}: vipd does not see the connections of the kernel data path, so it cannot time them out; remove the key or set it to 0s`);
      }
      if (pool.slowStart > 0) refuse(p('slowStart'), `${users}: slow start ramps weights per pick, and the kernel's map holds fixed shares; remove it or set it to 0s`);
      if (pool.maxConnectionsPerBackend !== undefined) refuse(p('maxConnectionsPerBackend'), `${users}: the kernel data path cannot cap connections per backend; remove it`);
      pool.backends.forEach((b, bi) => {
        if (b.maxConnections !== undefined) refuse(p('backends', bi, 'maxConnections'), `${users}: the kernel data path cannot cap connections per backend; remove it`);
        if (isLoopbackAddress(b.endpoint.host)) {
          refuse(p('backends', bi), `${users}: backend ${b.endpoint.key} is a loopback address; DNAT to 127.0.0.0/8 needs net.ipv4.conf.*.route_localnet=1 (which also exposes every service bound to loopback), and ::1 cannot be a DNAT target at all. Use an address of the node's interface`);
        } else if (isIP(b.endpoint.host) !== isIP(vip.address)) {
          refuse(p('backends', bi), `${users}: backend ${b.endpoint.key} is IPv${isIP(b.endpoint.host)} and the VIP ${vip.address} is IPv${isIP(vip.address)}; DNAT cannot change the address family (the proxy can)`);
        }
      });
    });
  });
}

export type Config = z.output<typeof configSchema>;
export type VipConfig = Config['vips'][number];
export type PoolConfig = Config['pools'][string];
export type PeerConfig = Config['speaker']['peers'][number];
export type BackendConfig = PoolConfig['backends'][number];
