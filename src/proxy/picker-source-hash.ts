import type { Endpoint } from '../net/endpoint';
import { PickerCandidates } from './picker-candidates';
import { hash32, hashClientAddress } from './picker-hash';
import type { Picker, PickRequest, PoolSpec } from './proxy';

/**
 * Prime, so that every backend's skip is coprime with it and its preference list visits every slot.
 * Maglev keeps disruption small while the table has well over 100 slots per backend, which holds up
 * to ~650 backends per pool.
 */
export const MAGLEV_TABLE_SIZE = 65537;

/** Slots walked past a refused backend before falling back to a scan of the candidates. */
const PROBE_SLOTS = 32;

// Fixed forever: changing them would move every client the day nodes run different vipd versions.
const OFFSET_SEED = 0x6d61676c;
const SKIP_SEED = 0x65763031;

/**
 * Source-IP consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016). The table is
 * built once per set of healthy backends; a pick is one hash of the client address and one array read.
 * Adding or removing a backend moves about its own share of clients and few others.
 *
 * Weights are honoured by how often a backend takes a turn while the table fills. Slow start is not
 * applied: the table would have to be rebuilt as weights moved, and each rebuild would remap clients
 * again and again during the ramp, which is what a client pinned by its address is meant to avoid.
 *
 * When the client's backend is refused by `skip` (already tried, ejected, drained, full), the walk
 * goes on to the following slots, so each client still falls back to the same backend every time and
 * the refused backend's clients spread over the others by their shares.
 */
export class SourceHashPicker implements Picker {
  private readonly candidates: PickerCandidates;
  /**
   * Candidates in key order: vipd nodes behind the same anycast VIP must build the same table, so that
   * a client's connections reach the same backend whichever node ECMP hands each of them to, even if
   * the nodes' configs list the backends in different orders.
   */
  private ordered: Endpoint[] = [];
  private table: Uint16Array | Uint32Array = new Uint16Array(0);
  private membership = -1;

  constructor(pool: PoolSpec) {
    this.candidates = new PickerCandidates(pool);
  }

  pick(request: PickRequest): Endpoint | undefined {
    const candidates = this.candidates;
    candidates.refresh(request.snapshot);
    if (candidates.membership !== this.membership) this.rebuild();
    const ordered = this.ordered;
    const count = ordered.length;
    if (count === 0) return undefined;
    const skip = request.skip;
    const hash = hashClientAddress(request.clientAddress);
    const table = this.table;
    let slot = hash % MAGLEV_TABLE_SIZE;
    for (let probe = 0; probe < PROBE_SLOTS; probe++) {
      const candidate = ordered[table[slot]!]!;
      if (!skip(candidate.key)) return candidate;
      slot = slot + 1 === MAGLEV_TABLE_SIZE ? 0 : slot + 1;
    }
    // Every nearby slot belongs to refused backends: a bounded, still deterministic, scan of the rest.
    const start = hash % count;
    for (let step = 0; step < count; step++) {
      const candidate = ordered[(start + step) % count]!;
      if (!skip(candidate.key)) return candidate;
    }
    return undefined;
  }

  private rebuild(): void {
    const { endpoints, weights } = this.candidates;
    const order = endpoints.map((_, index) => index).sort((x, y) => compareKeys(endpoints[x]!.key, endpoints[y]!.key));
    this.ordered = order.map((index) => endpoints[index]!);
    this.table = buildMaglevTable(
      this.ordered.map((endpoint) => endpoint.key),
      order.map((index) => weights[index]!),
    );
    this.membership = this.candidates.membership;
  }
}

function compareKeys(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Fills MAGLEV_TABLE_SIZE slots with indexes into `keys`. Each backend walks its own permutation of
 * the slots (offset and skip from two hashes of its key) and claims the first free one when its turn
 * comes. Turns go in order of (turns taken + 1) / weight, ties to the lower index: a backend of weight
 * 3 takes three turns for each one of a backend of weight 1, and the order in which any two backends
 * take turns does not depend on which others are present, which keeps disruption near the minimum.
 * `size` must be prime (the kernel data path uses a smaller table than the proxy's, see dataplane/kernel).
 */
export function buildMaglevTable(keys: readonly string[], weights: ArrayLike<number>, size: number = MAGLEV_TABLE_SIZE): Uint16Array | Uint32Array {
  const count = keys.length;
  const table = count <= 0xffff ? new Uint16Array(size) : new Uint32Array(size);
  if (count === 0) return table;
  const taken = new Uint8Array(size);
  const position = new Float64Array(count);
  const stride = new Float64Array(count);
  const nextTurn = new Float64Array(count);
  const turns = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    position[i] = hash32(keys[i]!, 0, OFFSET_SEED) % size;
    stride[i] = (hash32(keys[i]!, 0, SKIP_SEED) % (size - 1)) + 1;
    nextTurn[i] = 1 / weights[i]!;
  }
  for (let filled = 0; filled < size; filled++) {
    let turn = 0;
    for (let i = 1; i < count; i++) if (nextTurn[i]! < nextTurn[turn]!) turn = i;
    let slot = position[turn]!;
    while (taken[slot] === 1) {
      slot += stride[turn]!;
      if (slot >= size) slot -= size;
    }
    taken[slot] = 1;
    table[slot] = turn;
    slot += stride[turn]!;
    position[turn] = slot >= size ? slot - size : slot;
    turns[turn]++;
    nextTurn[turn] = (turns[turn]! + 1) / weights[turn]!;
  }
  return table;
}
