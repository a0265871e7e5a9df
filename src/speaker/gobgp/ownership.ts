import net from 'node:net';
import type { GobgpApiClient } from './client';
import { UNICAST_FAMILIES, decodeDestination, encodeDeletePath, type RibFamily, type RibRoute } from './codec';

/**
 * How vipd tells its own paths in a gobgpd it shares (`speaker.gobgp.manage: false`): each path it adds
 * carries one RFC 8092 large community, `<speaker asn>:1986621540:<owner id>`. 1986621540 is "vipd"
 * in ASCII; the owner id defaults to the router id read as a 32-bit number, so two nodes never share
 * a mark. A large community rather than a path identifier: gobgpd keeps attributes as given and lists
 * them in `gobgp global rib` and ListPath, so the mark survives everything short of a gobgpd restart
 * (which forgets the paths anyway) and anyone can see whose path it is; a path identifier is only
 * meaningful with ADD-PATH, is not shown by the CLI by default, and gobgpd may assign its own.
 */
export const VIPD_MARK_TAG = 1986621540;

export function ownerMark(asn: number, ownerId: number): string {
  return `${asn}:${VIPD_MARK_TAG}:${ownerId}`;
}

/** "198.18.0.1" -> 3323068417: the default owner id. */
export function routerIdAsOwnerId(routerId: string): number {
  if (!net.isIPv4(routerId)) throw new Error(`router id ${JSON.stringify(routerId)} is not an IPv4 address`);
  return routerId.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

export function carriesMark(route: RibRoute, mark: string): boolean {
  return route.largeCommunities.includes(mark);
}

const FAMILIES: readonly RibFamily[] = ['ipv4', 'ipv6'];

/**
 * Deletes every locally originated path of the global RIB that carries `mark`, and nothing else:
 * what the guardian does when vipd dies. Resolves with the prefixes deleted. Paths it cannot decode
 * are left alone: without the mark read, they may be someone else's.
 */
export async function deleteMarkedPaths(client: GobgpApiClient, mark: string): Promise<string[]> {
  const deleted: string[] = [];
  for (const family of FAMILIES) {
    for (const destination of await client.listPath(UNICAST_FAMILIES[family])) {
      let entries;
      try {
        entries = decodeDestination(destination);
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!entry.local || !carriesMark(entry.route, mark)) continue;
        await client.deletePath(encodeDeletePath(entry.route.prefix));
        deleted.push(entry.route.prefix);
      }
    }
  }
  return deleted;
}
