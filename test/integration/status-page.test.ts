import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createLab, sleep, VIPD_BIN, type Lab, type LabProcess } from '../lab';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * The status page in a real browser (issue 12, point 2): Debian's chromium through playwright-core,
 * started inside the balancer's namespace, so it reaches the admin's loopback TCP listener as a person on
 * that node would. A real vipd, a real etcd cluster behind it and the FRR ToR. The test reads the text
 * the page shows: a backend taken down appears within 2 s; a drain changes the VIP's state (and the
 * ToR loses the route, asserted from the ToR). 1,000 idle /events clients leave the daemon serving
 * and the page live. The screenshot goes under tmp/test-output/ (path printed).
 */
const PREFIX = '198.19.0.10/32';
const PAGE_BOUND_MS = 2000;
/** Short, so the test sees the GRACEFUL_SHUTDOWN phase and then the withdraw without waiting 5 s. */
const DRAIN_GRACE_MS = 1000;
const ADMIN_URL = 'http://127.0.0.1:9180/';
const REPO_ROOT = path.join(__dirname, '..', '..', '..');
const OUTPUT_DIR = path.join(REPO_ROOT, 'tmp', 'test-output', 'status-page');
/** node.name is free text in the config (VIP, pool and listener names are not): markup in it must show as text. */
const HOSTILE_NODE = `lb1 <img src=x onerror="window.__owned=1"><b>&amp;</b>`;

let lab: Lab;
let config: string;
let vipd: LabProcess | undefined;
let browser: Browser | undefined;

before(async () => {
  requirePrerequisites(['ip', 'setpriv', 'gobgpd', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', 'etcd', '/usr/bin/chromium']);
  lab = await createLab({ balancers: 1, backends: 'etcd' });
  config = lab.writeVipdConfig('lb1', { node: { name: HOSTILE_NODE }, drain: { grace: `${DRAIN_GRACE_MS}ms` } });
});

after(async () => {
  await browser?.close().catch(() => {});
  await vipd?.stop(5000);
  await lab?.destroy();
});

/** Chromium in lb1's namespace: playwright talks to it over inherited pipes, which `ip netns exec` keeps. */
function chromiumInNamespace(): string {
  const wrapper = path.join(lab.dir, 'chromium-in-lb1');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.ns('lb1')} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  return wrapper;
}

async function text(page: Page, selector: string): Promise<string> {
  return page.locator(selector).innerText();
}

/** Milliseconds until the text of `selector` satisfies `want`, read as the page shows it. */
async function timeUntil(page: Page, selector: string, want: (t: string) => boolean, timeoutMs: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    const now = await text(page, selector).catch(() => '');
    if (want(now)) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`page ${selector} never matched in ${timeoutMs} ms; it shows:\n${now}`);
    await sleep(50);
  }
}

/** The row of the pool table for one backend, as text. */
function rowOf(table: string, backend: string): string {
  return table.split('\n').find((l) => l.includes(backend)) ?? '';
}

/** Opens `count` connections to the admin socket that ask for /events and never read; returns their first status lines. */
async function idleEventClients(socketPath: string, count: number): Promise<{ statuses: Map<string, number>; close: () => void }> {
  const sockets: import('node:net').Socket[] = [];
  const statuses = new Map<string, number>();
  await Promise.all(
    Array.from({ length: count }, () => {
      return new Promise<void>((resolve) => {
        const s = connect({ path: socketPath });
        sockets.push(s);
        let seen = '';
        let counted = false;
        const done = (status: string) => {
          if (counted) return;
          counted = true;
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          resolve();
        };
        const timer = setTimeout(() => done(seen ? 'streaming-or-partial' : 'no answer yet (held)'), 3000);
        s.on('error', () => (clearTimeout(timer), done('refused (reset)')));
        s.on('close', () => (clearTimeout(timer), done(seen.split('\r\n')[0] || 'closed at once (connection cap)')));
        s.on('data', (d: Buffer) => {
          if (seen) return;
          seen = d.toString();
          clearTimeout(timer);
          done(seen.split('\r\n')[0]!);
          // Stop reading from here on: an idle client.
          s.pause();
        });
        s.on('connect', () => s.write('GET /events HTTP/1.1\r\nhost: localhost\r\n\r\n'));
      });
    }),
  );
  return { statuses, close: () => sockets.forEach((s) => s.destroy()) };
}

