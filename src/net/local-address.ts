import os from 'node:os';
import { canonicalAddress } from './address';

/**
 * A peer's `localAddress` must be an address of this node: gobgpd would otherwise bind the session to
 * nothing and retry for ever, with the peer simply never Established. The config loader is pure, so this
 * host fact is checked where the daemon starts (`vipd run`) and where a reload is accepted.
 */

/** One refused key, shaped like a reload refusal: dotted key, its path in the file, why. */
export interface LocalAddressIssue {
  readonly key: string;
  readonly path: ReadonlyArray<string | number>;
  readonly message: string;
}

export type InterfaceLister = () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;

interface SpeakerPeers {
  readonly driver: string;
  readonly gobgp: { readonly manage: boolean };
  readonly peers: ReadonlyArray<{ readonly localAddress?: string | undefined }>;
}

/**
 * The peers whose localAddress is on no interface of this node (network namespace). Only for a managed
 * gobgpd: an external one may run elsewhere, and its sessions are not vipd's to configure.
 */
export function localAddressIssues(speaker: SpeakerPeers, interfaces: InterfaceLister = os.networkInterfaces): LocalAddressIssue[] {
  if (speaker.driver !== 'gobgp' || !speaker.gobgp.manage) return [];
  const wanted = speaker.peers.map((p, i) => ({ i, address: p.localAddress })).filter((w): w is { i: number; address: string } => w.address !== undefined);
  if (wanted.length === 0) return [];
  const present = new Map<string, string>();
  for (const [name, addresses] of Object.entries(interfaces())) {
    for (const a of addresses ?? []) {
      const canonical = canonicalAddress(a.address);
      if (canonical !== undefined && !present.has(canonical)) present.set(canonical, name);
    }
  }
  return wanted
    .filter((w) => !present.has(canonicalAddress(w.address) ?? w.address))
    .map((w) => ({
      key: `speaker.peers[${w.i}].localAddress`,
      path: ['speaker', 'peers', w.i, 'localAddress'],
      message:
        `${w.address} is not an address of this node, so the session could never be opened from it. ` +
        `Put it on the node first (e.g. \`ip addr add ${w.address}/${w.address.includes(':') ? 128 : 32} dev lo\`, made persistent), or fix the key`,
    }));
}
