import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from './util';

/** The containerlab topology that both the Docker lab and the namespace lab are built from. */
export const DEFAULT_CLAB_FILE = path.join(REPO_ROOT, 'containerlab', 'vipd-lab.clab.yml');

export type Role = 'tor' | 'balancer' | 'backend' | 'client';

/**
 * One `exec` line of a node, in file order. Only these three shapes are understood, so the namespace lab
 * replays exactly what containerlab would run, or refuses the file.
 */
export type LayoutStep =
  | { kind: 'sysctl'; key: string; value: string }
  | { kind: 'addr'; family: 4 | 6; cidr: string; dev: string }
  | { kind: 'route'; family: 4 | 6; dst: string; via: string };

export interface LayoutNode {
  name: string;
  role: Role;
  labels: Readonly<Record<string, string>>;
  steps: readonly LayoutStep[];
  /** The container command (containerlab only; the namespace lab starts its own programs). */
  cmd: string | undefined;
}

export interface LinkEnd {
  node: string;
  iface: string;
}

export interface LayoutLink {
  a: LinkEnd;
  b: LinkEnd;
}

export interface Layout {
  file: string;
  name: string;
  nodes: ReadonlyMap<string, LayoutNode>;
  links: readonly LayoutLink[];
}

export interface InterfaceAddress {
  dev: string;
  family: 4 | 6;
  cidr: string;
  address: string;
  prefixLength: number;
}

const ROLES: readonly Role[] = ['tor', 'balancer', 'backend', 'client'];

function parseExecLine(file: string, node: string, line: string): LayoutStep {
  const t = line.trim().split(/\s+/);
  const bad = (): Error => new Error(`${file}: node ${node}: exec line not understood by the namespace lab: "${line}"`);
  if (t[0] === 'sysctl') {
    if (t.length !== 3 || t[1] !== '-w') throw bad();
    const m = /^([a-z0-9_.-]+)=(\S+)$/i.exec(t[2] as string);
    if (!m) throw bad();
    return { kind: 'sysctl', key: m[1] as string, value: m[2] as string };
  }
  if (t[0] !== 'ip') throw bad();
  let i = 1;
  let family: 4 | 6 = 4;
  if (t[i] === '-6' || t[i] === '-4') {
    family = t[i] === '-6' ? 6 : 4;
    i++;
  }
  const obj = t[i];
  const verb = t[i + 1];
  const rest = t.slice(i + 2);
  if ((obj === 'addr' || obj === 'address') && verb === 'add' && rest.length === 3 && rest[1] === 'dev') {
    const cidr = rest[0] as string;
    if (cidr.includes(':') !== (family === 6) || !cidr.includes('/')) throw bad();
    return { kind: 'addr', family, cidr, dev: rest[2] as string };
  }
  if (obj === 'route' && (verb === 'add' || verb === 'replace') && rest.length === 3 && rest[1] === 'via') {
    const dst = rest[0] as string;
    if (dst.includes(':') !== (family === 6)) throw bad();
    return { kind: 'route', family, dst, via: rest[2] as string };
  }
  throw bad();
}

function asStringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) out[k] = String(val);
  }
  return out;
}

function parseEnd(file: string, text: unknown): LinkEnd {
  const m = typeof text === 'string' ? /^([^:]+):(\S+)$/.exec(text) : null;
  if (!m) throw new Error(`${file}: link endpoint ${JSON.stringify(text)} is not "node:iface"`);
  return { node: m[1] as string, iface: m[2] as string };
}

export function loadLayout(file: string = DEFAULT_CLAB_FILE): Layout {
  const doc = parse(fs.readFileSync(file, 'utf8')) as {
    name?: unknown;
    topology?: { nodes?: Record<string, Record<string, unknown>>; links?: Array<{ endpoints?: unknown[] }> };
  };
  const rawNodes = doc.topology?.nodes;
  if (!rawNodes) throw new Error(`${file}: no topology.nodes`);
  const nodes = new Map<string, LayoutNode>();
  for (const [name, raw] of Object.entries(rawNodes)) {
    const labels = asStringMap(raw.labels);
    const role = labels['vipd.lab/role'] as Role | undefined;
    if (!role || !ROLES.includes(role)) throw new Error(`${file}: node ${name}: label vipd.lab/role must be one of ${ROLES.join(', ')}`);
    const exec = Array.isArray(raw.exec) ? raw.exec : [];
    const steps = exec.map((line) => parseExecLine(file, name, String(line)));
    nodes.set(name, { name, role, labels, steps, cmd: typeof raw.cmd === 'string' ? raw.cmd : undefined });
  }
  const links: LayoutLink[] = [];
  for (const raw of doc.topology?.links ?? []) {
    const eps = raw.endpoints;
    if (!Array.isArray(eps) || eps.length !== 2) throw new Error(`${file}: a link needs exactly two endpoints`);
    const a = parseEnd(file, eps[0]);
    const b = parseEnd(file, eps[1]);
    for (const end of [a, b]) if (!nodes.has(end.node)) throw new Error(`${file}: link to unknown node ${end.node}`);
    links.push({ a, b });
  }
  return { file, name: String(doc.name ?? 'vipd-lab'), nodes, links };
}

export function nodesByRole(layout: Layout, role: Role): LayoutNode[] {
  return [...layout.nodes.values()].filter((n) => n.role === role).sort((x, y) => x.name.localeCompare(y.name, 'en', { numeric: true }));
}

export function addressesOf(node: LayoutNode, family?: 4 | 6, dev?: string): InterfaceAddress[] {
  const out: InterfaceAddress[] = [];
  for (const s of node.steps) {
    if (s.kind !== 'addr') continue;
    if (family !== undefined && s.family !== family) continue;
    if (dev !== undefined && s.dev !== dev) continue;
    const [address, len] = s.cidr.split('/') as [string, string];
    out.push({ dev: s.dev, family: s.family, cidr: s.cidr, address, prefixLength: Number(len) });
  }
  return out;
}

/** The other end of the link that `node:iface` sits on. */
export function peerEnd(layout: Layout, end: LinkEnd): LinkEnd | undefined {
  for (const l of layout.links) {
    if (l.a.node === end.node && l.a.iface === end.iface) return l.b;
    if (l.b.node === end.node && l.b.iface === end.iface) return l.a;
  }
  return undefined;
}

/** The node's uplink: its only link, which for every non-ToR node in this lab goes to the ToR. */
export function uplinkOf(layout: Layout, node: string): { local: LinkEnd; remote: LinkEnd } {
  const found = layout.links.filter((l) => l.a.node === node || l.b.node === node);
  if (found.length !== 1) throw new Error(`${layout.file}: node ${node} should have exactly one link, has ${found.length}`);
  const l = found[0] as LayoutLink;
  return l.a.node === node ? { local: l.a, remote: l.b } : { local: l.b, remote: l.a };
}

export function labelOf(node: LayoutNode, key: string): string {
  const v = node.labels[`vipd.lab/${key}`];
  if (v === undefined) throw new Error(`node ${node.name} has no label vipd.lab/${key}`);
  return v;
}
