import { spawn, type ChildProcess } from 'node:child_process';

/** How often vipd's event loop proves it is alive. */
export const HEARTBEAT_INTERVAL_MS = 500;

/**
 * Reads one heartbeat byte at a time; when none comes for $2 seconds (vipd stopped or its event loop
 * blocked) or stdin ends (vipd is gone), sends SIGTERM to the gobgpd whose pid is $1, if that pid is
 * still a gobgpd. bash, not sh: `read -t` with a fraction and `-n` are bash's.
 */
const WATCHDOG_SCRIPT = `
while :; do IFS= read -r -n 1 -t "$2" _; rc=$?; [ "$rc" -eq 0 ] || break; done
if [ "$rc" -gt 128 ]; then why="no heartbeat from vipd for $2 s"; else why="vipd closed the heartbeat pipe"; fi
if [ "$(cat "/proc/$1/comm" 2>/dev/null)" = gobgpd ]; then
  echo "vipd-watchdog: $why: stopping gobgpd (pid $1) so that its routes are withdrawn" >&2
  kill -TERM "$1"
fi
`;

/**
 * Takes the routes away when vipd hangs (T17): SIGSTOPped, or its event loop blocked for seconds.
 * gobgpd runs on its own and would go on announcing a node whose proxy serves nobody. This watchdog
 * is a small bash process outside vipd's event loop: vipd writes a byte to its stdin every
 * HEARTBEAT_INTERVAL_MS, and when none arrives for `timeoutMs` it sends gobgpd SIGTERM, whose Cease
 * withdraws the routes at once. Once vipd runs again, its supervisor sees gobgpd exit, restarts it
 * as after any crash, and the routes come back through the usual gating.
 *
 * One watchdog per gobgpd process: it is stopped (SIGKILL, so that it kills nothing) when that
 * gobgpd exits or is stopped on purpose.
 */
export class HangWatchdog {
  private readonly child: ChildProcess;
  private readonly heartbeat: NodeJS.Timeout;

  /** `stderrFd`: where its one line goes (gobgpd's log, which the supervisor forwards to vipd's). */
  constructor(gobgpdPid: number, timeoutMs: number, stderrFd: number, onError: (err: Error) => void) {
    this.child = spawn('bash', ['-c', WATCHDOG_SCRIPT, 'vipd-watchdog', String(gobgpdPid), (timeoutMs / 1000).toFixed(3)], {
      stdio: ['pipe', 'ignore', stderrFd],
    });
    this.child.on('error', onError);
    // EPIPE once the watchdog has acted or been stopped: nothing left to tell it.
    this.child.stdin!.on('error', () => {});
    // Real time, not the supervisor's clock: what is measured is whether this event loop runs at all.
    this.heartbeat = setInterval(() => this.child.stdin!.write('.'), HEARTBEAT_INTERVAL_MS);
    this.heartbeat.unref();
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  stop(): void {
    clearInterval(this.heartbeat);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    this.child.stdin!.destroy();
  }
}
