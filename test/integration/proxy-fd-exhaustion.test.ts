import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { Runner } from '../fakes/netns-runner';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * An exhausted fd limit (issue 3, bad input): the real daemon (`vipd run`) in a network namespace,
 * started with a low RLIMIT_NOFILE, in front of two echo backends. A client opens connections through
 * the VIP and holds them until vipd runs out of descriptors, then keeps trying.
 *
 * What must hold, seen from outside vipd: every connection vipd cannot serve is closed at once (never
 * left hanging) and counted as refused for `fdLimit`; the admin API still answers at the limit; vipd
 * lives on; once the held connections are gone, new ones are served by both backends (running out of
 * fds is this node's problem, so no backend may be ejected or blamed for it); and vipd's fd count is
 * back to where it started.
 */
const NS = `vfd${process.pid}`;
const VIP = '198.18.251.1';
const VIP_PORT = 6443;
const ADMIN_PORT = 9901;
const BACKEND_PORTS = [7001, 7002] as const;
/** vipd's own descriptors (stdio, epoll, the listeners, the admin servers) take about 20, and it keeps 128 spare (64 for probes, 64 for admin connections). */
const FD_LIMIT = 256;
const ATTEMPTS_AFTER_FULL = 30;
const PROBES = 40;
/** A client vipd cannot serve must be closed well before anyone would call it hanging. */
const CLOSE_BOUND_MS = 1_000;
const BIN = path.join(__dirname, '..', '..', 'src', 'cli', 'bin.js');

function sh(...argv: string[]): void {
  execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

function vipdConfig(dir: string): Record<string, unknown> {
  return {
    node: { name: 'fd-exhaustion' },
    stateDir: path.join(dir, 'state'),
    admin: { listen: `127.0.0.1:${ADMIN_PORT}`, socket: path.join(dir, 'admin.sock') },
    net: { interface: 'lo', manageAddresses: false },
    shutdown: { grace: '0s' },
    speaker: { driver: 'none' },
    vips: [{ name: 'api', address: VIP, listeners: [{ port: VIP_PORT, pool: 'echo' }] }],
    pools: {
      echo: {
        balance: 'round-robin',
        backends: BACKEND_PORTS.map((port) => `127.0.0.1:${port}`),
        // Checks fail too while no fd is free; a fall of 10 keeps the exhaustion below (a second or two)
        // from marking the backends down, so what the probes see afterwards is passive health alone.
        check: { kind: 'tcp', interval: '500ms', timeout: '200ms', rise: 1, fall: 10 },
        timeouts: { firstByte: '0s' },
      },
    },
  };
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function waitUntilAnnounced(deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  let last = '';
  while (Date.now() < until) {
    const status = spawnSync('ip', ['netns', 'exec', NS, 'curl', '-sf', `http://127.0.0.1:${ADMIN_PORT}/status`], { encoding: 'utf8' });
    last = status.stdout;
    if (status.status === 0 && (JSON.parse(status.stdout) as { vips: Array<{ state: string }> }).vips[0]?.state === 'announced') return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`vipd did not announce within ${deadlineMs} ms; last status: ${last || '(none)'}`);
}

/** The value of one series in Prometheus text, 0 when absent (a counter never incremented has no series). */
function metricSum(text: string, name: string, labelFilter = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(labelFilter)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('exhausted fd limit', () => {
  before(() => requirePrerequisites(['ip', 'curl']));

  it(`with RLIMIT_NOFILE ${FD_LIMIT}, clients vipd cannot serve are closed at once, no backend is ejected, and the fds come back`, { timeout: 60_000 }, async () => {
    const runners: Runner[] = [];
    let vipd: ChildProcess | undefined;
    const dir = mkdtempSync(path.join(tmpdir(), 'vipd-fd-test-'));
    try {
      sh('ip', 'netns', 'add', NS);
      sh('ip', '-n', NS, 'link', 'set', 'lo', 'up');
      sh('ip', '-n', NS, 'addr', 'add', `${VIP}/32`, 'dev', 'lo');
      const backends = BACKEND_PORTS.map((port) => new Runner(NS, ['backend', '127.0.0.1', String(port)]));
      runners.push(...backends);
      for (const backend of backends) await backend.next((e) => e.event === 'ready', 10_000, 'backend ready');

      const configFile = path.join(dir, 'vipd.yaml');
      writeFileSync(configFile, stringify(vipdConfig(dir)));
      // ulimit in the shell that execs node: the limit is vipd's alone, not the test runner's.
      vipd = spawn('ip', ['netns', 'exec', NS, 'sh', '-c', `ulimit -n ${FD_LIMIT} && exec "$0" "$@"`, process.execPath, BIN, 'run', '--config', configFile], {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      await waitUntilAnnounced(15_000);
      const pid = vipd.pid!;
      const baselineFds = openFds(pid);

      const client = new Runner(NS, ['exhaust', VIP, String(VIP_PORT), String(ADMIN_PORT), String(FD_LIMIT * 2), String(ATTEMPTS_AFTER_FULL), String(PROBES)]);
      runners.push(client);
      const exhausted = await client.next((e) => e.event === 'exhausted', 30_000, 'the fd limit to be reached');
      const held = exhausted['held'] as number;
      const unserved = exhausted['unserved'] as Array<{ how: string; ms: number }>;
      const probeStart = Date.now();
      const probed = await client.next((e) => e.event === 'probed', 30_000, 'the probes after release');
      const metricsAtLimit = (await client.next((e) => e.event === 'metricsAtLimit', 5_000, "vipd's metrics at the limit"))['text'] as string;
      const metrics = (await client.next((e) => e.event === 'metrics', 5_000, "vipd's metrics"))['text'] as string;
      const aliveAfter = vipd.exitCode === null && vipd.signalCode === null;
      // Health probes open a socket now and then (one may have been open when the baseline was read, so
      // fewer fds afterwards is fine); give the last one time to finish.
      let fdsAfter = openFds(pid);
      for (let i = 0; i < 20 && fdsAfter > baselineFds; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        fdsAfter = openFds(pid);
      }
      const relayedAfterRelease = backends.map((b) => b.events.filter((e) => e.event === 'relayed' && e.at >= probeStart).length);
      const worstCloseMs = Math.max(...unserved.map((u) => u.ms));
      const hows = [...new Set(unserved.map((u) => u.how))].join(', ');
      const capacity = metricSum(metricsAtLimit, 'vipd_proxy_fd_session_capacity');
      const refusedFdLimit = metricSum(metrics, 'vipd_proxy_listener_refused_total', 'reason="fdLimit"');
      const acceptErrors = metricSum(metrics, 'vipd_proxy_listener_errors_total', 'kind="accept"');
      const dialLocal = metricSum(metrics, 'vipd_proxy_listener_refused_total', 'reason="localResources"');
      const ejections = metricSum(metrics, 'vipd_proxy_backend_ejections_total');
      const backendErrors = metricSum(metrics, 'vipd_proxy_backend_connect_errors_total');
      console.log(
        `fd limit ${FD_LIMIT}: ${held} connections held (baseline ${baselineFds} fds); ${unserved.length} unserved clients closed ` +
          `(${hows}) in at most ${worstCloseMs} ms; after release ${String(probed['served'])}/${PROBES} served, ` +
          `by backend ${relayedAfterRelease.join(' + ')}; vipd's capacity ${capacity}, counted ${refusedFdLimit} fdLimit refusals, ${acceptErrors} accept errors, ${dialLocal} dials without a free fd, ` +
          `${backendErrors} backend connect errors, ${ejections} ejections; fds ${fdsAfter} (baseline ${baselineFds})`,
      );

      assert.ok(!metricsAtLimit.startsWith('unreachable'), `the admin API did not answer at the limit: ${metricsAtLimit}`);
      assert.ok(capacity > 10, `vipd's capacity ${capacity}: the fd limit leaves too little room for this test`);
      assert.equal(held, capacity, 'vipd served a number of connections other than the capacity it published');
      assert.equal(unserved.length, ATTEMPTS_AFTER_FULL + 1);
      assert.ok(!unserved.some((u) => u.how === 'hung'), 'a client vipd could not serve was left hanging');
      assert.ok(worstCloseMs <= CLOSE_BOUND_MS, `an unserved client was closed only after ${worstCloseMs} ms`);
      assert.ok(aliveAfter, 'vipd died');
      assert.equal(probed['served'], PROBES, `after release: ${JSON.stringify(probed)}`);
      assert.ok(
        relayedAfterRelease.every((n) => n > 0),
        `after release only some backends got connections (${relayedAfterRelease.join(' + ')}): one was ejected for this node's fd shortage`,
      );
      assert.equal(ejections, 0, 'a backend was ejected for this node’s fd shortage');
      assert.equal(backendErrors, 0, 'dials that failed for want of an fd were blamed on a backend');
      assert.equal(refusedFdLimit, unserved.length, 'not every client vipd could not serve was counted as an fdLimit refusal');
      assert.equal(acceptErrors + dialLocal, 0, 'the fd limit was hit in accept(2) or socket(2) after all: the spare descriptors ran out');
      assert.ok(fdsAfter <= baselineFds, `vipd holds more fds than before the test: ${fdsAfter} > ${baselineFds}`);
    } finally {
      for (const runner of runners) runner.stop();
      if (vipd !== undefined && vipd.exitCode === null) vipd.kill('SIGKILL');
      spawnSync('ip', ['netns', 'del', NS]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
