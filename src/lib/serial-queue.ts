/**
 * Runs async jobs one at a time. `pushLatest` coalesces: while a job runs, only the newest pending job
 * is kept, because each job carries the full desired state and older ones are obsolete.
 */
export class LatestOnlyQueue {
  private running = false;
  private pending: (() => Promise<void>) | undefined;
  private idleWaiters: Array<() => void> = [];

  pushLatest(job: () => Promise<void>): void {
    this.pending = job;
    if (!this.running) void this.drain();
  }

  /** Resolves once nothing runs and nothing is pending. */
  idle(): Promise<void> {
    if (!this.running && !this.pending) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.pending) {
      const job = this.pending;
      this.pending = undefined;
      try {
        await job();
      } catch {
        // Jobs report their own failures; the queue must keep going.
      }
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
