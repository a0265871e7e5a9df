import { isIP } from 'node:net';

/**
 * Contract of the net module: putting VIPs on the node. A VIP lives on an interface (lo by default) as
 * a host address so the kernel accepts its traffic; the router, not ARP/ND, brings the traffic here.
 */
export interface VipAddressManager {
  /** Adds the address as /32 or /128 if it is not there already. */
  ensure(address: string): Promise<void>;
  /** Removes the address if present. */
  remove(address: string): Promise<void>;
  /** True if the address is on the interface now. */
  has(address: string): Promise<boolean>;
}

/** "198.19.0.10" -> "198.19.0.10/32", "2001:db8::10" -> "2001:db8::10/128". */
export function hostPrefix(address: string): string {
  return `${address}/${isIP(address) === 6 ? 128 : 32}`;
}
