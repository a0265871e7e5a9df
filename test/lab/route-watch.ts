import { spawn, type ChildProcess } from 'node:child_process';

/**
 * The ToR kernel's route to the VIP as it changes, from `ip -ts monitor route` in the ToR's namespace:
 * each change is stamped by ip as the netlink message arrives. Polling `ip route` instead spawns a
 * process per look, 30-150 ms each on the loaded 2-core machine, which blurs a 500 ms bound by a
 * third; the timings below come from here, and the final state is still read with `ip route`.
 */
export class TorRouteWatch {
  private readonly child: ChildProcess;
  private readonly changes: Array<{ readonly at: number; readonly nexthops: number; readonly gateways: readonly string[] }> = [];
  /** The change being read: its first line, then one line per next hop of a multipath route. */
  private pending: { at: number; deleted: boolean; direct: boolean; multipath: number; gateways: string[] } | undefined;
  private partial = '';
  private waiters: Array<() => void> = [];

  constructor(ns: string, private readonly vip: string) {
    // TZ=UTC: ip prints local time, read back here as UTC.
    this.child = spawn('ip', ['-n', ns, '-ts', 'monitor', 'route'], { env: { ...process.env, TZ: 'UTC' }, stdio: ['ignore', 'pipe', 'inherit'] });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (chunk: string) => this.read(chunk));
  }

  /** ms from `since` (Date.now()) to the first change to `nexthops` next hops at or after it. */
  async until(nexthops: number, since: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.changes.find((c) => c.at >= since && c.nexthops === nexthops);
      if (hit) return hit.at - since;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`the ToR's route to ${this.vip} never had ${nexthops} next hops within ${timeoutMs} ms; changes: ${JSON.stringify(this.changes.filter((c) => c.at >= since - 1000))}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Every change seen at or after `since` (Date.now()), oldest first. */
  changesSince(since: number): ReadonlyArray<{ readonly at: number; readonly nexthops: number; readonly gateways: readonly string[] }> {
    return this.changes.filter((c) => c.at >= since);
  }

  /** The fewest next hops the route had in a change at or after `since`; undefined when it never changed. */
  lowestSince(since: number): number | undefined {
    const seen = this.changesSince(since).map((c) => c.nexthops);
    return seen.length ? Math.min(...seen) : undefined;
  }

  stop(): void {
    this.child.kill();
  }

  private read(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('\t')) {
        if (this.pending && line.trim().startsWith('nexthop ')) {
          this.pending.multipath++;
          const via = / via (\S+)/.exec(line)?.[1];
          if (via) this.pending.gateways.push(via);
        }
        continue;
      }
      this.flush();
      // "[2026-12-06T07:19:01.628594] 198.19.0.10 via 198.18.1.2 dev eth1 proto bgp ...", "... Deleted 198.19.0.10 ..."
      const m = /^\[(\S+)\] (Deleted )?(\S+)(.*)$/.exec(line);
      if (!m || m[3] !== this.vip) continue;
      const via = / via (\S+)/.exec(m[4]!)?.[1];
      this.pending = { at: Date.parse(`${m[1]}Z`), deleted: m[2] !== undefined, direct: via !== undefined, multipath: 0, gateways: via ? [via] : [] };
    }
    // ip flushes after each netlink message, so a chunk ends with a whole change.
    this.flush();
  }

  private flush(): void {
    const p = this.pending;
    this.pending = undefined;
    if (!p) return;
    this.changes.push({ at: p.at, nexthops: p.deleted ? 0 : p.multipath > 0 ? p.multipath : p.direct ? 1 : 0, gateways: p.deleted ? [] : p.gateways.sort() });
    for (const wake of this.waiters.splice(0)) wake();
  }
}

