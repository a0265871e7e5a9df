import { isIP } from 'node:net';
import type { Endpoint } from '../../net/endpoint';
import { buildMaglevTable } from '../../proxy/picker-source-hash';

/**
 * The kernel data path's nftables table as a pure function of the pool state: what vipd writes with
 * `nft -j -f -` (libnftables' JSON). Nothing here runs a program or reads the clock, so the JSON for a
 * given state is tested as data (test/unit/kernel-ruleset.test.ts).
 *
 * The table (family inet, so one table serves IPv4 and IPv6 VIPs):
 * - chain prerouting (nat, dstnat): per listener, VIP:port is rewritten to a backend taken from an
 *   inline map keyed by `numgen inc` (round-robin), `numgen random` (random) or `jhash` of the
 *   source address (source-hash). The map's slots hold the usable backends in proportion to their
 *   weights. A listener with no usable backend keeps a rule without a rewrite, so its packets reach the
 *   node's own stack, where nothing listens on VIP:port, and the client gets a reset.
 * - chain output (nat, dstnat): the same rewrite for clients on the node itself.
 * - chain postrouting (nat, srcnat): per listener and backend, the rewritten connection's source is
 *   masqueraded (or set to kernel.snatIpv4/6), so the backend's replies come back through this node.
 *   NAT chains see only the first packet of a connection, so its named counter counts connections.
 * - chain forward (filter): per listener and backend, a named counter of every packet and byte of its
 *   connections, both directions.
 * Every rule carries a comment naming the listener and the write's generation, which is how the
 * read-back (kernel-verify.ts) knows the rules it finds are the ones just written.
 */

export type KernelBalance = 'round-robin' | 'random' | 'source-hash';

export interface KernelBackend {
  readonly endpoint: Endpoint;
  /** 1..1000, as configured. */
  readonly weight: number;
}

export interface KernelListenerState {
  /** "control-plane:2379". */
  readonly id: string;
  /** Canonical IPv4 or IPv6 address. */
  readonly vipAddress: string;
  readonly port: number;
  readonly pool: string;
  readonly balance: KernelBalance;
  /** Every backend of the pool, in configured order: each gets its counters whether usable or not. */
  readonly backends: readonly KernelBackend[];
  /** Keys of the backends that may take new connections now (healthy and not drained). */
  readonly usable: ReadonlySet<string>;
  /**
   * Closing (a clean stop or a reload that removed it): no rewrite of new connections any more, while
   * the chains and source rewrites stay so that its established connections keep being translated.
   */
  readonly closing?: boolean;
}

export interface KernelTableState {
  /** Table name (family inet): config kernel.table. */
  readonly table: string;
  /** Written into every rule's comment; a new value per write. */
  readonly generation: string;
  readonly snatIpv4?: string;
  readonly snatIpv6?: string;
  readonly listeners: readonly KernelListenerState[];
}

/**
 * Slots of a round-robin or random map: a few hundred at most, so a write stays small and quick.
 * Weights are divided by their greatest common divisor first, and scaled down only beyond this.
 */
export const MAX_WEIGHTED_SLOTS = 512;
/**
 * Slots of a source-hash map (prime: Maglev's permutation needs it). About 1021 / N per backend, so a
 * backend that leaves moves its own clients and, by Maglev's construction, only a few others.
 */
export const SOURCE_HASH_SLOTS = 1021;
/** jhash seed, fixed: every balancer behind the VIP must send one client to the same backend. */
export const SOURCE_HASH_SEED = 0x76697064;

export type NftCommand = Record<string, unknown>;

export type Family = 'ip' | 'ip6';

export function familyOf(address: string): Family {
  return isIP(address) === 6 ? 'ip6' : 'ip';
}

/** The comment of a listener's rewrite rule (prerouting and output). */
export function dnatComment(listenerId: string, generation: string): string {
  return `vipd dnat ${listenerId} ${generation}`;
}

/** The comment of a listener's source rewrite for one backend. */
export function snatComment(listenerId: string, backendKey: string, generation: string): string {
  return `vipd snat ${listenerId} ${backendKey} ${generation}`;
}

/** Named counter of a listener's new connections to one backend (counted in postrouting). */
export function connectionCounterName(listenerId: string, backendKey: string): string {
  return `conn/${listenerId}/${backendKey}`;
}

/** Named counter of a listener's packets and bytes to and from one backend (counted in forward). */
export function trafficCounterName(listenerId: string, backendKey: string): string {
  return `traffic/${listenerId}/${backendKey}`;
}

export const CHAINS = [
  { name: 'prerouting', type: 'nat', hook: 'prerouting', prio: -100 },
  { name: 'output', type: 'nat', hook: 'output', prio: -100 },
  { name: 'postrouting', type: 'nat', hook: 'postrouting', prio: 100 },
  { name: 'forward', type: 'filter', hook: 'forward', prio: 0 },
] as const;

/**
 * The map of one listener: slot index → backend. Empty when nothing is usable (or the listener closes).
 * - round-robin and random: the usable backends, each weight/gcd times, in smooth weighted
 *   round-robin order (weights 5,1,1 give a a b a c a a), so `numgen inc` spreads as the proxy does.
 * - source-hash: a Maglev table of SOURCE_HASH_SLOTS over the usable backends in key order, so every
 *   balancer with the same config builds the same map whatever order its config lists them in.
 */
