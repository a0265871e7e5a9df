import type { Config, PoolConfig, VipConfig } from './schema';

/**
 * Reload's view of two configs: what changed, as a typed change set, and what cannot change without a
 * restart. Pure: no I/O, no clock. Things are matched by their identity (a VIP by name, a pool by name,
 * a backend by its canonical IP:PORT, a listener by VIP:port, a peer by address), and "changed" means
 * any key under it differs, so a key added to the schema later is covered without touching this file:
 * the apply step rebuilds the changed thing from the new config.
 */
export interface ConfigChanges {
  /** Keys that differ and cannot be applied to a running node; non-empty means the reload is refused. */
  readonly restartNeeded: readonly RestartNeeded[];
  readonly vips: ChangedSet<VipChange>;
  readonly pools: ChangedSet<PoolChange>;
  readonly peers: ChangedSet<string>;
  /** Other changed keys that apply in place (announce.*, shutdown.*), as dotted paths. */
  readonly settings: readonly string[];
  /** Nothing differs at all. */
  readonly unchanged: boolean;
}

export interface RestartNeeded {
  /** Dotted path of the key, as check-config names it (`speaker.asn`, `vips[0].address`). */
  readonly key: string;
  /** The key's path as an array, for locating its line in the new file. */
  readonly path: ReadonlyArray<string | number>;
  readonly reason: string;
}

export interface ChangedSet<C> {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly C[];
}

export interface VipChange {
  readonly name: string;
  /** Keys of the VIP that differ (communities, med, listeners...). */
  readonly keys: readonly string[];
  /** Listener ids (`name:port`). */
  readonly listeners: ChangedSet<string>;
  /** True when only what is sent with the route changed (communities, med, nextHop...), not what is served. */
  readonly attributesOnly: boolean;
}

export interface PoolChange {
  readonly name: string;
  /** Canonical IP:PORT of backends. */
  readonly backends: ChangedSet<string>;
  readonly checkChanged: boolean;
  /** Pool keys other than backends and check that differ (balance, timeouts, queue...). */
  readonly settings: readonly string[];
}

/**
 * Keys a running node cannot take: identity, files and sockets it holds, the process layout, and
 * gobgpd's own start-up. A prefix covers every key under it.
 */
const RESTART_KEYS: ReadonlyArray<{ readonly prefix: string; readonly why: string }> = [
  { prefix: 'node', why: 'the node name is in the admin socket path, the state file name and every log line' },
  { prefix: 'stateDir', why: 'the drain state file is opened at start' },
  { prefix: 'admin', why: 'the admin socket and port are bound at start (and the reload itself arrives on them)' },
  { prefix: 'net', why: 'VIP addresses are put on the interface at start' },
  { prefix: 'proxy', why: 'worker processes and process-wide connection limits are set up at start' },
  { prefix: 'speaker.driver', why: 'the BGP speaker is chosen at start' },
  { prefix: 'speaker.asn', why: "it is gobgpd's global config: every session would reset" },
  { prefix: 'speaker.routerId', why: "it is gobgpd's global config: every session would reset" },
  { prefix: 'speaker.gobgp', why: 'gobgpd is started (or found) with these at start' },
  { prefix: 'speaker.gracefulRestart', why: "it is in every neighbor's OPEN: changing it would reset every session" },
];

/** VIP keys that only change what is sent with the route: the apply re-sends the path, nothing else moves. */
const VIP_ATTRIBUTE_KEYS: ReadonlySet<string> = new Set(['communities', 'med', 'nextHop', 'localPref', 'attributes', 'minHealthyBackends']);

