import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HangWatchdog } from '../../src/speaker/gobgp/hang-watchdog';

/**
 * The hang watchdog (T17) against a stand-in gobgpd: `sleep` copied under the name gobgpd, so that
 * the watchdog's check of /proc/PID/comm sees what it would see for the real one. The lab test in
 * core-e2e.test.ts does the same with the real daemon, gobgpd and an FRR ToR.
 */
const TIMEOUT_MS = 400;

let dir: string;
let fakeGobgpd: string;

function startFakeGobgpd(): { child: ChildProcess; exit: Promise<NodeJS.Signals | null> } {
  const child = spawn(fakeGobgpd, ['60'], { stdio: 'ignore' });
  const exit = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  return { child, exit };
}

function blockEventLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // Busy: no timer, no heartbeat.
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([promise, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms))]);
}

describe('hang watchdog', () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vipd-watchdog-'));
    fakeGobgpd = join(dir, 'gobgpd');
    copyFileSync('/bin/sleep', fakeGobgpd);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it(`an event loop blocked past ${TIMEOUT_MS} ms gets gobgpd a SIGTERM, with a line in its log saying why`, async () => {
    const gobgpd = startFakeGobgpd();
    const log = join(dir, 'blocked.log');
    const fd = openSync(log, 'a');
    const watchdog = new HangWatchdog(gobgpd.child.pid!, TIMEOUT_MS, fd, (err) => assert.fail(err));
    closeSync(fd);
    try {
      await new Promise((resolve) => setTimeout(resolve, 3 * TIMEOUT_MS));
      assert.equal(gobgpd.child.exitCode, null, 'heartbeats flowing: gobgpd left alone');
      const t0 = performance.now();
      blockEventLoop(TIMEOUT_MS * 3);
      const signal = await withTimeout(gobgpd.exit, 2000);
      console.log(`event loop blocked ${TIMEOUT_MS * 3} ms: gobgpd got ${String(signal)}, seen ${Math.round(performance.now() - t0)} ms after the block began`);
      assert.equal(signal, 'SIGTERM');
      assert.match(readFileSync(log, 'utf8'), new RegExp(`vipd-watchdog: no heartbeat from vipd for 0\\.400 s: stopping gobgpd \\(pid ${gobgpd.child.pid}\\)`));
    } finally {
      watchdog.stop();
      gobgpd.child.kill('SIGKILL');
    }
  });

  it('stop() ends the watchdog without touching gobgpd', async () => {
    const gobgpd = startFakeGobgpd();
    const fd = openSync(join(dir, 'stopped.log'), 'a');
    const watchdog = new HangWatchdog(gobgpd.child.pid!, TIMEOUT_MS, fd, (err) => assert.fail(err));
    closeSync(fd);
    try {
      await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS));
      watchdog.stop();
      blockEventLoop(TIMEOUT_MS * 2);
      assert.equal(await withTimeout(gobgpd.exit, 2 * TIMEOUT_MS), 'timeout', 'gobgpd must live on');
    } finally {
      gobgpd.child.kill('SIGKILL');
    }
  });

  it('a pid that is not a gobgpd is never signalled', async () => {
    const other = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    const exit = new Promise((resolve) => other.once('exit', (_code, signal) => resolve(signal)));
    const fd = openSync(join(dir, 'other.log'), 'a');
    const watchdog = new HangWatchdog(other.pid!, TIMEOUT_MS, fd, (err) => assert.fail(err));
    closeSync(fd);
    try {
      blockEventLoop(TIMEOUT_MS * 3);
      assert.equal(await withTimeout(exit, 2 * TIMEOUT_MS), 'timeout', 'sleep is not gobgpd: left alone');
    } finally {
      watchdog.stop();
      other.kill('SIGKILL');
    }
  });
});