export function listenerSlots(listener: KernelListenerState): Endpoint[] {
  if (listener.closing) return [];
  const usable = listener.backends.filter((b) => listener.usable.has(b.endpoint.key));
  if (usable.length === 0) return [];
  if (listener.balance === 'source-hash') {
    const ordered = [...usable].sort((x, y) => (x.endpoint.key < y.endpoint.key ? -1 : x.endpoint.key > y.endpoint.key ? 1 : 0));
    const table = buildMaglevTable(
      ordered.map((b) => b.endpoint.key),
      ordered.map((b) => b.weight),
      SOURCE_HASH_SLOTS,
    );
    return Array.from(table, (index) => ordered[index]!.endpoint);
  }
  return weightedSlots(usable);
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** Smooth weighted round-robin order over whole slots. */
export function weightedSlots(backends: readonly KernelBackend[]): Endpoint[] {
  const divisor = backends.reduce((g, b) => gcd(g, b.weight), 0);
  let shares = backends.map((b) => b.weight / divisor);
  const total = shares.reduce((s, w) => s + w, 0);
  if (total > MAX_WEIGHTED_SLOTS) shares = shares.map((w) => Math.max(1, Math.round((w * MAX_WEIGHTED_SLOTS) / total)));
  const slots: Endpoint[] = [];
  const credit = shares.map(() => 0);
  const sum = shares.reduce((s, w) => s + w, 0);
  for (let n = 0; n < sum; n++) {
    let best = 0;
    for (let i = 0; i < shares.length; i++) {
      credit[i]! += shares[i]!;
      if (credit[i]! > credit[best]!) best = i;
    }
    credit[best]! -= sum;
    slots.push(backends[best]!.endpoint);
  }
  return slots;
}

const tcp = { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } };

function payloadMatch(protocol: string, field: string, right: unknown): NftCommand {
  return { match: { op: '==', left: { payload: { protocol, field } }, right } };
}

function ctMatch(key: string, dir: 'original' | 'reply', right: unknown): NftCommand {
  return { match: { op: '==', left: { ct: { key, dir } }, right } };
}

/** The rewrite of one listener: VIP:port → the map's backend, or no rewrite when the map is empty. */
export function dnatExpression(listener: KernelListenerState, slots: readonly Endpoint[]): NftCommand[] {
  const family = familyOf(listener.vipAddress);
  const head = [payloadMatch(family, 'daddr', listener.vipAddress), payloadMatch('tcp', 'dport', listener.port)];
  if (slots.length === 0) return head;
  const key =
    listener.balance === 'source-hash'
      ? { jhash: { mod: slots.length, seed: SOURCE_HASH_SEED, expr: { payload: { protocol: family, field: 'saddr' } } } }
      : { numgen: { mode: listener.balance === 'random' ? 'random' : 'inc', mod: slots.length, offset: 0 } };
  const data = { set: slots.map((b, slot) => [slot, { concat: [b.host, b.port] }]) };
  return [...head, { dnat: { family, addr: { map: { key, data } } } }];
}

/**
 * The whole transaction: the table is created (if absent, so the delete cannot fail), deleted and
 * built again, all in one `nft -j -f -` run, which the kernel commits atomically: at no instant is
 * there neither the old table nor the new one.
 */
export function buildTableCommands(state: KernelTableState): NftCommand[] {
  const table = { family: 'inet', name: state.table };
  const at = { family: 'inet', table: state.table };
  const commands: NftCommand[] = [{ add: { table } }, { delete: { table } }, { add: { table } }];
  for (const c of CHAINS) commands.push({ add: { chain: { ...at, name: c.name, type: c.type, hook: c.hook, prio: c.prio, policy: 'accept' } } });
  for (const l of state.listeners) {
    for (const b of l.backends) {
      commands.push({ add: { counter: { ...at, name: connectionCounterName(l.id, b.endpoint.key) } } });
      commands.push({ add: { counter: { ...at, name: trafficCounterName(l.id, b.endpoint.key) } } });
    }
  }
  for (const l of state.listeners) {
    for (const rule of listenerRules(state, l)) commands.push({ add: { rule: { ...at, ...rule } } });
  }
  return commands;
}

export interface KernelRule {
  readonly chain: string;
  readonly comment: string;
  readonly expr: readonly NftCommand[];
}

/** Every rule of one listener, in the order written (the read-back checks each of them). */
export function listenerRules(state: KernelTableState, l: KernelListenerState): KernelRule[] {
  const family = familyOf(l.vipAddress);
  const dnat = dnatExpression(l, listenerSlots(l));
  const comment = dnatComment(l.id, state.generation);
  const rules: KernelRule[] = [
    { chain: 'prerouting', comment, expr: dnat },
    { chain: 'output', comment, expr: dnat },
  ];
  const snatAddress = family === 'ip' ? state.snatIpv4 : state.snatIpv6;
  const rewrite = snatAddress !== undefined ? { snat: { family, addr: snatAddress } } : { masquerade: null };
  for (const b of l.backends) {
    const flow = [
      tcp,
      ctMatch(`${family} daddr`, 'original', l.vipAddress),
      ctMatch('proto-dst', 'original', l.port),
      ctMatch(`${family} saddr`, 'reply', b.endpoint.host),
      ctMatch('proto-src', 'reply', b.endpoint.port),
    ];
    const key = b.endpoint.key;
    rules.push({ chain: 'postrouting', comment: snatComment(l.id, key, state.generation), expr: [...flow, { counter: connectionCounterName(l.id, key) }, rewrite] });
    rules.push({ chain: 'forward', comment: `vipd count ${l.id} ${key} ${state.generation}`, expr: [...flow, { counter: trafficCounterName(l.id, key) }] });
  }
  return rules;
}

/** The transaction that removes the table (a clean stop); `add` first so that an absent table is no error. */
export function removeTableCommands(tableName: string): NftCommand[] {
  const table = { family: 'inet', name: tableName };
  return [{ add: { table } }, { delete: { table } }];
}
