import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderStatus } from '../../src/cli/status-table';
import type { DaemonStatus } from '../../src/control/control';

test('vipd status: per peer, the session source, its state and every prefix in its adj-RIB-out (the local router accepting the path)', () => {
  const s: DaemonStatus = {
    node: 'lb1',
    version: 't',
    drained: false,
    shuttingDown: false,
    vips: [],
    pools: [],
    peers: [
      { address: '198.18.1.2', asn: 65001, state: 'established', since: 't', families: ['ipv4-unicast'], advertised: ['198.19.0.10/32', '198.19.0.11/32'], localAddress: '198.18.200.1' },
      { address: '198.18.1.1', asn: 65000, state: 'active', since: 't', families: ['ipv4-unicast'], advertised: [] },
    ],
  };
  const text = renderStatus(s);
  assert.match(text, /^PEER +FROM +SESSION +SENT \(ADJ-RIB-OUT\)$/m);
  assert.match(text, /^198\.18\.1\.2 +198\.18\.200\.1 +established +198\.19\.0\.10\/32$/m);
  assert.match(text, /^198\.18\.1\.2 +198\.18\.200\.1 +established +198\.19\.0\.11\/32$/m);
  assert.match(text, /^198\.18\.1\.1 +- +active +-$/m);
});
