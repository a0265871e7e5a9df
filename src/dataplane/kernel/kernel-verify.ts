import { canonicalAddress } from '../../net/address';
import { CHAINS, listenerRules, type KernelTableState, type NftCommand } from './kernel-ruleset';

/**
 * The read-back of the kernel data path: `nft -j list table inet <table>` compared with the state that
 * was written. A listener counts as in place only when every one of its rules is there, in the chain it
 * belongs to, with this write's generation in its comment and the same expressions (addresses compared
 * in canonical form, since nft prints them its own way). Pure: tested on recorded nft output.
 */

export interface CounterValue {
  readonly packets: number;
  readonly bytes: number;
}

export interface Verification {
  /** Listener ids whose rules are all in place. */
  readonly verified: ReadonlySet<string>;
  /** What is missing or different, one line each (empty when every listener is verified). */
  readonly problems: readonly string[];
  /** Named counters of the table, by name. */
  readonly counters: ReadonlyMap<string, CounterValue>;
}

interface ListedRule {
  readonly chain: string;
  readonly comment?: string;
  readonly expr: unknown;
}

/** Every string that is an IP address in canonical form; everything else as it is. */
function canonical(value: unknown): unknown {
  if (typeof value === 'string') return canonicalAddress(value) ?? value;
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, canonical(v)]));
  }
  return value;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

/** Parses nft's JSON output into its objects; throws on anything that is not nft's shape. */
export function parseNftList(text: string): NftCommand[] {
  const parsed = JSON.parse(text) as { nftables?: unknown };
  if (!parsed || !Array.isArray(parsed.nftables)) throw new Error('nft -j output has no "nftables" array');
  return parsed.nftables as NftCommand[];
}

export function verifyTable(listed: readonly NftCommand[] | undefined, state: KernelTableState): Verification {
  const none = (problems: string[]): Verification => ({ verified: new Set(), problems, counters: new Map() });
  if (listed === undefined) return none([`table inet ${state.table} is absent`]);
  const counters = new Map<string, CounterValue>();
  const chains = new Map<string, Record<string, unknown>>();
  const rules: ListedRule[] = [];
  let tableSeen = false;
  for (const object of listed) {
    if ('table' in object) {
      const t = object.table as { family?: string; name?: string };
      if (t.family === 'inet' && t.name === state.table) tableSeen = true;
    } else if ('counter' in object) {
      const c = object.counter as { name: string; packets?: number; bytes?: number; table?: string };
      if (c.table === state.table) counters.set(c.name, { packets: c.packets ?? 0, bytes: c.bytes ?? 0 });
    } else if ('chain' in object) {
      const c = object.chain as Record<string, unknown>;
      if (c.table === state.table) chains.set(String(c.name), c);
    } else if ('rule' in object) {
      const r = object.rule as { table?: string; chain: string; comment?: string; expr: unknown };
      if (r.table === state.table) rules.push({ chain: r.chain, ...(r.comment !== undefined ? { comment: r.comment } : {}), expr: r.expr });
    }
  }
  if (!tableSeen) return none([`table inet ${state.table} is absent`]);
  const problems: string[] = [];
  for (const want of CHAINS) {
    const got = chains.get(want.name);
    if (!got) problems.push(`chain ${want.name} is missing`);
    else if (got.type !== want.type || got.hook !== want.hook || got.prio !== want.prio) {
      problems.push(`chain ${want.name} is ${String(got.type)}/${String(got.hook)}/${String(got.prio)}, not ${want.type}/${want.hook}/${want.prio}`);
    }
  }
  // Without its chains no rule of the table can act, so no listener is in place.
  if (problems.length > 0) return { verified: new Set(), problems, counters };

  const verified = new Set<string>();
  for (const l of state.listeners) {
    const missing: string[] = [];
    const wanted = listenerRules(state, l);
    for (const want of wanted) {
      const found = rules.filter((r) => r.chain === want.chain && r.comment === want.comment);
      if (found.length !== 1) missing.push(`${want.chain}: ${found.length === 0 ? 'no' : `${found.length}`} rule "${want.comment}"`);
      else if (!same(found[0]!.expr, want.expr)) missing.push(`${want.chain}: rule "${want.comment}" differs from what was written`);
    }
    const counterNames = wanted.flatMap((r) => r.expr.map((e) => e.counter).filter((c): c is string => typeof c === 'string'));
    for (const name of counterNames) if (!counters.has(name)) missing.push(`counter "${name}" is missing`);
    if (missing.length === 0) verified.add(l.id);
    else problems.push(...missing.map((m) => `${l.id}: ${m}`));
  }
  return { verified, problems, counters };
}
