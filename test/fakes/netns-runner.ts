import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

/** One JSON line of a runner (test/fakes/proxy-netns-runner.ts): an event name and a wall-clock `at`. */
export interface RunnerEvent {
  readonly event: string;
  readonly at: number;
  readonly [field: string]: unknown;
}

export const PROXY_NETNS_RUNNER = path.join(__dirname, 'proxy-netns-runner.js');

/** A runner process inside a network namespace; its JSON lines are kept in order and can be awaited. */
export class Runner {
  readonly events: RunnerEvent[] = [];
  private readonly waiters: Array<{ match: (e: RunnerEvent) => boolean; resolve: (e: RunnerEvent) => void }> = [];
  readonly child: ChildProcess;

  constructor(ns: string, args: readonly string[]) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, PROXY_NETNS_RUNNER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as RunnerEvent;
      this.events.push(event);
      for (const waiter of [...this.waiters]) {
        if (!waiter.match(event)) continue;
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve(event);
      }
    });
  }

  next(match: (e: RunnerEvent) => boolean, timeoutMs: number, what: string): Promise<RunnerEvent> {
    const seen = this.events.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
