import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createLab, REPO_ROOT, sleep, waitFor, type Lab } from '../lab';
import type { FlowResult } from '../fakes/ecmp-flows-client';

/**
 * T20, ECMP rehash, asserted from the FRR ToR and a real client: 3 balancers, 600 long-lived flows to
 * echo servers on be1..be3 (their first line names the balancer that proxied the flow). lb3 loses its
 * backends (nft in its namespace drops them), so its health withdraws it; they come back at once, and
 * it is re-announced after the hold-down.
 */
const VIP = '198.19.0.10';
const PREFIX = `${VIP}/32`;
const PORT = 7001;
const FLOWS = 600;
const HOLD_DOWN_MS = 5000;
const CLIENT_JS = join(REPO_ROOT, 'dist', 'test', 'fakes', 'ecmp-flows-client.js');

let lab: Lab;

async function nexthops(): Promise<string[]> {
  return ((await lab.tor.torRoute(PREFIX))?.nexthops ?? []).map((n) => n.gateway).sort();
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'integration tests need root: they create network namespaces');
  lab = await createLab({ balancers: 3, backends: 'none' });
  const echo = `require('net').createServer((s) => { s.on('error', () => {}); s.write(s.remoteAddress + '\\n'); s.pipe(s); }).listen(${PORT}, process.argv[1])`;
  for (const be of lab.backends) lab.spawn(be.name, [process.execPath, '-e', echo, be.v4], { name: 'echo' });
  for (const lb of lab.balancers) {
    const file = lab.writeVipdConfig(lb.name, {
      announce: { holdDown: `${HOLD_DOWN_MS}ms` },
      shutdown: { grace: '0s' },
      vips: [{ name: 'control-plane', address: VIP, communities: ['65000:100'], listeners: [{ port: PORT, pool: 'echo' }] }],
      pools: {
        etcd: null,
        echo: { backends: lab.backends.map((b) => `${b.v4}:${PORT}`), timeouts: { firstByte: '0s' }, check: { kind: 'tcp', interval: '200ms', timeout: '150ms', rise: 2, fall: 2 } },
      },
    });
    lab.startVipd(lb.name, file);
  }
  await lab.tor.waitNexthops(PREFIX, 3, 40_000);
});

after(async () => {
  await lab?.destroy();
});