export function diffConfig(before: Config, after: Config): ConfigChanges {
  const restartNeeded: RestartNeeded[] = [];
  const settings: string[] = [];
  const top = new Set([...Object.keys(before), ...Object.keys(after)]);
  for (const key of top) {
    if (key === 'vips' || key === 'pools') continue;
    const a = (before as unknown as Record<string, unknown>)[key];
    const b = (after as unknown as Record<string, unknown>)[key];
    for (const path of changedPaths(a, b, [key])) {
      if (path[0] === 'speaker' && path[1] === 'peers') continue;
      const dotted = formatPath(path);
      const rule = RESTART_KEYS.find((r) => dotted === r.prefix || dotted.startsWith(`${r.prefix}.`) || dotted.startsWith(`${r.prefix}[`));
      if (rule) restartNeeded.push({ key: dotted, path, reason: rule.why });
      else settings.push(dotted);
    }
  }

  const vipsBefore = new Map(before.vips.map((v) => [v.name, v]));
  const vipsAfter = new Map(after.vips.map((v, i) => [v.name, { vip: v, index: i }]));
  const vipChanges: VipChange[] = [];
  for (const [name, { vip, index }] of vipsAfter) {
    const old = vipsBefore.get(name);
    if (!old) continue;
    if (old.address !== vip.address) {
      restartNeeded.push({
        key: `vips[${index}].address`,
        path: ['vips', index, 'address'],
        reason: `VIP "${name}" keeps its name but changes address (${old.address} -> ${vip.address}); give the new address a new VIP name to add it beside the old one`,
      });
      continue;
    }
    const change = diffVip(old, vip);
    if (change) vipChanges.push(change);
  }

  const poolChanges: PoolChange[] = [];
  for (const [name, pool] of Object.entries(after.pools)) {
    const old = before.pools[name];
    if (!old) continue;
    const change = diffPool(name, old, pool);
    if (change) poolChanges.push(change);
  }

  const peersBefore = new Map(before.speaker.peers.map((p) => [p.address, p]));
  const peersAfter = new Map(after.speaker.peers.map((p) => [p.address, p]));
  const peers: ChangedSet<string> = {
    added: [...peersAfter.keys()].filter((a) => !peersBefore.has(a)),
    removed: [...peersBefore.keys()].filter((a) => !peersAfter.has(a)),
    changed: [...peersAfter].filter(([a, p]) => peersBefore.has(a) && !deepEqual(peersBefore.get(a), p)).map(([a]) => a),
  };

  const vips: ChangedSet<VipChange> = {
    added: [...vipsAfter.keys()].filter((n) => !vipsBefore.has(n)),
    removed: [...vipsBefore.keys()].filter((n) => !vipsAfter.has(n)),
    changed: vipChanges,
  };
  const pools: ChangedSet<PoolChange> = {
    added: Object.keys(after.pools).filter((n) => !(n in before.pools)),
    removed: Object.keys(before.pools).filter((n) => !(n in after.pools)),
    changed: poolChanges,
  };
  return { restartNeeded, vips, pools, peers, settings, unchanged: deepEqual(before, after) };
}

/** True when applying the changes would touch nothing at all (the reload is "unchanged"). */
export function isEmpty(changes: ConfigChanges): boolean {
  const none = (s: ChangedSet<unknown>) => s.added.length === 0 && s.removed.length === 0 && s.changed.length === 0;
  return changes.restartNeeded.length === 0 && none(changes.vips) && none(changes.pools) && none(changes.peers) && changes.settings.length === 0;
}

/** One line for logs and the CLI: `vips +web -old ~api(communities); pools ~kube(+10.0.0.4:6443); peers ~10.0.0.1`. */
export function summarize(changes: ConfigChanges): string {
  const parts: string[] = [];
  const set = <C>(label: string, s: ChangedSet<C>, show: (c: C) => string) => {
    const items = [...s.added.map((a) => `+${a}`), ...s.removed.map((r) => `-${r}`), ...s.changed.map((c) => `~${show(c)}`)];
    if (items.length > 0) parts.push(`${label} ${items.join(' ')}`);
  };
  set('vips', changes.vips, (v) => `${v.name}(${v.keys.join(',')})`);
  set('pools', changes.pools, (p) => {
    const inner = [...p.backends.added.map((b) => `+${b}`), ...p.backends.removed.map((b) => `-${b}`), ...p.backends.changed.map((b) => `~${b}`)];
    if (p.checkChanged) inner.push('check');
    inner.push(...p.settings);
    return `${p.name}(${inner.join(',')})`;
  });
  set('peers', changes.peers, (p) => p);
  if (changes.settings.length > 0) parts.push(`settings ${changes.settings.join(',')}`);
  return parts.length > 0 ? parts.join('; ') : 'nothing changed';
}

