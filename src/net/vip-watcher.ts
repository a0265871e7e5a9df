import type { Clock, TimerHandle } from '../lib/clock';
import { errorMessage } from '../lib/errors';
import type { Logger } from '../lib/logger';
import type { VipAddressManager } from './net';

/** A VIP as the watcher needs it. */
export interface WatchedVip {
  readonly name: string;
  readonly address: string;
}

export interface VipWatcherOptions {
  readonly addresses: VipAddressManager;
  /** net.manageAddresses: put each VIP on the interface (else only look whether someone else did). */
  readonly manage: boolean;
  /** The interface's name, for logs. */
  readonly interfaceName: string;
  /** How often the VIPs are looked at again (someone may remove one). */
  readonly intervalMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Told after a pass in which some VIP's bound state changed (the announce gate reads isBound). */
  readonly onChange: () => void;
}

/**
 * Keeps the VIPs on the interface (when managed) and knows, per VIP, whether it is there now: the
 * announce gate's vipBound. A VIP starts unbound until a pass has seen it.
 */
export class VipWatcher {
  private vips: readonly WatchedVip[] = [];
  private readonly bound = new Map<string, boolean>();
  private timer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly options: VipWatcherOptions) {}

  /** The VIPs to watch (at start and after a reload): new ones start unbound, removed ones are forgotten. */
  setVips(vips: readonly WatchedVip[]): void {
    this.vips = vips;
    const names = new Set(vips.map((v) => v.name));
    for (const name of [...this.bound.keys()]) if (!names.has(name)) this.bound.delete(name);
    for (const vip of vips) if (!this.bound.has(vip.name)) this.bound.set(vip.name, false);
  }

  isBound(vip: string): boolean {
    return this.bound.get(vip) ?? false;
  }

  /** One pass now, then one every intervalMs until close(). */
  async start(): Promise<void> {
    await this.checkOnce();
    this.schedule();
  }

  /** Looks at every VIP once (putting it on the interface when managed); tells onChange if any changed. */
  async checkOnce(): Promise<void> {
    const { addresses, manage, interfaceName, logger } = this.options;
    let changed = false;
    for (const vip of this.vips) {
      let bound = false;
      try {
        if (manage) await addresses.ensure(vip.address);
        bound = await addresses.has(vip.address);
      } catch (err) {
        logger.error({ component: 'net', vip: vip.name, err: errorMessage(err) }, `cannot put ${vip.address} on ${interfaceName}`);
      }
      // A VIP removed by a reload while this pass ran is not brought back.
      if (!this.bound.has(vip.name) || !this.vips.includes(vip)) continue;
      if (this.bound.get(vip.name) !== bound) {
        logger.info({ component: 'net', vip: vip.name, bound }, `${vip.address} ${bound ? 'is' : 'is NOT'} on ${interfaceName}`);
        this.bound.set(vip.name, bound);
        changed = true;
      }
    }
    if (changed) this.options.onChange();
  }

  /** Stops the periodic passes. Idempotent. */
  close(): void {
    this.closed = true;
    this.timer?.cancel();
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = this.options.clock.setTimeout(() => {
      void this.checkOnce().then(() => this.schedule());
    }, this.options.intervalMs);
  }
}