test('status page: live in headless Chromium; backend down shown within 2 s, drain changes the VIP; 1,000 idle /events clients change nothing', async () => {
  const proc = lab.startVipd('lb1', config);
  vipd = proc;
  await lab.tor.waitNexthops(PREFIX, 1, 30_000).catch((err) => {
    throw new Error(`${err}\n${proc.logTail()}`);
  });

  browser = await chromium.launch({ executablePath: chromiumInNamespace(), args: ['--no-sandbox'], timeout: 60_000 });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const dialogs: string[] = [];
  page.on('dialog', (d) => void (dialogs.push(d.message()), d.dismiss()));
  await page.goto(ADMIN_URL);
  // Escaped through the real daemon: the name is shown as the text it is, and none of it became markup.
  assert.equal(await text(page, '#node'), HOSTILE_NODE);
  assert.equal(await page.locator('main img, main b:has-text("&")').count(), 0, 'no element from the name');
  // Live: the script swapped the meta refresh for the event stream.
  await page.waitForFunction("document.getElementById('norefresh-if-live') === null", undefined, { timeout: 5000 });
  assert.match(await text(page, '#feed'), /live/);
  // After a live update too (the fragment is swapped in with innerHTML: it must arrive escaped).
  await sleep(1500);
  assert.equal(await text(page, '#node'), HOSTILE_NODE);
  assert.equal(await page.evaluate('window.__owned === undefined'), true, 'no script ran from the name');
  assert.deepEqual(dialogs, []);
  const backends = (lab.vipdConfig('lb1') as { pools: { etcd: { backends: string[] } } }).pools.etcd.backends;
  const victim = backends[0]!;
  await timeUntil(page, '#pool-etcd', (t) => backends.every((b) => /healthy/.test(rowOf(t, b)) && !/unhealthy/.test(rowOf(t, b))), 10_000);
  assert.match(await text(page, '#vips'), /control-plane[\s\S]*announced/);

  // A backend down: its etcd member killed.
  const member = lab.etcd!.members.find((m) => victim === `${m.address}:2379`)!;
  assert.ok(member, `an etcd member behind ${victim}`);
  await lab.etcd!.kill(member.name);
  const shownMs = await timeUntil(page, '#pool-etcd', (t) => /unhealthy/.test(rowOf(t, victim)), 10_000);
  console.log(`status page: backend ${victim} killed -> row shows unhealthy after ${Math.round(shownMs)} ms (bound ${PAGE_BOUND_MS} ms)`);
  assert.ok(shownMs <= PAGE_BOUND_MS, `shown after ${Math.round(shownMs)} ms`);
  fs.mkdirSync(OUTPUT_DIR, { recursive: true });
  const downShot = path.join(OUTPUT_DIR, 'status-page-backend-down.png');
  await page.screenshot({ path: downShot, fullPage: true });
  console.log(`status page: screenshot ${downShot}`);
  const row = rowOf(await text(page, '#pool-etcd'), victim);
  assert.match(row, /fail/, `the last check's failure is shown: ${row}`);
  assert.match(await text(page, '#timeline'), new RegExp(`health\\s+etcd/${victim.replace(/\./g, '\\.')}\\s+healthy → unhealthy`));

  // The member back: the page follows it back to healthy and the VIP to announced (the other members can
  // fail their /health too while the cluster elects, so the VIP may have left meanwhile).
  lab.etcd!.startMember(member.name);
  await lab.tor.waitNexthops(PREFIX, 1, 30_000);
  await timeUntil(page, '#vips', (t) => /announced/.test(t) && !/withdrawn/.test(t), 10_000);

  // Drain the node: the VIP's state changes on the page, and the ToR loses the route.
  const drain = await lab.vipdCli('lb1', ['drain', '--config', config]);
  assert.equal(drain.code, 0, drain.stderr);
  // A drain first announces with GRACEFUL_SHUTDOWN for drain.grace (issue 10), then withdraws.
  const drainingMs = await timeUntil(page, '#vips', (t) => /draining|withdrawn/.test(t), 10_000);
  console.log(`status page: vipd drain -> VIP shown draining after ${Math.round(drainingMs)} ms (bound ${PAGE_BOUND_MS} ms)`);
  assert.ok(drainingMs <= PAGE_BOUND_MS);
  const drainedMs = await timeUntil(page, '#vips', (t) => /withdrawn/.test(t) && /drained/.test(t), 10_000);
  console.log(`status page: then withdrawn (drained) after ${Math.round(drainedMs)} ms (bound grace ${DRAIN_GRACE_MS} ms + ${PAGE_BOUND_MS} ms)`);
  assert.ok(drainedMs <= DRAIN_GRACE_MS + PAGE_BOUND_MS);
  // And from outside: the ToR no longer has the route (it had it just before the drain).
  await lab.tor.waitNexthops(PREFIX, 0, 10_000);
  assert.match(await text(page, 'header'), /DRAINED/);
  assert.match(await text(page, '#timeline'), /drain\s+node\s+drained/);

  const shot = path.join(OUTPUT_DIR, 'status-page-drained.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`status page: screenshot ${shot}`);

  // 1,000 idle /events clients on the admin socket: capped; the daemon, its route and the page carry on.
  const idle = await idleEventClients(lab.adminSocket('lb1'), 1000);
  console.log(`status page: 1,000 idle /events clients on the socket -> ${[...idle.statuses].map(([s, n]) => `${n} × ${s}`).join(', ')}`);
  const streaming = idle.statuses.get('HTTP/1.1 200 OK') ?? 0;
  assert.ok(streaming <= 8, `at most 8 streams on the socket, got ${streaming}`);
  assert.ok((idle.statuses.get('HTTP/1.1 503 Service Unavailable') ?? 0) >= 1, 'past the cap: 503');
  const undrain = await lab.vipdCli('lb1', ['undrain', '--config', config]);
  assert.equal(undrain.code, 0, `undrain over the socket while 1,000 clients wait: ${undrain.stderr}`);
  await lab.tor.waitNexthops(PREFIX, 1, 15_000);
  const liveMs = await timeUntil(page, '#vips', (t) => /announced/.test(t) && !/withdrawn/.test(t), 10_000);
  console.log(`status page: undrained with 1,000 idle clients open -> the page shows announced after ${Math.round(liveMs)} ms; ToR route back`);
  const status = await lab.vipdCli('lb1', ['status', '--json', '--config', config]);
  assert.equal(status.code, 0, status.stderr);
  idle.close();
  assert.ok(proc.running, 'vipd still running');

  // The same view in a terminal: redrawn every second, Ctrl-C exits 0.
  const watch = lab.spawn('lb1', [process.execPath, VIPD_BIN, 'status', '--watch', '--config', config], { name: 'status-watch' });
  await sleep(3500);
  watch.kill('SIGINT');
  const exit = await watch.exited;
  const screen = watch.readLog();
  const redraws = screen.split('\x1b[H\x1b[2J').length - 1;
  console.log(`status --watch: ${redraws} redraws in 3.5 s, exit ${exit.code} on SIGINT`);
  assert.equal(exit.code, 0);
  assert.ok(redraws >= 2, `redrawn every second (${redraws})`);
  assert.match(screen, /LAST TRANSITIONS/);
  assert.match(screen, new RegExp(`health\\s+etcd/${victim.replace(/\./g, '\\.')}\\s+healthy -> unhealthy`), 'the timeline shows the backend going down');
});
