import { parseDuration } from '../lib/duration';
import { quoted } from './admin-guard';
import { AdminInputError, type DrainRequest } from './control';

/** The longest drain grace accepted (config, CLI and admin API alike). */
export const MAX_DRAIN_GRACE_MS = 3_600_000;

/** A grace as written by a person ("10s", "500ms", "0s"); the message names what is wrong. */
export function parseGrace(text: string): { graceMs: number } | { error: string } {
  if (text.trim().startsWith('-')) return { error: `grace ${text} is below 0 (0s..1h)` };
  const ms = parseDuration(text);
  if (ms === undefined) return { error: `grace "${text}" is not a duration (write e.g. 5s, 500ms, 0s)` };
  if (ms < 0 || ms > MAX_DRAIN_GRACE_MS) return { error: `grace ${text} is out of range (0s..1h)` };
  return { graceMs: ms };
}

/**
 * The JSON body of POST /drain and /undrain: `{}` (the node), `{"vip": NAME}`, and for a drain
 * `"grace": "10s"`. Anything else is refused with a 400 before anything changes.
 */
export function parseDrainBody(body: Record<string, unknown>, withGrace: boolean): DrainRequest {
  const allowed = withGrace ? ['vip', 'grace'] : ['vip'];
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  const shape = withGrace ? '{"vip"?: NAME, "grace"?: "5s"}' : '{"vip"?: NAME}';
  if (unknown.length) throw new AdminInputError(400, `unknown field(s) ${unknown.map((k) => quoted(k, 32)).join(', ')}; expected ${shape}`);
  const { vip, grace } = body;
  if (vip !== undefined && (typeof vip !== 'string' || vip === '')) throw new AdminInputError(400, 'field "vip" must be a VIP name (a non-empty string)');
  let graceMs: number | undefined;
  if (grace !== undefined) {
    if (typeof grace !== 'string') throw new AdminInputError(400, 'field "grace" must be a duration string such as "5s"');
    const parsed = parseGrace(grace);
    if ('error' in parsed) throw new AdminInputError(400, parsed.error);
    graceMs = parsed.graceMs;
  }
  return { ...(vip !== undefined ? { vip } : {}), ...(graceMs !== undefined ? { graceMs } : {}) };
}
