/**
 * Contract of the state module: the operator's intent that must outlive the process. Today that is the
 * node drain and the backend drains. A drain kept only in memory would be forgotten by a restart during
 * maintenance, and the node would announce again while its operator still works on it.
 */

/** Who or what set a drain, and when. */
export interface DrainMark {
  /** Free text naming the actor, e.g. `admin socket /run/vipd/lb1.sock`. */
  readonly source: string;
  /** ISO 8601 wall-clock time of the drain. */
  readonly at: string;
}

export interface BackendDrainMark extends DrainMark {
  readonly pool: string;
  /** Endpoint key as in the config (`198.18.21.2:2379`, `[2001:db8::1]:2379`). */
  readonly backend: string;
}

/** A drain of one VIP (its route withdrawn, the other VIPs left alone). */
export interface VipDrainMark extends DrainMark {
  readonly vip: string;
}

/** Everything the store keeps for one node. Empty (no drains) when no file exists yet. */
export interface DrainState {
  readonly node?: DrainMark;
  readonly backends: readonly BackendDrainMark[];
  /** Absent or empty when no single VIP is drained. */
  readonly vips?: readonly VipDrainMark[];
}

export const EMPTY_DRAIN_STATE: DrainState = Object.freeze({ backends: Object.freeze([]) as readonly BackendDrainMark[] });

/**
 * Reads and replaces the whole drain state. Promises:
 * - `load()` resolves to EMPTY_DRAIN_STATE when there is no file, and rejects (VIPD_ERR_STATE, the
 *   message naming the file and the problem) when the file exists but cannot be read or is not valid;
 * - `save()` is atomic: after a crash at any moment the file holds either the old or the new state,
 *   never a mix or a torn write; it resolves once the new state is durable (file and directory fsynced);
 * - saves run one at a time, in call order.
 */
export interface DrainStateStore {
  /** Where the state lives, for logs and status (`restored from <file>`). */
  readonly file: string;
  load(): Promise<DrainState>;
  save(state: DrainState): Promise<void>;
}