test(`T20: ${FLOWS} long-lived flows over 3 balancers; one withdrawn and re-added after the hold-down: its flows end by RST, none times out; the share of the others moved is reported`, async () => {
  const lb3 = lab.balancer('lb3');
  const run = lab.exec('client', [process.execPath, CLIENT_JS, '--target', `${VIP}:${PORT}`, '--flows', String(FLOWS), '--duration', '30000'], { timeoutMs: 60_000 });
  await sleep(6000);
  const block = ['nft', '-f', '-'];
  // New connections only: lb3's established flows keep their upstreams, so what breaks them is the ToR.
  const rules = `table inet t20 {\n chain out {\n  type filter hook output priority 0;\n  ip daddr 198.18.0.0/15 tcp dport ${PORT} ct state new drop\n }\n}\n`;
  const withdrawAt = Date.now();
  const blocked = await lab.exec('lb3', block, { input: rules });
  assert.equal(blocked.code, 0, blocked.stderr);
  await waitFor(async () => !(await nexthops()).includes(lb3.v4), 5000, 10, 'lb3 withdrawn');
  const goneAt = Date.now();
  await sleep(1000);
  assert.equal((await lab.exec('lb3', ['nft', 'delete', 'table', 'inet', 't20'])).code, 0);
  await waitFor(async () => (await nexthops()).includes(lb3.v4), 20_000, 10, 'lb3 re-announced');
  const backAt = Date.now();
  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { started: number; flows: FlowResult[] };
  const flows = report.flows;
  const established = flows.filter((f) => f.balancer !== '');
  const ofLb3 = established.filter((f) => f.balancer === lb3.v4);
  const others = established.filter((f) => f.balancer !== lb3.v4);
  const brokeBetween = (list: FlowResult[], from: number, to: number) => list.filter((f) => f.endedAt !== undefined && f.endedAt >= from && f.endedAt < to);
  const lb3Broken = ofLb3.filter((f) => f.ended !== undefined);
  const timeouts = established.filter((f) => f.ended === 'timeout');
  const othersOnWithdraw = brokeBetween(others, withdrawAt, backAt);
  const othersOnReAdd = brokeBetween(others, backAt, Date.now());
  const share = (n: number, of: number) => `${n}/${of} (${of ? ((100 * n) / of).toFixed(1) : '0'} %)`;
  console.log(
    `T20: ${established.length}/${FLOWS} flows (lb1 ${established.filter((f) => f.balancer === lab.balancer('lb1').v4).length}, lb2 ${established.filter((f) => f.balancer === lab.balancer('lb2').v4).length}, lb3 ${ofLb3.length}); ` +
      `lb3 withdrawn at the ToR ${goneAt - withdrawAt} ms after its backends were cut, back ${backAt - goneAt} ms after it left (hold-down ${HOLD_DOWN_MS} ms); ` +
      `lb3's flows ended: ${share(lb3Broken.length, ofLb3.length)}, by ${JSON.stringify(countBy(lb3Broken.map((f) => f.ended!)))}; timeouts ${timeouts.length} (bound 0); ` +
      `other flows broken on the withdraw ${share(othersOnWithdraw.length, others.length)} (RELIABILITY.md: 0; see below), moved on the re-add ${share(othersOnReAdd.length, others.length)} (reported; DESIGN.md: ~25 % with Linux hash-threshold)`,
  );
  // Where the ends fall: per balancer, how, and in which second relative to the cut of lb3's backends.
  const timeline = countBy(established.filter((f) => f.endedAt !== undefined).map((f) => `${f.balancer === lb3.v4 ? 'lb3' : 'other'} ${f.ended} @${Math.floor((f.endedAt! - withdrawAt) / 1000)}s`));
  console.log(`T20 timeline (s after the cut; lb3 left the ToR at ${((goneAt - withdrawAt) / 1000).toFixed(1)} s, came back at ${((backAt - withdrawAt) / 1000).toFixed(1)} s): ${JSON.stringify(timeline)}`);
  assert.ok(established.length >= FLOWS * 0.95, 'the flows were established');
  assert.ok(ofLb3.length > 0, 'lb3 carried flows');
  // Seen at the ToR, both edges carry BGP and FIB latency (100-300 ms each, polled every 10 ms): the
  // gap may read up to that much short of the hold-down vipd kept.
  assert.ok(backAt - goneAt >= HOLD_DOWN_MS - 300, `re-announced ${backAt - goneAt} ms after the withdraw, before the hold-down`);
  assert.equal(timeouts.length, 0, 'no flow black-holed');
  assert.ok(lb3Broken.every((f) => f.ended === 'rst'), `lb3's flows end by RST: ${JSON.stringify(countBy(lb3Broken.map((f) => f.ended!)))}`);
  // RELIABILITY.md says "only its flows break". That is the ToR's hashing, not vipd: Linux hash-threshold
  // ECMP (FRR 8.4's zebra installs plain multipath routes) re-splits the hash range when a next hop
  // leaves, so part of the other balancers' flows land on a balancer without their socket and are reset.
  // Printed as the figure it is, not asserted: nothing vipd does can change it (resilient next-hop
  // groups at the ToR would). What vipd controls is asserted above: RST, never a black hole, hold-down.
  console.log(
    `T20: other balancers' flows broken when lb3 left: ${share(othersOnWithdraw.length, others.length)} — RELIABILITY.md's "only its flows break" is ${othersOnWithdraw.length === 0 ? 'met' : 'NOT met by this ToR (Linux hash-threshold ECMP re-splits the range; a ToR property, see the comment)'}; every one of them ended by ${JSON.stringify(countBy(othersOnWithdraw.map((f) => f.ended!)))}`,
  );
  assert.ok(othersOnWithdraw.every((f) => f.ended === 'rst'), 'even the moved flows of other balancers end by RST, never a black hole');
});

function countBy(values: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}
