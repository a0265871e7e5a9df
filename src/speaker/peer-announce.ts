import net from 'node:net';
import { Address6 } from 'ip-address';
import type { AddressFamily, PeerStatus } from './speaker';

/** Why a VIP is not in one peer's adj-RIB-out, when vipd wants it announced. */
export type PeerWithdrawReason = 'sessionDown' | 'familyNotCarried' | 'familyNotNegotiated' | 'notInAdjRibOut';

export interface PeerAnnounce {
  readonly peer: string;
  readonly state: 'announced' | 'withdrawn';
  /** The VIP's own reason when vipd withdrew it; else why this peer was not sent it. */
  readonly reason?: string;
}

/** "2001:db8:100:0::10/128" and "2001:db8:100::10/128" are the same prefix. */
export function samePrefixText(prefix: string): string {
  const slash = prefix.indexOf('/');
  const address = slash < 0 ? prefix : prefix.slice(0, slash);
  const length = slash < 0 ? '' : prefix.slice(slash);
  return net.isIPv6(address) ? new Address6(address).correctForm() + length : prefix;
}

/**
 * The announce state of one VIP towards each peer, from what the speaker reports (peers() and
 * advertised()). Pure. `announced` only where the prefix is in that peer's adj-RIB-out; a VIP that vipd
 * withdrew keeps its own reason; otherwise the first that applies of: the session is not established,
 * it is not configured for the VIP's family, the peer did not accept that family in its OPEN, or the
 * daemon has not (yet) put the path in its adj-RIB-out.
 */
export function peerAnnounceStates(
  prefix: string,
  vip: { readonly state: 'announced' | 'withdrawn'; readonly reason: string },
  peers: readonly PeerStatus[],
  advertised: ReadonlyMap<string, readonly string[]>,
): PeerAnnounce[] {
  const wanted = samePrefixText(prefix);
  const family: AddressFamily = wanted.includes(':') ? 'ipv6-unicast' : 'ipv4-unicast';
  return peers.map((p) => {
    const sent = (advertised.get(p.address) ?? []).some((a) => samePrefixText(a) === wanted);
    if (sent) return { peer: p.address, state: 'announced' };
    if (vip.state === 'withdrawn') return { peer: p.address, state: 'withdrawn', reason: vip.reason };
    const reason: PeerWithdrawReason =
      p.state !== 'established'
        ? 'sessionDown'
        : !p.families.includes(family)
          ? 'familyNotCarried'
          : p.negotiated && !p.negotiated.includes(family)
            ? 'familyNotNegotiated'
            : 'notInAdjRibOut';
    return { peer: p.address, state: 'withdrawn', reason };
  });
}
