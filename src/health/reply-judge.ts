import { MAX_REPLY_BYTES } from './health';

/**
 * Verdicts on an http reply's body: etcd's /health, a substring, or values at JSON paths. Pure, so
 * tests drive them from case tables; the probe only collects at most MAX_REPLY_BYTES and calls one.
 */
export interface ReplyVerdict {
  readonly ok: boolean;
  readonly detail: string;
}

export type ReplyJudge = (status: number, body: Buffer) => ReplyVerdict;

const DETAIL_VALUE_CHARS = 60;

export function tooLarge(bytes: number | string): string {
  return `reply larger than ${MAX_REPLY_BYTES} bytes (${bytes}); not read further`;
}

/** etcd's /health: healthy iff 200 and `"health": "true"` (a string, as every etcd since 3.3 writes it). */
export function judgeEtcdHealth(status: number, body: Buffer): ReplyVerdict {
  const parsed = parseJson(body);
  if (!parsed.ok) return { ok: false, detail: `status ${status}, ${parsed.detail}` };
  const reply = parsed.value;
  if (reply === null || typeof reply !== 'object' || !('health' in reply)) return { ok: false, detail: `status ${status}, no "health" in the reply` };
  const { health, reason } = reply as { health: unknown; reason?: unknown };
  const why = typeof reason === 'string' && reason !== '' ? ` (${short(reason)})` : '';
  const ok = status === 200 && health === 'true';
  return { ok, detail: `${ok ? String(status) : `status ${status}`} health=${short(JSON.stringify(health))}${why}` };
}

/** The status must be expected and the body must contain `needle`. */
export function bodyContains(expectStatus: readonly number[], needle: string): ReplyJudge {
  const wanted = Buffer.from(needle, 'utf8');
  return (status, body) => {
    if (!expectStatus.includes(status)) return { ok: false, detail: `status ${status}` };
    return body.includes(wanted) ? { ok: true, detail: `${status}, body has ${short(JSON.stringify(needle))}` } : { ok: false, detail: `status ${status}, body lacks ${short(JSON.stringify(needle))} (${body.length} bytes read)` };
  };
}

/** The status must be expected and the JSON body must hold each value at its dotted path. */
export function jsonMatches(expectStatus: readonly number[], expected: Readonly<Record<string, unknown>>): ReplyJudge {
  const wanted = Object.entries(expected).map(([path, value]) => ({ path, segments: path.split('.'), json: JSON.stringify(value) }));
  return (status, body) => {
    if (!expectStatus.includes(status)) return { ok: false, detail: `status ${status}` };
    const parsed = parseJson(body);
    if (!parsed.ok) return { ok: false, detail: `status ${status}, ${parsed.detail}` };
    for (const { path, segments, json } of wanted) {
      const found = valueAt(parsed.value, segments);
      if (found === undefined) return { ok: false, detail: `status ${status}, ${path} missing (want ${short(json)})` };
      const got = JSON.stringify(found);
      if (got !== json) return { ok: false, detail: `status ${status}, ${path}=${short(got)} (want ${short(json)})` };
    }
    return { ok: true, detail: `${status}, ${wanted.map((w) => `${w.path}=${short(w.json)}`).join(' ')}` };
  };
}

function valueAt(value: unknown, segments: readonly string[]): unknown {
  let current = value;
  for (const segment of segments) {
    if (current === null || typeof current !== 'object') return undefined;
    if (Array.isArray(current)) {
      if (!/^\d+$/.test(segment)) return undefined;
      current = current[Number(segment)];
    } else {
      if (!Object.prototype.hasOwnProperty.call(current, segment)) return undefined;
      current = (current as Record<string, unknown>)[segment];
    }
  }
  return current;
}

function parseJson(body: Buffer): { ok: true; value: unknown } | { ok: false; detail: string } {
  const text = body.toString('utf8');
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    const start = text.replace(/\s+/g, ' ').trim();
    return { ok: false, detail: `reply is not JSON (${body.length} bytes${start === '' ? '' : `: ${short(JSON.stringify(start))}`})` };
  }
}

function short(text: string): string {
  return text.length > DETAIL_VALUE_CHARS ? `${text.slice(0, DETAIL_VALUE_CHARS)}…` : text;
}
