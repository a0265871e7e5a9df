import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { systemClock } from '../../src/lib/clock';
import { createLogger, silentLogger, type Logger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { GobgpClient } from '../../src/speaker/gobgp/client';
import { UNICAST_FAMILIES, decodeDestination, encodeAddPath, routeFromAdvertisement, type RibRoute } from '../../src/speaker/gobgp/codec';
import { createGobgpSpeaker, type GobgpSpeakerOptions } from '../../src/speaker/gobgp/gobgp-speaker';
import { GobgpdSupervisor, type GobgpdSupervisorOptions } from '../../src/speaker/gobgp/supervisor';
import type { Advertisement, Speaker, SpeakerEvent } from '../../src/speaker/speaker';

/**
 * Against the real gobgpd 3.10, no fakes. The loopback block runs a managed gobgpd with its API on
 * 127.0.0.1 and BGP port -1 (it talks to nobody). The namespace block builds two network namespaces
 * joined by a veth pair, runs vipd's managed gobgpd in one and a second gobgpd as the "router" in
 * the other, and asserts from the router's side. Measured figures are printed with console.log.
 * Set VIPD_TEST_LOG=debug to see the speaker's and gobgpd's logs.
 */

const haveGobgpd = ((): string | false => {
  try {
    execFileSync('gobgpd', ['--version'], { stdio: 'ignore' });
    execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'gobgpd or setpriv not installed';
  }
})();
const canUseNetns = haveGobgpd || (process.getuid?.() === 0 ? false : 'network namespaces need root');

function testLogger(): Logger {
  return process.env.VIPD_TEST_LOG ? createLogger(process.env.VIPD_TEST_LOG) : silentLogger();
}

async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `check` returns a value (not undefined); returns it with the time it took. */
async function waitFor<T>(what: string, timeoutMs: number, check: () => T | undefined | Promise<T | undefined>, everyMs = 25): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return { value, ms: Math.round(performance.now() - t0) };
    } catch (err) {
      lastError = err;
    }
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
    }
    await sleep(everyMs);
  }
}

/** Process state from /proc; undefined once it is gone. A zombie counts as dead. */
function processState(pid: number): { state: string; ppid: number; cmdline: string[] } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return { state: fields[0]!, ppid: Number(fields[1]), cmdline };
  } catch {
    return undefined;
  }
}

const isAlive = (pid: number): boolean => {
  const s = processState(pid);
  return s !== undefined && s.state !== 'Z';
};

/** Live gobgpd processes whose parent is `ppid`, optionally with an argument containing `marker`. */
function gobgpdChildrenOf(ppid: number, marker?: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const s = processState(Number(entry));
    if (!s || s.state === 'Z' || s.ppid !== ppid || path.basename(s.cmdline[0] ?? '') !== 'gobgpd') continue;
    if (marker && !s.cmdline.some((a) => a.includes(marker))) continue;
    pids.push(Number(entry));
  }
  return pids;
}

/** Listening TCP/UDP sockets owned by `pid`, as "proto local-address". */
function listenersOf(pid: number, netns?: string): string[] {
  const argv = netns ? ['ip', 'netns', 'exec', netns, 'ss', '-ltunpH'] : ['ss', '-ltunpH'];
  const out = execFileSync(argv[0]!, argv.slice(1)).toString();
  return out
    .split('\n')
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => {
      const cols = line.trim().split(/\s+/);
      return `${cols[0]} ${cols[4]}`;
    });
}

function speakerOptions(overrides: Partial<GobgpSpeakerOptions> & Pick<GobgpSpeakerOptions, 'peers'>): GobgpSpeakerOptions & { metrics: Metrics } {
  return {
    asn: 65001,
    routerId: '198.18.0.1',
    manage: true,
    clock: systemClock,
    logger: testLogger(),
    metrics: createMetrics(),
    reconcileIntervalMs: 1000,
    ...overrides,
  } as GobgpSpeakerOptions & { metrics: Metrics };
}

async function counterValue(metrics: Metrics, name: 'pathsRepaired' | 'daemonRestarts', labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metrics[name].get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l)).reduce((s, v) => s + v.value, 0);
}

