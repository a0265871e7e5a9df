import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { containerlabDrift, createLab, Gobgpd, isAlive, Lab, listNamespaces, run, sweepStale, waitFor } from '../lab/index';
import { requirePrerequisites } from '../fakes/prerequisites';

/**
 * The lab itself, without vipd: plain gobgpd speakers on three balancer namespaces, the FRR ToR's
 * ECMP and import policy, the etcd cluster seen from the client, and a cleanup that leaves nothing.
 */

const VIP = '198.19.0.10/32';
const VIP6 = '2001:db8:100::10/128';

describe('namespace lab (no vipd)', () => {
  let lab: Lab;
  let speakers: Gobgpd[] = [];

  before(() =>
    requirePrerequisites(['ip', 'setpriv', 'gobgpd', 'gobgp', 'etcd', 'etcdctl', 'vtysh', '/usr/lib/frr/zebra', '/usr/lib/frr/bgpd']),
  );

  before(async () => {
    const t0 = performance.now();
    lab = await createLab({ balancers: 3, backends: 'etcd', ipv6: true });
    console.log(`lab ${lab.id}: namespaces, FRR ToR and a healthy 3-member etcd in ${Math.round(performance.now() - t0)} ms (dir ${lab.dir})`);
  });

  after(async () => {
    await lab?.destroy();
  });

  it('the containerlab file and its derived configs agree', () => {
    assert.deepEqual(containerlabDrift(lab.layout), []);
  });

  it('three gobgpd speakers give the ToR three ECMP next hops for the VIP /32 (and /128)', async () => {
    const t0 = performance.now();
    speakers = await Promise.all(lab.balancers.map((b) => lab.startGobgpd(b.name)));
    for (const g of speakers) {
      await g.addPath(VIP, { communities: ['65000:100'] });
      await g.addPath(VIP6);
    }
    const established = await lab.tor.waitEstablished(undefined, 30_000);
    const ecmp = await lab.tor.waitNexthops(VIP, 3, 30_000);
    const ecmp6 = await lab.tor.waitNexthops(VIP6, 3, 30_000);
    console.log(
      `gobgpd start to all 6 sessions Established: ${Math.round(performance.now() - t0)} ms (waited ${established} ms after the last path was added; gobgpd's first connect comes 5-9 s after start); then 3 v4 next hops after ${ecmp} ms more, 3 v6 after ${ecmp6} ms more`,
    );

    const route = await lab.tor.torRoute(VIP);
    assert.ok(route);
    assert.equal(route.protocol, 'bgp');
    assert.deepEqual(route.nexthops.map((h) => h.gateway).sort(), lab.balancers.map((b) => b.v4).sort());
    const route6 = await lab.tor.torRoute(VIP6);
    assert.deepEqual(route6?.nexthops.map((h) => h.gateway).sort(), lab.balancers.map((b) => b.v6).sort());

    const bgp = await lab.tor.bgpRoute(VIP);
    assert.ok(bgp);
    assert.equal(bgp.paths.length, 3);
    for (const p of bgp.paths) {
      assert.equal(p.multipath, true);
      assert.deepEqual(p.communities, ['65000:100']);
      assert.equal(p.asPath, '65001');
    }
    const peers = await lab.tor.bgpSummary();
    assert.equal(peers.length, 6);
    assert.ok(peers.every((p) => p.established && p.remoteAs === 65001));
  });

  it('the ToR policy rejects a route that is not a VIP host route', async () => {
    const lb1 = lab.balancers[0];
    const g = speakers[0];
    assert.ok(lb1 && g);
    const before = (await lab.tor.bgpSummary()).find((p) => p.address === lb1.v4);
    await g.addPath('198.19.0.0/24');
    await g.addPath('2001:db8:100::/64');
    // Proves the UPDATE was really sent, so "absent at the ToR" means rejected, not never advertised.
    await waitFor(async () => (await g.adjOut(lb1.torV4)).includes('198.19.0.0/24'), 5000, 50, 'the /24 in lb1 adj-rib-out');
    const updated = await waitFor(
      async () => ((await lab.tor.bgpSummary()).find((p) => p.address === lb1.v4)?.updatesReceived ?? 0) > (before?.updatesReceived ?? 0),
      5000,
      20,
      'an UPDATE from lb1',
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await lab.tor.bgpRoute('198.19.0.0/24'), null);
    assert.equal(await lab.tor.torRoute('198.19.0.0/24'), null);
    assert.equal(await lab.tor.bgpRoute('2001:db8:100::/64'), null);
    assert.equal(await lab.tor.torRoute('2001:db8:100::/64'), null);
    const after = (await lab.tor.bgpSummary()).find((p) => p.address === lb1.v4);
    assert.equal(after?.prefixesAccepted.ipv4, 1);
    assert.equal((await lab.tor.torRoute(VIP))?.nexthops.length, 3);
    console.log(`non-host routes 198.19.0.0/24 and 2001:db8:100::/64: UPDATE seen at the ToR after ${updated} ms, rejected (accepted prefixes from lb1 stay at 1)`);
    await g.deletePath('198.19.0.0/24');
    await g.deletePath('2001:db8:100::/64');
  });

  it('GRACEFUL_SHUTDOWN on one path: local-pref 0 at the ToR and out of ECMP, session kept', async () => {
    const lb1 = lab.balancers[0];
    const g = speakers[0];
    assert.ok(lb1 && g);
    await g.addPath(VIP, { communities: ['65000:100', '65535:0'] });
    const out = await lab.tor.waitNexthops(VIP, 2, 5000, 10);
    const gshut = (await lab.tor.bgpRoute(VIP))?.paths.find((p) => p.peer === lb1.v4);
    assert.equal(gshut?.localPref, 0);
    assert.ok(gshut?.communities.includes('65535:0'));
    assert.equal(gshut?.multipath, false);
    assert.ok((await lab.tor.bgpSummary()).find((p) => p.address === lb1.v4)?.established);
    await g.addPath(VIP, { communities: ['65000:100'] });
    const back = await lab.tor.waitNexthops(VIP, 3, 5000, 10);
    console.log(`GRACEFUL_SHUTDOWN: lb1 out of the ToR's kernel ECMP ${out} ms after the gobgp CLI returned; back ${back} ms after it was removed`);
  });

  it('the etcd cluster is healthy from the client namespace, across the ToR', async () => {
    const r = await lab.exec(lab.client.name, ['etcdctl', '--endpoints', '198.18.21.2:2379', 'endpoint', 'health'], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, /198\.18\.21\.2:2379 is healthy/);
    const all = await lab.etcd?.health();
    assert.equal(all?.code, 0, all?.stderr);
    console.log(`etcdctl from ${lab.client.name}: ${(r.stdout + r.stderr).trim()}`);
  });

  it('sweepStale() removes a dead run\'s namespace and leaves the live lab alone', async () => {
    const dead = spawnSync('true');
    assert.ok(dead.pid && !isAlive(dead.pid));
    const stale = `vl${dead.pid.toString(36)}-zzzz-tor`;
    await run(['ip', 'netns', 'add', stale]);
    const r = await sweepStale();
    const left = await listNamespaces();
    assert.ok(r.namespaces.includes(stale));
    assert.ok(!left.includes(stale));
    for (const ns of lab.netns.namespaces) assert.ok(left.includes(ns), `${ns} was swept while its lab is alive`);
  });

  it('destroy() leaves no namespace, no process and no temp dir behind', async () => {
    const pids = new Set<number>(lab.netns.processes.map((p) => p.pid));
    for (const node of lab.netns.nodes) for (const pid of await lab.netns.nsPids(node)) pids.add(pid);
    assert.ok(pids.size >= 2 + 3 + 3, `expected zebra, bgpd, 3 etcd and 3 gobgpd, found ${pids.size} pids`);
    const t0 = performance.now();
    const report = await lab.destroy();
    const ms = Math.round(performance.now() - t0);
    assert.deepEqual(report.leftovers, []);
    const left = (await listNamespaces()).filter((ns) => ns.startsWith(`${lab.id}-`));
    assert.deepEqual(left, []);
    for (const pid of pids) assert.ok(!isAlive(pid), `pid ${pid} survived destroy()`);
    assert.ok(!fs.existsSync(lab.dir) || process.env.VIPD_LAB_KEEP_LOGS === '1');
    console.log(`destroy(): ${pids.size} processes and ${report.namespaces.length} namespaces gone in ${ms} ms`);
  });
});
