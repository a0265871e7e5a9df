import type { CheckSpec, Probe } from './health';
import { ExecProbe } from './probe-exec';
import { GrpcProbe } from './probe-grpc';
import { HttpProbe } from './probe-http';
import { TcpProbe } from './probe-tcp';
import { bodyContains, judgeEtcdHealth, jsonMatches, type ReplyJudge } from './reply-judge';

type ProbeFactory = (spec: CheckSpec) => Probe;

/**
 * The one place that maps a check kind to its probe; typed over every kind, so a kind without a
 * probe is a compile error. Throws VipdError VIPD_ERR_CONFIG_IO when a TLS file cannot be read or a
 * key does not match its certificate, so a bad file fails at build time rather than as probe failures.
 */
const PROBES: { readonly [K in CheckSpec['kind']]: ProbeFactory } = {
  tcp: (spec) => new TcpProbe({ send: spec.send, expect: spec.expect }),
  http: (spec) => httpProbe(spec, false),
  https: (spec) => httpProbe(spec, true),
  etcd: (spec) =>
    new HttpProbe({
      ...tlsOptions(spec),
      kind: 'etcd',
      tls: spec.tls === true,
      path: '/health',
      expectStatus: [200],
      judge: judgeEtcdHealth,
    }),
  grpc: (spec) => new GrpcProbe({ ...tlsOptions(spec), tls: spec.tls === true, intervalMs: spec.intervalMs, ...(spec.service !== undefined ? { service: spec.service } : {}) }),
  exec: (spec) => {
    if (spec.command === undefined || spec.command.length === 0) throw new Error('exec check without a command');
    return new ExecProbe({ command: spec.command });
  },
};

export function createProbe(spec: CheckSpec): Probe {
  const factory = PROBES[spec.kind] as ProbeFactory | undefined;
  if (factory === undefined) throw new Error(`unsupported health check kind ${String(spec.kind)}`);
  return factory(spec);
}

function httpProbe(spec: CheckSpec, tls: boolean): HttpProbe {
  return new HttpProbe({
    ...tlsOptions(spec),
    tls,
    path: spec.path,
    expectStatus: spec.expectStatus,
    ...(spec.host !== undefined ? { host: spec.host } : {}),
    ...bodyJudge(spec),
  });
}

function bodyJudge(spec: CheckSpec): { judge?: ReplyJudge } {
  const expectStatus = spec.expectStatus.length > 0 ? spec.expectStatus : [200];
  if (spec.expectJson !== undefined) return { judge: jsonMatches(expectStatus, spec.expectJson) };
  if (spec.expectBody !== undefined) return { judge: bodyContains(expectStatus, spec.expectBody) };
  return {};
}

function tlsOptions(spec: CheckSpec) {
  return {
    insecureSkipVerify: spec.insecureSkipVerify,
    ...(spec.caFile !== undefined ? { caFile: spec.caFile } : {}),
    ...(spec.certFile !== undefined ? { certFile: spec.certFile } : {}),
    ...(spec.keyFile !== undefined ? { keyFile: spec.keyFile } : {}),
    ...(spec.serverName !== undefined ? { serverName: spec.serverName } : {}),
  };
}
