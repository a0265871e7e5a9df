/** Where a probe was when it failed; it prefixes the detail so operators see which step broke. */
export type ProbePhase = 'connect' | 'tls' | 'headers' | 'body';

const MAX_MESSAGE_CHARS = 80;

/**
 * Short, stable detail for a failed probe step: "connect ECONNREFUSED", "tls CERT_HAS_EXPIRED".
 * Platform codes are stable across Node versions where messages are not, so the code wins.
 */
export function describeFailure(phase: ProbePhase, err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code !== '') return `${phase} ${code}${TLS_ALERT_HINTS[code] ?? ''}`;
  const message = err instanceof Error ? err.message : String(err);
  const oneLine = message.replace(/\s+/g, ' ').trim();
  return `${phase} ${oneLine.length > MAX_MESSAGE_CHARS ? `${oneLine.slice(0, MAX_MESSAGE_CHARS)}…` : oneLine}`;
}

/**
 * The alerts a server sends when it wants a client certificate (etcd --client-cert-auth): Go answers
 * bad_certificate, OpenSSL certificate_required. The code alone does not tell an operator what to fix.
 */
const TLS_ALERT_HINTS: Readonly<Record<string, string>> = {
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: ' (the server requires a client certificate: set tls.certFile and tls.keyFile)',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: ' (the server refused the client certificate, or requires one: check tls.certFile and tls.keyFile)',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: ' (the server does not trust the client certificate\'s CA)',
};
