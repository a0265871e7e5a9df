/**
 * The guardian process (guardian.ts starts it): holds the read end of a pipe whose only write end is in
 * vipd. When vipd dies in any way, SIGKILL included, the kernel closes that end, the read sees EOF, and
 * the guardian deletes vipd's marked paths from the external gobgpd through its API, logs what it did
 * and exits. A clean stop that already withdrew writes "withdrawn" before closing: the guardian then
 * exits without touching gobgpd.
 *
 * With --hang-timeout, vipd also writes a heartbeat byte every 500 ms. When none comes for that long
 * (vipd SIGSTOPped, its event loop blocked: T17), the guardian deletes the marked paths too, as the
 * managed gobgpd's watchdog stops gobgpd; once vipd runs again its reconciliation adds them back.
 *
 * argv: --api <gobgpd API address> --mark <large community> [--give-up-after <ms>] [--hang-timeout <ms>]
 */
import { Backoff } from '../../lib/backoff';
import { errorMessage } from '../../lib/errors';
import { createLogger } from '../../lib/logger';
import { GobgpClient } from './client';
import { UNICAST_FAMILIES, decodeDestination, encodeDeletePath } from './codec';
import { deleteMarkedPaths } from './ownership';
import { GUARDIAN_READY, GUARDIAN_RELEASE } from './guardian-protocol';
import fs from 'node:fs';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const api = arg('api');
const mark = arg('mark');
const giveUpAfterMs = Number(arg('give-up-after') ?? 30_000);
const hangTimeoutMs = arg('hang-timeout') === undefined ? undefined : Number(arg('hang-timeout'));
const log = createLogger().child({ component: 'guardian', vipdPid: process.ppid });
if (!api || !mark) {
  log.error({ event: 'guardian', argv: process.argv.slice(2) }, 'guardian needs --api and --mark');
  process.exit(2);
}

// Signals meant for vipd's service (systemd's stop, a terminal's ^C) are not the guardian's to act on:
// it acts on the pipe alone, so that a clean stop's withdrawal is never raced.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.on(signal, () => log.info({ event: 'guardian', signal }, 'signal ignored; the guardian acts when vipd is gone'));
}

const client = new GobgpClient({ address: api, deadlineMs: 2000 });
/** The end of what vipd wrote: enough to see the release word after any number of heartbeats. */
let input = '';
let acting = false;
let hangTimer: NodeJS.Timeout | undefined;
let hungSwept = false;

function armHangTimer(): void {
  if (hangTimeoutMs === undefined || acting) return;
  clearTimeout(hangTimer);
  hangTimer = setTimeout(() => {
    hungSwept = true;
    void sweep('vipd-hung');
  }, hangTimeoutMs);
}

async function sweep(reason: 'vipd-died' | 'vipd-hung'): Promise<void> {
  const t0 = performance.now();
  const backoff = new Backoff(100, 2000);
  for (let attempt = 1; ; attempt++) {
    try {
      const deleted = await deleteMarkedPaths(client, mark!);
      log.warn(
        { event: 'withdraw', reason, op: 'delete', mark, prefixes: deleted, attempt, ms: Math.round(performance.now() - t0), ...(reason === 'vipd-hung' && { hangTimeoutMs }) },
        reason === 'vipd-died'
          ? `vipd died without withdrawing: the guardian deleted its ${deleted.length} marked path(s) from gobgpd`
          : `no heartbeat from vipd for ${hangTimeoutMs} ms: the guardian deleted its ${deleted.length} marked path(s) from gobgpd`,
      );
      return;
    } catch (err) {
      const elapsed = performance.now() - t0;
      if (elapsed > giveUpAfterMs) {
        log.error({ event: 'withdraw', reason, mark, attempt, err: errorMessage(err) }, 'the guardian could not delete vipd\'s paths; giving up');
        process.exitCode = 1;
        return;
      }
      const delayMs = backoff.next();
      log.warn({ event: 'withdraw', reason, mark, attempt, retryInMs: delayMs, err: errorMessage(err) }, 'gobgpd refused or did not answer; retrying');
      // A hung vipd that runs again owns its paths again: stop deleting them.
      if (reason === 'vipd-hung' && !hungSwept) return;
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk: string) => {
  input = (input + chunk).slice(-64);
  if (hungSwept) {
    hungSwept = false;
    log.info({ event: 'guardian', reason: 'vipd-resumed' }, 'vipd runs again; its reconciliation announces its paths again');
  }
  armHangTimer();
});
process.stdin.on('error', () => undefined);
process.stdin.on('end', () => {
  if (acting) return;
  acting = true;
  clearTimeout(hangTimer);
  if (input.endsWith(GUARDIAN_RELEASE)) {
    log.info({ event: 'guardian', reason: 'clean-stop' }, 'vipd stopped after withdrawing its paths; the guardian leaves gobgpd alone');
    client.close();
    return;
  }
  void sweep('vipd-died').finally(() => {
    client.close();
    process.exit();
  });
});

// Load the proto and open the channel now, so that the sweep at vipd's death starts with a warm
// connection (the 1 s bound of T16 leaves no room for a cold start). Then tell vipd it is armed.
async function warmUp(): Promise<void> {
  // Also loads the protobuf types that decoding a path needs: parsing them first at vipd's death
  // cost about 400 ms on a loaded 2-core machine.
  for (const destination of await client.listPath(UNICAST_FAMILIES.ipv4)) {
    try {
      decodeDestination(destination);
    } catch {
      // Only warming up.
    }
  }
  decodeDestination({ prefix: '198.18.0.0/32', paths: [{ ...encodeDeletePath('198.18.0.0/32'), neighbor_ip: '<nil>' }] });
}

void warmUp()
  .catch((err: unknown) => log.warn({ event: 'guardian', err: errorMessage(err) }, 'gobgpd does not answer yet; the guardian will try again when needed'))
  .finally(() => {
    log.info({ event: 'guardian', api, mark, hangTimeoutMs }, 'guardian armed: vipd\'s marked paths are deleted if vipd dies or hangs');
    armHangTimer();
    try {
      fs.writeSync(3, GUARDIAN_READY);
      fs.closeSync(3);
    } catch {
      // Started by hand without fd 3: nothing to tell.
    }
  });