function diffVip(old: VipConfig, vip: VipConfig): VipChange | undefined {
  const all = changedKeys(old as unknown as Record<string, unknown>, vip as unknown as Record<string, unknown>);
  // The communities/med shorthands are mirrored into attributes.up (schema.ts): a change of a shorthand
  // alone is named by the key the operator wrote, not twice. gateKey only says which key the gate came from.
  const mirrored = (all.includes('communities') || all.includes('med')) && deepEqual({ ...old.attributes, up: undefined }, { ...vip.attributes, up: undefined });
  const keys = all.filter((k) => k !== 'gateKey' && !(k === 'attributes' && mirrored));
  if (keys.length === 0) return undefined;
  const id = (port: number) => `${vip.name}:${port}`;
  const oldByPort = new Map(old.listeners.map((l) => [l.port, l]));
  const newByPort = new Map(vip.listeners.map((l) => [l.port, l]));
  const listeners: ChangedSet<string> = {
    added: vip.listeners.filter((l) => !oldByPort.has(l.port)).map((l) => id(l.port)),
    removed: old.listeners.filter((l) => !newByPort.has(l.port)).map((l) => id(l.port)),
    changed: vip.listeners.filter((l) => oldByPort.has(l.port) && !deepEqual(oldByPort.get(l.port), l)).map((l) => id(l.port)),
  };
  return { name: vip.name, keys, listeners, attributesOnly: keys.every((k) => VIP_ATTRIBUTE_KEYS.has(k)) };
}

function diffPool(name: string, old: PoolConfig, pool: PoolConfig): PoolChange | undefined {
  const keys = changedKeys(old as unknown as Record<string, unknown>, pool as unknown as Record<string, unknown>);
  if (keys.length === 0) return undefined;
  const oldByKey = new Map(old.backends.map((b) => [b.endpoint.key, b]));
  const newByKey = new Map(pool.backends.map((b) => [b.endpoint.key, b]));
  const backends: ChangedSet<string> = {
    added: [...newByKey.keys()].filter((k) => !oldByKey.has(k)),
    removed: [...oldByKey.keys()].filter((k) => !newByKey.has(k)),
    changed: [...newByKey].filter(([k, b]) => oldByKey.has(k) && !deepEqual(oldByKey.get(k), b)).map(([k]) => k),
  };
  return { name, backends, checkChanged: keys.includes('check'), settings: keys.filter((k) => k !== 'backends' && k !== 'check') };
}

function changedKeys(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => !deepEqual(a[k], b[k]));
}

/** Leaf paths (objects descended, arrays compared whole) where a and b differ. */
function changedPaths(a: unknown, b: unknown, path: Array<string | number>): Array<Array<string | number>> {
  if (deepEqual(a, b)) return [];
  // An endpoint (IP:PORT parsed) is one value, named by its key.
  if (isPlainObject(a) && isPlainObject(b) && !('key' in a && 'host' in a)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => changedPaths(a[k], b[k], [...path, k]));
  }
  return [path];
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isPlainObject(a) && isPlainObject(b)) {
    // An optional key left out and one present as undefined are the same config.
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) if (!deepEqual(a[k], b[k])) return false;
    return true;
  }
  return false;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function formatPath(path: ReadonlyArray<string | number>): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}
