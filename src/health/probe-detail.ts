/** Where a probe was when it failed; it prefixes the detail so operators see which step broke. */
export type ProbePhase = 'connect' | 'tls' | 'headers' | 'body';

const MAX_MESSAGE_CHARS = 80;

/**
 * Short, stable detail for a failed probe step: "connect ECONNREFUSED", "tls CERT_HAS_EXPIRED".
 * Platform codes are stable across Node versions where messages are not, so the code wins.
 */
export function describeFailure(phase: ProbePhase, err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code !== '') return `${phase} ${code}`;
  const message = err instanceof Error ? err.message : String(err);
  const oneLine = message.replace(/\s+/g, ' ').trim();
  return `${phase} ${oneLine.length > MAX_MESSAGE_CHARS ? `${oneLine.slice(0, MAX_MESSAGE_CHARS)}…` : oneLine}`;
}
