import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { Address6 } from 'ip-address';
import { VipdError } from '../../lib/errors';

/**
 * The default IPv6 next hop of IPv6 VIPs sent over an IPv4 session. gobgpd's own choice,
 * ::ffff:<IPv4 session address>, is marked valid and best by FRR 8.4 but never reaches its kernel table
 * (measured, docs/bgp.md), so traffic never arrives. What FRR installs is a global IPv6 address of this
 * node on the link towards the peer: found here as a global address of the interface that holds the
 * session's IPv4 source address. Measured the other way round: an IPv4 VIP over an IPv6 session with
 * gobgpd's default next hop (the session's IPv6 address) is installed by FRR 8.4 as `via inet6`, so no
 * default is needed for that direction.
 */

export interface NextHopProbes {
  /** The local address the kernel would use towards `peer` (default: a connected UDP socket, which sends nothing). */
  readonly sourceAddress?: (peer: string) => Promise<string>;
  readonly interfaces?: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
}

function nextHopError(message: string): VipdError {
  return new VipdError('VIPD_ERR_GOBGP_PROCESS', message);
}

function kernelSourceAddress(peer: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(peer) ? 'udp6' : 'udp4');
    socket.once('error', (err) => {
      socket.close();
      reject(err);
    });
    // connect() on UDP only asks the kernel for a route and a source address.
    socket.connect(179, peer, () => {
      const { address } = socket.address();
      socket.close();
      resolve(address);
    });
  });
}

function isGlobalIpv6(address: string): boolean {
  if (!net.isIPv6(address)) return false;
  const a = new Address6(address);
  return !(a.isLinkLocal() || a.isLoopback() || a.isMulticast() || a.is4() || a.isInSubnet(new Address6('::/128')));
}

/**
 * A global IPv6 address of this node on the interface towards an IPv4 peer (`localAddress`, when the
 * session has one, picks the interface instead of the kernel's route). Throws, naming the key to set,
 * when there is none.
 */
export async function defaultIpv6NextHop(peer: string, localAddress: string | undefined, probes: NextHopProbes = {}): Promise<string> {
  const hint = `set speaker.peers[].nextHopIpv6 for peer ${peer}`;
  let source = localAddress;
  if (source === undefined) {
    try {
      source = await (probes.sourceAddress ?? kernelSourceAddress)(peer);
    } catch (err) {
      throw nextHopError(`peer ${peer} carries IPv6 VIPs but this node has no route to it (${err instanceof Error ? err.message : String(err)}); ${hint}`);
    }
  }
  const interfaces = (probes.interfaces ?? os.networkInterfaces)();
  for (const [name, addresses] of Object.entries(interfaces)) {
    if (!addresses?.some((a) => a.address === source)) continue;
    const global = addresses.find((a) => a.family === 'IPv6' && isGlobalIpv6(a.address));
    if (global) return new Address6(global.address).correctForm();
    throw nextHopError(
      `peer ${peer} carries IPv6 VIPs over IPv4, and interface ${name} (source ${source}) has no global IPv6 address to use as next hop ` +
        `(gobgpd's default ::ffff:${source} is never installed by FRR); ${hint}`,
    );
  }
  throw nextHopError(`peer ${peer} carries IPv6 VIPs over IPv4, and no interface holds the session's source address ${source}; ${hint}`);
}
