import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderStatus } from '../../src/cli/status-table';
import type { DaemonStatus } from '../../src/control/control';
import { DriftTracker } from '../../src/speaker/gobgp/drift';

const base: DaemonStatus = { node: 'lb1', version: '0.1.0', drained: false, shuttingDown: false, vips: [], pools: [], peers: [] };
const peer = { address: '198.18.1.1', asn: 65000, state: 'established', since: '2026-12-06T07:00:00.000Z', families: ['ipv4-unicast'], negotiated: ['ipv4-unicast'] };

test('vipd status shows per peer what it was sent next to what vipd wants, and a drift', () => {
  const text = renderStatus({
    ...base,
    peers: [{ ...peer, advertised: ['198.19.0.11/32'], desired: ['198.19.0.10/32', '198.19.0.11/32'], drift: { missing: ['198.19.0.10/32'], extra: [] } }],
    speakerSync: { state: 'in-sync', since: '2026-12-06T07:00:00.000Z', pendingAdd: [], pendingDelete: [] },
  });
  assert.match(text, /PATHS SENT\s+WANTED\s+DRIFT/);
  assert.match(text, /^198\.18\.1\.1\s.*\s1\s+2\s+missing 198\.19\.0\.10\/32$/m);
  assert.doesNotMatch(text, /not applied/);
});

test('vipd status says what gobgpd has not applied, and the call it refused', () => {
  const text = renderStatus({
    ...base,
    peers: [{ ...peer, advertised: [], desired: ['198.19.0.10/32'] }],
    speakerSync: {
      state: 'failing',
      since: '2026-12-06T07:01:00.000Z',
      pendingAdd: ['198.19.0.10/32'],
      pendingDelete: ['198.19.0.12/32'],
      lastError: { at: '2026-12-06T07:01:00.000Z', call: 'AddPath 198.19.0.10/32', reply: 'gobgp AddPath: INVALID_ARGUMENT: bad' },
    },
  });
  assert.match(text, /^speaker failing since 2026-12-06T07:01:00\.000Z: not applied: \+198\.19\.0\.10\/32 -198\.19\.0\.12\/32; last refused: AddPath 198\.19\.0\.10\/32: gobgp AddPath: INVALID_ARGUMENT: bad$/m);
});

test('DriftTracker: case table of readings', () => {
  const ours = new Set(['198.19.0.10/32', '198.19.0.11/32']);
  const cases: ReadonlyArray<{ name: string; readings: ReadonlyArray<{ expected: string[]; sent: string[]; interrupt?: boolean }>; confirmed: string[] }> = [
    { name: 'in agreement', readings: [{ expected: ['198.19.0.10/32'], sent: ['198.19.0.10/32'] }, { expected: ['198.19.0.10/32'], sent: ['198.19.0.10/32'] }], confirmed: [] },
    { name: 'missing twice', readings: [{ expected: ['198.19.0.10/32'], sent: [] }, { expected: ['198.19.0.10/32'], sent: [] }], confirmed: ['missing 198.19.0.10/32'] },
    { name: 'missing once', readings: [{ expected: ['198.19.0.10/32'], sent: [] }, { expected: ['198.19.0.10/32'], sent: ['198.19.0.10/32'] }], confirmed: [] },
    { name: 'interrupted between', readings: [{ expected: ['198.19.0.10/32'], sent: [] }, { expected: ['198.19.0.10/32'], sent: [], interrupt: true }], confirmed: [] },
    { name: 'extra of ours twice', readings: [{ expected: [], sent: ['198.19.0.11/32'] }, { expected: [], sent: ['198.19.0.11/32'] }], confirmed: ['extra 198.19.0.11/32'] },
    { name: 'extra not ours', readings: [{ expected: [], sent: ['0.0.0.0/0'] }, { expected: [], sent: ['0.0.0.0/0'] }], confirmed: [] },
  ];
  for (const c of cases) {
    const tracker = new DriftTracker();
    const confirmed: string[] = [];
    for (const r of c.readings) {
      if (r.interrupt) tracker.interrupt();
      confirmed.push(...tracker.observe('198.18.1.1', r.expected, r.sent, ours).confirmed.map((d) => `${d.kind} ${d.prefix}`));
    }
    assert.deepEqual(confirmed, c.confirmed, c.name);
  }
});