async function localRib(client: GobgpClient): Promise<RibRoute[]> {
  const routes: RibRoute[] = [];
  for (const family of [UNICAST_FAMILIES.ipv4, UNICAST_FAMILIES.ipv6]) {
    for (const d of await client.listPath(family)) for (const e of decodeDestination(d)) if (e.local) routes.push(e.route);
  }
  return routes.sort((a, b) => a.prefix.localeCompare(b.prefix));
}

const V4: Advertisement = { prefix: '198.19.0.10/32', communities: ['65000:100', '65535:0'], med: 10, localPref: 200 };
const V6: Advertisement = { prefix: '2001:db8:100::10/128', communities: ['65000:200'], med: 20, localPref: 300 };
const wanted = (...ads: Advertisement[]): RibRoute[] => ads.map(routeFromAdvertisement).sort((a, b) => a.prefix.localeCompare(b.prefix));

describe('managed gobgpd on loopback', () => {
  // CI must run this: a missing prerequisite fails with the reason instead of skipping.
  before(() => {
    if (haveGobgpd) throw new Error(haveGobgpd);
  });
  let port = 0;
  let api = '';
  let speaker: Speaker;
  let metrics: Metrics;
  let client: GobgpClient;
  const events: SpeakerEvent[] = [];

  const gobgpdPid = (): number => {
    const pids = gobgpdChildrenOf(process.pid, `127.0.0.1:${port}`);
    assert.equal(pids.length, 1, `one managed gobgpd for API port ${port}, found ${pids.join(',')}`);
    return pids[0]!;
  };

  before(async () => {
    port = await freeLoopbackPort();
    api = `127.0.0.1:${port}`;
    // A TCP API so that the gobgp CLI can reach it: the escape hatch, which a shipped config never uses.
    const options = speakerOptions({ api, allowTcpApi: true, peers: [], restartBackoff: { initialMs: 500, maxMs: 5000 } });
    metrics = options.metrics;
    speaker = createGobgpSpeaker(options);
    speaker.onEvent((e) => events.push(e));
    await speaker.start();
    client = new GobgpClient({ address: api, deadlineMs: 2000 });
  });

  after(async () => {
    client?.close();
    const pids = port ? gobgpdChildrenOf(process.pid, `127.0.0.1:${port}`) : [];
    await speaker?.close().catch(() => speaker.destroy());
    for (const pid of pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  });

  test('(a) codec round trip: AddPath then ListPath gives back identical attributes, IPv4 and IPv6', async () => {
    const cases: Advertisement[] = [
      { ...V4, nextHop: '198.18.0.1' },
      { ...V6, nextHop: '2001:db8:ff::1' },
      { prefix: '198.19.0.11/32', communities: [] },
      { prefix: '2001:db8:100::11/128', communities: ['65000:1'] },
    ];
    for (const ad of cases) await client.addPath(encodeAddPath(routeFromAdvertisement(ad)));
    try {
      assert.deepEqual(await localRib(client), wanted(...cases));
      // Independent reader: gobgp's own CLI decodes the same attributes.
      const cli = JSON.parse(execFileSync('gobgp', ['-u', '127.0.0.1', '-p', String(port), '-j', 'global', 'rib']).toString()) as Record<string, Array<{ attrs: Array<Record<string, unknown>> }>>;
      const attrs = cli['198.19.0.10/32']![0]!.attrs;
      assert.deepEqual(attrs.find((a) => a.type === 8)?.communities, [4259840100, 4294901760]);
      assert.equal(attrs.find((a) => a.type === 4)?.metric, 10);
      assert.equal(attrs.find((a) => a.type === 5)?.value, 200);
      assert.equal(attrs.find((a) => a.type === 3)?.nexthop, '198.18.0.1');
    } finally {
      // Leave the RIB as the speaker wants it (empty); it would delete these anyway.
      await speaker.setAdvertisements([]);
    }
    assert.deepEqual(await localRib(client), []);
  });

  test('(g) issue 10 attributes: large communities, an AS path prepend and local-pref round-trip; identical paths are not re-added, changed ones replace the path', async () => {
    const up: Advertisement = { prefix: '198.19.0.12/32', communities: ['65000:100'], largeCommunities: ['65001:1:100', '4200000000:0:4294967295'], localPref: 100 };
    const pessimized: Advertisement = { ...up, communities: ['65000:666'], asPath: [65001, 65001, 65001], localPref: 50 };
    const draining: Advertisement = { ...up, communities: ['65000:999', '65535:0'], localPref: 0 };
    const added = (): number => events.reduce((n, e) => n + (e.type === 'reconciled' ? e.added : 0), 0);
    try {
      await speaker.setAdvertisements([up]);
      assert.deepEqual(await localRib(client), wanted(up));
      const cli = JSON.parse(execFileSync('gobgp', ['-u', '127.0.0.1', '-p', String(port), '-j', 'global', 'rib']).toString()) as Record<string, Array<{ attrs: Array<Record<string, unknown>> }>>;
      const large = JSON.stringify(cli['198.19.0.12/32']![0]!.attrs.find((a) => a.type === 32));
      assert.match(large, /65001/, `gobgp CLI decodes LARGE_COMMUNITY: ${large}`);
      assert.match(large, /4294967295/);
      const before = added();
      await speaker.setAdvertisements([up]);
      assert.equal(added() - before, 0, 'an identical desired path is not re-added (no UPDATE)');
      for (const ad of [pessimized, draining, up]) {
        const n = added();
        await speaker.setAdvertisements([ad]);
        assert.equal(added() - n, 1, `a change of attributes replaces the path: ${JSON.stringify(ad)}`);
        assert.deepEqual(await localRib(client), wanted(ad), 'one path, with the new attributes');
      }
      console.log('(g) large communities, 3x prepend and local-pref round-trip through gobgpd; identical push: 0 AddPath; each attribute change: 1 AddPath replacing the path');
    } finally {
      await speaker.setAdvertisements([]);
    }
  });

  test('(d) gobgpd listens on nothing but its loopback API: no BGP port, no pprof', () => {
    const pid = gobgpdPid();
    const listeners = listenersOf(pid);
    console.log(`gobgpd pid ${pid} listeners: ${JSON.stringify(listeners)}`);
    assert.deepEqual(listeners, [`tcp 127.0.0.1:${port}`]);
    assert.ok(processState(pid)!.cmdline.includes('--pprof-disable'));
  });

  test('(c) T27 (managed): a path injected with the gobgp CLI is deleted by reconciliation within 5 s and counted', async () => {
    await speaker.setAdvertisements([V4, V6]);
    const before = await counterValue(metrics, 'pathsRepaired', { op: 'deleted' });
    execFileSync('gobgp', ['-u', '127.0.0.1', '-p', String(port), 'global', 'rib', 'add', '0.0.0.0/0']);
    execFileSync('gobgp', ['-u', '127.0.0.1', '-p', String(port), 'global', 'rib', '-a', 'ipv6', 'add', '2001:db8:dead::/48']);
    assert.equal((await localRib(client)).length, 4, 'the injected paths are there at first');
    const { ms } = await waitFor('injected paths deleted', 5000, async () => {
      const rib = await localRib(client);
      return rib.length === 2 ? rib : undefined;
    });
    console.log(`T27 (managed): injected paths deleted by reconciliation after ${ms} ms (bound 5000 ms, interval 1000 ms), counted in vipd_speaker_paths_repaired_total{op=deleted}`);
    assert.deepEqual(await localRib(client), wanted(V4, V6));
    assert.equal((await counterValue(metrics, 'pathsRepaired', { op: 'deleted' })) - before, 2);
  });

  test('(b) SIGKILLed gobgpd is restarted and the desired paths are back within 15 s', async () => {
    await speaker.setAdvertisements([V4, V6]);
    const oldPid = gobgpdPid();
    const restartsBefore = await counterValue(metrics, 'daemonRestarts');
    const t0 = performance.now();
    process.kill(oldPid, 'SIGKILL');
    await waitFor('old gobgpd gone', 2000, () => (isAlive(oldPid) ? undefined : true));
    const { value: rib } = await waitFor(
      'paths back in a new gobgpd',
      15_000,
      async () => {
        const pids = gobgpdChildrenOf(process.pid, `127.0.0.1:${port}`);
        if (pids.length !== 1 || pids[0] === oldPid) return undefined;
        const routes = await localRib(client);
        return routes.length === 2 ? routes : undefined;
      },
      20,
    );
    const ms = Math.round(performance.now() - t0);
    console.log(`(b) gobgpd SIGKILLed -> restarted and paths re-added after ${ms} ms`);
    assert.ok(ms < 15_000);
    assert.deepEqual(rib, wanted(V4, V6));
    assert.equal((await counterValue(metrics, 'daemonRestarts')) - restartsBefore, 1);
    assert.ok((await counterValue(metrics, 'pathsRepaired', { op: 'added' })) >= 2);
    const daemonEvents = events.flatMap((e) => (e.type === 'daemon' ? [e.up] : []));
    assert.deepEqual(daemonEvents.slice(-2), [false, true]);
  });
});

/** Two namespaces joined by a veth pair: "a" for vipd, "b" for the router. Names are unique per run. */
class NetnsLab {
  readonly a = `vgb${process.pid}a`;
  readonly b = `vgb${process.pid}b`;
  dir = '';
  routerApi = '';
  private router: ChildProcess | undefined;
  private created: string[] = [];

  setUp(): void {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipd-gobgp-lab-'));
    this.routerApi = `unix://${path.join(this.dir, 'router.sock')}`;
    const ip = (...args: string[]): void => void execFileSync('ip', args);
    for (const ns of [this.a, this.b]) {
      ip('netns', 'add', ns);
      this.created.push(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    // Created straight inside the namespaces: nothing appears in the host's namespace.
    ip('link', 'add', 'vgbA', 'netns', this.a, 'type', 'veth', 'peer', 'name', 'vgbB', 'netns', this.b);
    ip('-n', this.a, 'addr', 'add', '198.18.0.1/30', 'dev', 'vgbA');
    ip('-n', this.b, 'addr', 'add', '198.18.0.2/30', 'dev', 'vgbB');
    ip('-n', this.a, 'addr', 'add', '2001:db8:ff::1/64', 'dev', 'vgbA', 'nodad');
    ip('-n', this.b, 'addr', 'add', '2001:db8:ff::2/64', 'dev', 'vgbB', 'nodad');
    ip('-n', this.a, 'link', 'set', 'vgbA', 'up');
    ip('-n', this.b, 'link', 'set', 'vgbB', 'up');
  }

  /** The router: a plain gobgpd in namespace b, AS 65000, peering with both of vipd's addresses. */
  startRouter(): void {
    const neighbor = (address: string): string => `
[[neighbors]]
  [neighbors.config]
    neighbor-address = "${address}"
    peer-as = 65001
  [neighbors.timers.config]
    connect-retry = 5
    hold-time = 3
    keepalive-interval = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
`;
    const config = `[global.config]
  as = 65000
  router-id = "198.18.0.2"
  port = 179
  local-address-list = ["198.18.0.2", "2001:db8:ff::2"]
${neighbor('198.18.0.1')}${neighbor('2001:db8:ff::1')}`;
    const file = path.join(this.dir, 'router.toml');
    fs.writeFileSync(file, config);
    const log = fs.openSync(path.join(this.dir, 'router.log'), 'a');
    this.router = spawn(
      'ip',
      ['netns', 'exec', this.b, 'setpriv', '--pdeathsig', 'KILL', '--', 'gobgpd', '-f', file, '--api-hosts', this.routerApi, '--pprof-disable'],
      { stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
  }

  /** Why the router last saw the session with `neighbor` go down, from its own log. */
  routerLastPeerDownReason(neighbor: string): string | undefined {
    const lines = fs.readFileSync(path.join(this.dir, 'router.log'), 'utf8').split('\n');
    const downs = lines.flatMap((line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; Key?: string; Reason?: string };
        return entry.msg === 'Peer Down' && entry.Key === neighbor ? [entry.Reason ?? ''] : [];
      } catch {
        return [];
      }
    });
    return downs.at(-1);
  }

  routerCli(...args: string[]): unknown {
    return JSON.parse(execFileSync('gobgp', ['--target', this.routerApi, '-j', ...args]).toString());
  }

  /** The router's session state towards `neighbor` ("established", "active", ...). */
  routerSession(neighbor: string): string {
    const peer = this.routerCli('neighbor', neighbor) as { state: { session_state: number | string } };
    const s = peer.state.session_state;
    return typeof s === 'number' ? ['unknown', 'idle', 'connect', 'active', 'opensent', 'openconfirm', 'established'][s]! : String(s).toLowerCase();
  }

  /** What the router received from `neighbor` for `prefix`: next hop and communities. */
  routerReceived(neighbor: string, prefix: string): { nextHop: string; communities: number[] } | undefined {
    const family = prefix.includes(':') ? ['-a', 'ipv6'] : [];
    let table: Record<string, Array<{ attrs: Array<{ type: number; nexthop?: string; communities?: number[] }> }>>;
    try {
      table = this.routerCli('neighbor', neighbor, 'adj-in', ...family) as typeof table;
    } catch {
      return undefined;
    }
    const attrs = table?.[prefix]?.[0]?.attrs;
    if (!attrs) return undefined;
    const hop = attrs.find((a) => a.type === 3 || a.type === 14)?.nexthop ?? '';
    return { nextHop: hop, communities: attrs.find((a) => a.type === 8)?.communities ?? [] };
  }

  tearDown(): void {
    this.router?.kill('SIGKILL');
    for (const ns of this.created.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', ns]);
      } catch (err) {
        console.error(`cannot delete netns ${ns}: ${String(err)}`);
      }
    }
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('eBGP to a router in network namespaces', () => {
  // CI must run this: a missing prerequisite fails with the reason instead of skipping.
  before(() => {
    if (canUseNetns) throw new Error(canUseNetns);
  });
  const lab = new NetnsLab();
  const peers = [
    { address: '198.18.0.2', asn: 65000 },
    { address: '2001:db8:ff::2', asn: 65000 },
  ];
  const strays: number[] = [];

  before(() => {
    lab.setUp();
    lab.startRouter();
  });

  after(() => {
    for (const pid of strays) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    lab.tearDown();
  });

  test('unset next hop reaches the router as the session local address; close() withdraws and sends a Cease', async () => {
    const options = speakerOptions({ peers, commandPrefix: ['ip', 'netns', 'exec', lab.a] });
    const speaker = createGobgpSpeaker(options);
    const t0 = performance.now();
    try {
      await speaker.start();
      const pid = gobgpdChildrenOf(process.pid).find((p) => processState(p)!.cmdline.some((a) => a.includes('vipd-gobgpd-')))!;
      strays.push(pid);
      await speaker.setAdvertisements([V4, V6]);
      await waitFor('both sessions established', 20_000, () => (speaker.peers().every((p) => p.state === 'established') ? true : undefined));
      console.log(`both sessions established ${Math.round(performance.now() - t0)} ms after start() began`);

      const { value: v4 } = await waitFor('router has the IPv4 VIP', 5000, () => lab.routerReceived('198.18.0.1', V4.prefix));
      const { value: v6 } = await waitFor('router has the IPv6 VIP', 5000, () => lab.routerReceived('2001:db8:ff::1', V6.prefix));
      assert.deepEqual(v4, { nextHop: '198.18.0.1', communities: [4259840100, 4294901760] });
      assert.deepEqual(v6, { nextHop: '2001:db8:ff::1', communities: [4259840200] });
      // Families follow the peer's address by default: no IPv6 route on the IPv4 session.
      assert.equal(lab.routerReceived('198.18.0.1', V6.prefix), undefined);

      // Unix-socket API, BGP port -1, pprof off: nothing listens at all.
      assert.deepEqual(listenersOf(pid, lab.a), []);

      // ListPeer agrees with the WatchEvent-driven view, and shows the local addresses used as next hops.
      const apiHost = processState(pid)!.cmdline.find((a) => a.startsWith('unix://'))!;
      const direct = new GobgpClient({ address: apiHost.replace('unix://', 'unix:') });
      try {
        const listed = (await direct.listPeer()).map((p) => [p.conf!.neighbor_address, p.state!.session_state, p.transport!.local_address]).sort();
        assert.deepEqual(listed, [
          ['198.18.0.2', 'ESTABLISHED', '198.18.0.1'],
          ['2001:db8:ff::2', 'ESTABLISHED', '2001:db8:ff::1'],
        ]);
      } finally {
        direct.close();
      }

      const tClose = performance.now();
      await speaker.close();
      const closeMs = Math.round(performance.now() - tClose);
      const { ms: downMs } = await waitFor('router session down', 5000, () => (lab.routerSession('198.18.0.1') !== 'established' ? true : undefined), 10);
      const reason = lab.routerLastPeerDownReason('198.18.0.1');
      console.log(`close() took ${closeMs} ms; router saw the session leave established ${closeMs + downMs} ms after close() began; router's reason: ${reason}`);
      assert.match(reason ?? '', /cease/);
      assert.equal(lab.routerReceived('198.18.0.1', V4.prefix), undefined);
      assert.equal(isAlive(pid), false);
    } finally {
      speaker.destroy();
    }
  });

  test('(e) SIGKILL of the vipd process stops its gobgpd too, which sends a Cease (not killed by SIGPIPE)', async () => {
    const speakerModule = path.resolve(__dirname, '../../src/speaker/gobgp/gobgp-speaker.js');
    const clockModule = path.resolve(__dirname, '../../src/lib/clock.js');
    const loggerModule = path.resolve(__dirname, '../../src/lib/logger.js');
    const metricsModule = path.resolve(__dirname, '../../src/lib/metrics.js');
    const script = `
      const { createGobgpSpeaker } = require(${JSON.stringify(speakerModule)});
      const { systemClock } = require(${JSON.stringify(clockModule)});
      const { silentLogger } = require(${JSON.stringify(loggerModule)});
      const { createMetrics } = require(${JSON.stringify(metricsModule)});
      const speaker = createGobgpSpeaker({
        asn: 65001, routerId: '198.18.0.1', manage: true, peers: ${JSON.stringify(peers)},
        commandPrefix: ['ip', 'netns', 'exec', ${JSON.stringify(lab.a)}],
        clock: systemClock, logger: silentLogger(), metrics: createMetrics(),
      });
      speaker.start()
        .then(() => speaker.setAdvertisements([${JSON.stringify(V4)}]))
        .then(() => { console.log('ready'); setInterval(() => {}, 1000); })
        .catch((err) => { console.error(err); process.exit(1); });
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    strays.push(child.pid!);
    let gobgpdDir: string | undefined;
    try {
      const ready = await new Promise<boolean>((resolve) => {
        readline.createInterface({ input: child.stdout! }).on('line', (line) => line === 'ready' && resolve(true));
        child.once('exit', () => resolve(false));
      });
      assert.ok(ready, 'child speaker started');
      const [pid] = gobgpdChildrenOf(child.pid!);
      assert.ok(pid, 'the child runs a gobgpd');
      strays.push(pid);
      gobgpdDir = processState(pid)!.cmdline.find((a) => a.endsWith('gobgpd.toml'))?.replace(/\/gobgpd\.toml$/, '');
      await waitFor('router has the VIP from the child', 20_000, () => lab.routerReceived('198.18.0.1', V4.prefix), 50);

      const t0 = performance.now();
      child.kill('SIGKILL');
      const { ms: deadMs } = await waitFor('gobgpd dead', 5000, () => (isAlive(pid) ? undefined : true), 5);
      const { ms: withdrawnMs } = await waitFor('router withdrew the VIP', 5000, () => (lab.routerReceived('198.18.0.1', V4.prefix) ? undefined : true), 5);
      const session = lab.routerSession('198.18.0.1');
      const reason = await waitFor('router logged the session down', 2000, () => lab.routerLastPeerDownReason('198.18.0.1'));
      console.log(`(e) router's reason for the session going down: ${reason.value}`);
      // Regression: with its log on a pipe to the dead vipd, gobgpd died of SIGPIPE and the router
      // saw "read-failed" instead of a Cease.
      assert.match(reason.value, /cease/);
      console.log(
        `(e) parent SIGKILLed: gobgpd gone after ${deadMs} ms, router route gone after ${Math.round(performance.now() - t0)} ms ` +
          `(${withdrawnMs} ms after gobgpd death), router session now ${session}`,
      );
      assert.ok(withdrawnMs + deadMs < 3000, 'well under the 3 s hold time: gobgpd sent a Cease');
    } finally {
      if (isAlive(child.pid!)) child.kill('SIGKILL');
      // A SIGKILLed vipd cannot remove its private directory; the test does.
      if (gobgpdDir?.includes('vipd-gobgpd-')) fs.rmSync(gobgpdDir, { recursive: true, force: true });
    }
  });
});

describe('gobgpd supervisor', () => {
  // CI must run this: a missing prerequisite fails with the reason instead of skipping.
  before(() => {
    if (haveGobgpd) throw new Error(haveGobgpd);
  });
  const supervisorOptions = (overrides: Partial<GobgpdSupervisorOptions> = {}): GobgpdSupervisorOptions => ({
    config: { asn: 65001, routerId: '198.18.0.1', listenPort: -1, neighbors: [] },
    clock: systemClock,
    logger: testLogger(),
    metrics: createMetrics(),
    ...overrides,
  });

  test('close() escalates to SIGKILL when gobgpd ignores SIGTERM, and removes its directory', async () => {
    const supervisor = new GobgpdSupervisor(supervisorOptions({ stopTimeoutMs: 500 }));
    await supervisor.start();
    const pid = supervisor.pid!;
    const dir = supervisor.directory!;
    try {
      assert.ok(fs.existsSync(path.join(dir, 'gobgpd.toml')));
      // start() returns once gobgpd is spawned, maybe before it has installed its SIGTERM handler; until
      // then SIGTERM is fatal even to a stopped process. Its API socket comes after the handler.
      await waitFor('gobgpd to open its API socket', 10_000, () => (fs.existsSync(supervisor.apiAddress.replace(/^unix:/, '')) ? true : undefined));
      // A stopped process cannot act on SIGTERM: the stand-in for a hung gobgpd.
      process.kill(pid, 'SIGSTOP');
      const t0 = performance.now();
      await supervisor.close();
      const ms = Math.round(performance.now() - t0);
      console.log(`(f) hung gobgpd: close() returned after ${ms} ms (SIGTERM, then SIGKILL at 500 ms)`);
      assert.ok(ms >= 450 && ms < 3000, `${ms} ms`);
      assert.equal(isAlive(pid), false);
      assert.equal(fs.existsSync(dir), false);
    } finally {
      supervisor.destroy();
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  test('close() and destroy() are idempotent and awaitable; destroy() during close() ends both at once', async () => {
    const supervisor = new GobgpdSupervisor(supervisorOptions({ stopTimeoutMs: 10_000 }));
    await supervisor.start();
    const pid = supervisor.pid!;
    const dir = supervisor.directory!;
    try {
      await waitFor('gobgpd to open its API socket', 10_000, () => (fs.existsSync(supervisor.apiAddress.replace(/^unix:/, '')) ? true : undefined));
      // Hung: close() alone would wait 10 s for SIGTERM to work; destroy() must not.
      process.kill(pid, 'SIGSTOP');
      const t0 = performance.now();
      const closing = supervisor.close();
      assert.equal(supervisor.close(), closing, 'a second close() is the same promise');
      const destroying = supervisor.destroy();
      assert.equal(supervisor.destroy(), destroying, 'a second destroy() is the same promise');
      await Promise.all([closing, destroying]);
      const ms = Math.round(performance.now() - t0);
      console.log(`supervisor: destroy() during a close() of a hung gobgpd ended both after ${ms} ms`);
      assert.ok(ms < 2000, `${ms} ms`);
      assert.equal(isAlive(pid), false);
      assert.equal(fs.existsSync(dir), false);
      await supervisor.close();
      await assert.rejects(supervisor.start(), { code: 'VIPD_ERR_GOBGP_PROCESS', message: /already closed/ });
    } finally {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  test('a gobgpd binary that cannot run fails start() with VIPD_ERR_GOBGP_PROCESS', async () => {
    const supervisor = new GobgpdSupervisor(supervisorOptions({ gobgpdPath: '/nonexistent/gobgpd' }));
    await assert.rejects(supervisor.start(), { code: 'VIPD_ERR_GOBGP_PROCESS', message: /cannot run \/nonexistent\/gobgpd/ });
    assert.equal(supervisor.directory && fs.existsSync(supervisor.directory), false);
  });

  test('a --dry-run failure fails start() with the message gobgpd printed, before anything is spawned', async () => {
    // vipd's renderer already refuses everything gobgpd 3.10's parser would, so a stand-in binary
    // plays a gobgpd that rejects the file.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipd-gobgp-fake-'));
    const fakeGobgpd = path.join(dir, 'gobgpd');
    fs.writeFileSync(fakeGobgpd, '#!/bin/sh\necho \'{"level":"fatal","msg":"cannot read config file"}\'\nexit 1\n', { mode: 0o755 });
    try {
      const supervisor = new GobgpdSupervisor(supervisorOptions({ gobgpdPath: fakeGobgpd }));
      await assert.rejects(supervisor.start(), { code: 'VIPD_ERR_GOBGP_PROCESS', message: /rejects its generated config \(exit 1\).*cannot read config file/ });
      assert.equal(supervisor.pid, undefined);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
