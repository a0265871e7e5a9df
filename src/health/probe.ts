import type { CheckSpec, Probe } from './health';
import { HttpProbe } from './probe-http';
import { TcpProbe } from './probe-tcp';

/**
 * The one place that maps a check kind to its probe. Throws VipdError VIPD_ERR_CONFIG_IO when an
 * https caFile cannot be read, so a bad file fails at build time rather than as probe failures.
 */
export function createProbe(spec: CheckSpec): Probe {
  switch (spec.kind) {
    case 'tcp':
      return new TcpProbe();
    case 'http':
    case 'https':
      return new HttpProbe({
        tls: spec.kind === 'https',
        path: spec.path,
        expectStatus: spec.expectStatus,
        insecureSkipVerify: spec.insecureSkipVerify,
        host: spec.host,
        caFile: spec.caFile,
        serverName: spec.serverName,
      });
    default: {
      const unsupported: never = spec.kind;
      throw new Error(`unsupported health check kind ${String(unsupported)}`);
    }
  }
}
