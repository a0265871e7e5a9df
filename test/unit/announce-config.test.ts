import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { parseDrainBody, parseGrace } from '../../src/control/drain-request';
import { AdminInputError } from '../../src/control/control';
import { assertConfigRefused } from '../fakes/config-fixtures';

/** Issue 10 "Bad input": refused at load with the key and the line; and the drain request bodies. */

const dir = mkdtempSync(path.join(tmpdir(), 'vipd-policy-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const hook = path.join(dir, 'hook.sh');
writeFileSync(hook, '#!/bin/sh\nexit 0\n');
chmodSync(hook, 0o755);
const notExecutable = path.join(dir, 'not-executable.sh');
writeFileSync(notExecutable, '#!/bin/sh\n');

/** eBGP peer (65000) unless `peerAsn` says otherwise; VIP lines start at line 13. */
function config(vip: string, { peerAsn = 65000, top = '' } = {}): string {
  return `node:
  name: lb1
speaker:
  driver: gobgp
  asn: 65001
  routerId: 198.18.1.2
  peers:
    - address: 198.18.1.1
      asn: ${peerAsn}
${top}vips:
  - name: api
    address: 198.19.0.10
${vip}    listeners:
      - port: 6443
        pool: api
pools:
  api:
    backends: ["198.18.21.2:6443", "198.18.22.2:6443", "198.18.23.2:6443"]
`;
}

test('policy config: the full form loads, with the shorthands folded into it', () => {
  const c = parseConfig(
    config(`    gate: {minHealthy: "66%", listeners: any}
    onFailure: pessimize
    attributes:
      up: {communities: ["65000:100"], largeCommunities: ["65001:1:100"], med: 10}
      pessimized: {asPathPrepend: 3, med: 100}
      draining: {communities: ["65000:999"]}
    damping: {halfLife: 10s}
`, { top: `drain: {grace: 10s, closeAfter: 30s, file: /run/vipd/disable}\nhooks: {onChange: ["${hook}", "x"], timeout: 2s}\n` }),
  );
  const v = c.vips[0]!;
  assert.deepEqual(v.gate, { minHealthy: { percent: 66 }, listeners: 'any' });
  assert.equal(v.onFailure, 'pessimize');
  assert.deepEqual(v.attributes.up, { communities: ['65000:100'], largeCommunities: ['65001:1:100'], med: 10, asPathPrepend: 0 });
  assert.equal(v.attributes.pessimized!.asPathPrepend, 3);
  assert.equal(v.damping.halfLife, 10_000);
  assert.equal(v.damping.suppress, 2000);
  assert.deepEqual(c.drain, { grace: 10_000, closeAfter: 30_000, file: '/run/vipd/disable' });
  assert.deepEqual(c.hooks, { onChange: [hook, 'x'], timeout: 2000 });

  const short = parseConfig(config(`    communities: ["65000:7"]\n    med: 5\n    minHealthyBackends: 2\n`)).vips[0]!;
  assert.deepEqual(short.attributes.up, { communities: ['65000:7'], largeCommunities: [], asPathPrepend: 0, med: 5 });
  assert.deepEqual(short.gate, { minHealthy: 2, listeners: 'all' });
  assert.equal(short.onFailure, 'withdraw');
  const defaults = parseConfig(config(''));
  assert.equal(defaults.drain.grace, 5000);
  assert.equal(defaults.drain.closeAfter, undefined);
  assert.equal(defaults.vips[0]!.damping.enabled, true);
});

const bad: Array<[string, string, { peerAsn?: number; top?: string }, string, number, RegExp]> = [
  ['a percentage over 100', `    gate: {minHealthy: "150%"}\n`, {}, 'vips[0].gate.minHealthy', 13, /not a percentage/],
  ['minHealthy above the pool size', `    gate: {minHealthy: 4}\n`, {}, 'vips[0].gate.minHealthy', 13, /above the size of pool "api" \(3 backends\)/],
  ['minHealthyBackends above the pool size', `    minHealthyBackends: 5\n`, {}, 'vips[0].minHealthyBackends', 13, /above the size/],
  ['gate and its shorthand together', `    minHealthyBackends: 1\n    gate: {minHealthy: 2}\n`, {}, 'vips[0].minHealthyBackends', 13, /shorthand/],
  ['a negative prepend', `    attributes:\n      pessimized: {asPathPrepend: -1}\n`, {}, 'vips[0].attributes.pessimized.asPathPrepend', 14, /0\.\.10/],
  ['a too-large prepend', `    attributes:\n      pessimized: {asPathPrepend: 11}\n`, {}, 'vips[0].attributes.pessimized.asPathPrepend', 14, /0\.\.10/],
  ['a prepend toward an iBGP peer', `    attributes:\n      pessimized: {asPathPrepend: 2}\n`, { peerAsn: 65001 }, 'vips[0].attributes.pessimized.asPathPrepend', 14, /iBGP/],
  ['a community out of range', `    attributes:\n      up: {communities: ["65536:1"]}\n`, {}, 'vips[0].attributes.up.communities[0]', 14, /not a community/],
  ['a large community out of range', `    attributes:\n      up: {largeCommunities: ["4294967296:1:1"]}\n`, {}, 'vips[0].attributes.up.largeCommunities[0]', 14, /not a large community/],
  ['a large community with two parts', `    attributes:\n      draining: {largeCommunities: ["65000:1"]}\n`, {}, 'vips[0].attributes.draining.largeCommunities[0]', 14, /not a large community/],
  ['localPref on an eBGP-only config', `    attributes:\n      pessimized: {localPref: 50}\n`, {}, 'vips[0].attributes.pessimized.localPref', 14, /iBGP peers only/],
  ['communities and attributes.up together', `    communities: ["65000:1"]\n    attributes:\n      up: {med: 1}\n`, {}, 'vips[0].communities', 13, /shorthand/],
  ['a missing hook', '', { top: `hooks: {onChange: ["${path.join(dir, 'nope.sh')}"]}\n` }, 'hooks.onChange[0]', 10, /does not exist/],
  ['a hook that is not executable', '', { top: `hooks: {onChange: ["${notExecutable}"]}\n` }, 'hooks.onChange[0]', 10, /is not executable/],
  ['a hook not in PATH', '', { top: 'hooks: {onChange: ["vipd-no-such-hook-anywhere"]}\n' }, 'hooks.onChange[0]', 10, /not an executable file in PATH/],
  ['a drain grace above 1 h', '', { top: 'drain: {grace: 2h}\n' }, 'drain.grace', 10, /out of range/],
  ['a drain grace below 0', '', { top: 'drain: {grace: -1s}\n' }, 'drain.grace', 10, /not a duration/],
  ['reuse not below suppress', `    damping: {suppress: 1000, reuse: 1000}\n`, {}, 'vips[0].damping.reuse', 13, /below suppress/],
  ['an unknown onFailure', `    onFailure: blackhole\n`, {}, 'vips[0].onFailure', 13, /withdraw \| pessimize/],
];

for (const [name, vip, opts, key, line, message] of bad) {
  test(`policy config refuses: ${name}`, () => assertConfigRefused(config(vip, opts), key, line, message));
}

test('drain requests: {vip, grace} are checked before anything changes', () => {
  assert.deepEqual(parseDrainBody({}, true), {});
  assert.deepEqual(parseDrainBody({ vip: 'api', grace: '10s' }, true), { vip: 'api', graceMs: 10_000 });
  assert.deepEqual(parseDrainBody({ grace: '0s' }, true), { graceMs: 0 });
  const refused = (body: Record<string, unknown>, withGrace: boolean, re: RegExp) =>
    assert.throws(() => parseDrainBody(body, withGrace), (e: unknown) => e instanceof AdminInputError && e.status === 400 && re.test(e.message));
  refused({ grace: '2h' }, true, /out of range \(0s\.\.1h\)/);
  refused({ grace: '-5s' }, true, /below 0/);
  refused({ grace: 5 }, true, /duration string/);
  refused({ grace: 'soon' }, true, /not a duration/);
  refused({ vip: '' }, true, /VIP name/);
  refused({ vip: 3 }, true, /VIP name/);
  refused({ grace: '1s' }, false, /unknown field\(s\) "grace"/);
  refused({ pool: 'x' }, true, /unknown field\(s\) "pool"/);
  assert.deepEqual(parseGrace('1h'), { graceMs: 3_600_000 });
});

test('per-VIP drains persist in the state file next to node and backend drains, and files without them still load', async () => {
  const { DrainStateFile } = await import('../../src/state/drain-state-file');
  const { readFileSync } = await import('node:fs');
  const stateDir = mkdtempSync(path.join(tmpdir(), 'vipd-policy-state-'));
  try {
    const store = new DrainStateFile(stateDir, 'lb1');
    const vips = [{ vip: 'etcd', source: 'admin socket /run/vipd/lb1.sock', at: '2026-12-06T08:00:00.000Z' }];
    await store.save({ backends: [], vips });
    assert.deepEqual(await store.load(), { backends: [], vips });
    assert.deepEqual((JSON.parse(readFileSync(store.file, 'utf8')) as { vipDrains: unknown }).vipDrains, vips);
    await store.save({ backends: [] });
    assert.equal('vipDrains' in (JSON.parse(readFileSync(store.file, 'utf8')) as object), false, 'no key when no VIP is drained: older vipd versions read the file');
    assert.deepEqual(await store.load(), { backends: [] });
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
});

test('vipd status shows each drain with its phase and deadlines, and the damping penalty', async () => {
  const { renderStatus } = await import('../../src/cli/status-table');
  const text = renderStatus({
    node: 'lb1',
    version: 't',
    drained: true,
    shuttingDown: false,
    vips: [{ name: 'api', prefix: '198.19.0.10/32', state: 'draining', reason: 'draining', detail: 'd', since: 's', penalty: 1806, suppressedUntil: '2026-12-06T08:01:00.000Z', listeners: [], peers: [] }],
    pools: [],
    peers: [],
    drains: [{ target: 'node', phase: 'grace', drainedBy: 'vipd drain', drainedAt: '2026-12-06T08:00:00.000Z', graceUntil: '2026-12-06T08:00:05.000Z', closeAt: '2026-12-06T08:00:30.000Z' }],
  });
  assert.match(text, /DRAIN\s+PHASE\s+GRACE UNTIL\s+CLOSE AT\s+BY/);
  assert.match(text, /node\s+grace\s+2026-12-06T08:00:05\.000Z\s+2026-12-06T08:00:30\.000Z\s+vipd drain at/);
  assert.match(text, /api\s+198\.19\.0\.10\/32\s+draining\s+draining\s+s\s+1806 \(until 2026-12-06T08:01:00\.000Z\)/);
});
