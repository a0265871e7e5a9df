import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { VipdError } from '../lib/errors';
import { sameAddress } from './address';
import { hostPrefix, type VipAddressManager } from './net';

/** Manages VIPs with iproute2 (`ip addr`), which needs CAP_NET_ADMIN and nothing else. */
export class IpAddressManager implements VipAddressManager {
  constructor(
    private readonly device: string,
    private readonly ipBinary = 'ip',
  ) {}

  async ensure(address: string): Promise<void> {
    if (await this.has(address)) return;
    // nodad: a VIP on lo must be usable at once; duplicate detection is meaningless for anycast.
    const extra = isIP(address) === 6 ? ['nodad'] : [];
    await this.run([familyFlag(address), 'addr', 'add', hostPrefix(address), 'dev', this.device, ...extra]);
  }

  async remove(address: string): Promise<void> {
    if (!(await this.has(address))) return;
    await this.run([familyFlag(address), 'addr', 'del', hostPrefix(address), 'dev', this.device]);
  }

  async has(address: string): Promise<boolean> {
    // getifaddrs() in-process: spawning `ip` every few seconds stalled the event loop 3-7 ms each time,
    // which showed up as the proxy's p99 latency in the benchmark.
    return (networkInterfaces()[this.device] ?? []).some((a) => sameAddress(a.address, address));
  }

  private run(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.ipBinary, args, { timeout: 5000 }, (err, stdout, stderr) => {
        if (err) {
          reject(new VipdError('VIPD_ERR_NET', `ip ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
        } else {
          resolve(stdout);
        }
      });
    });
  }
}

function familyFlag(address: string): string {
  return isIP(address) === 6 ? '-6' : '-4';
}
