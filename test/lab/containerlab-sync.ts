import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { addressesOf, DEFAULT_CLAB_FILE, Layout, loadLayout, nodesByRole, uplinkOf } from './clab';
import { etcdInitialCluster } from './etcd';
import { renderTorConfig } from './frr';
import { torConfigFromLayout, vipdConfigFromLayout } from './topology';

/** Where the Docker image keeps the repository's containerlab/ directory (see containerlab/Dockerfile). */
const IMAGE_CLAB_DIR = '/opt/vipd/containerlab';

/**
 * The files under containerlab/ that are derived from the layout: the ToR's frr.conf (IPv4 and IPv6
 * sessions with all three balancers, as in Docker every address is configured) and each balancer's
 * vipd.yaml. Keys are paths relative to the clab file's directory.
 */
export function derivedContainerlabFiles(layout: Layout): Map<string, string> {
  const files = new Map<string, string>();
  const balancers = nodesByRole(layout, 'balancer').map((n) => n.name);
  const tor = renderTorConfig(torConfigFromLayout(layout, balancers, { ipv6: true }));
  files.set('tor/frr.conf', tor.integrated);
  for (const lb of balancers) {
    const body = stringify(vipdConfigFromLayout(layout, lb));
    files.set(`${lb}/vipd.yaml`, `# vipd config for ${lb} in the containerlab lab; generated from vipd-lab.clab.yml by\n# test/lab/containerlab-sync.ts (node dist/test/lab/containerlab-sync.js --write).\n${body}`);
  }
  return files;
}

/** The `cmd` each backend node must have so that its etcd member matches test/lab/etcd.ts. */
export function expectedBackendCommands(layout: Layout): Map<string, string> {
  const members = nodesByRole(layout, 'backend').map((n) => {
    const dev = uplinkOf(layout, n.name).local.iface;
    const address = addressesOf(n, 4, dev)[0]?.address;
    if (!address) throw new Error(`${layout.file}: backend ${n.name} has no IPv4 address`);
    return { name: n.name, address };
  });
  const cluster = etcdInitialCluster(members);
  return new Map(members.map((m) => [m.name, `${IMAGE_CLAB_DIR}/etcd-member.sh ${m.name} ${m.address} ${cluster}`]));
}

/** Differences between containerlab/ and what the layout implies; empty when in sync. */
export function containerlabDrift(layout: Layout = loadLayout()): string[] {
  const dir = path.dirname(layout.file);
  const problems: string[] = [];
  for (const [rel, want] of derivedContainerlabFiles(layout)) {
    let have: string | undefined;
    try {
      have = fs.readFileSync(path.join(dir, rel), 'utf8');
    } catch {
      have = undefined;
    }
    if (have !== want) problems.push(`${rel} is ${have === undefined ? 'missing' : 'out of date'}`);
  }
  for (const [name, want] of expectedBackendCommands(layout)) {
    const have = layout.nodes.get(name)?.cmd;
    if (have !== want) problems.push(`node ${name}: cmd should be "${want}", is "${have ?? ''}"`);
  }
  return problems;
}

if (require.main === module) {
  const layout = loadLayout(process.argv.find((a) => a.endsWith('.clab.yml')) ?? DEFAULT_CLAB_FILE);
  if (process.argv.includes('--write')) {
    const dir = path.dirname(layout.file);
    for (const [rel, text] of derivedContainerlabFiles(layout)) {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.writeFileSync(path.join(dir, rel), text);
      console.log(`wrote ${path.join(dir, rel)}`);
    }
  }
  const drift = containerlabDrift(layout);
  for (const d of drift) console.log(`drift: ${d}`);
  process.exitCode = drift.length === 0 ? 0 : 1;
}
