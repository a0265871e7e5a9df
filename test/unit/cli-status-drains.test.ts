import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderStatus } from '../../src/cli/status-table';
import type { DaemonStatus } from '../../src/control/control';

const backend = { health: 'healthy', since: '2026-12-06T07:00:00.000Z', activeConnections: 0, totalConnections: 0, connectErrors: 0 };

test('vipd status shows who drained the node and each backend, and that a drain was restored from the state file', () => {
  const status: DaemonStatus = {
    node: 'lb1',
    version: '0.1.0',
    drained: true,
    drain: { drainedBy: 'admin socket /run/vipd/lb1.sock', drainedAt: '2026-12-06T07:04:23.253Z', restoredFrom: '/var/lib/vipd/lb1.state.json' },
    shuttingDown: false,
    vips: [],
    pools: [
      {
        name: 'etcd',
        healthy: 2,
        backends: [
          { ...backend, address: '198.18.21.2:2379', drained: true, drain: { drainedBy: 'admin http 127.0.0.1:9180', drainedAt: '2026-12-06T07:05:00.000Z' } },
          { ...backend, address: '198.18.22.2:2379', drained: false },
        ],
      },
    ],
    peers: [],
  };
  const text = renderStatus(status);
  assert.match(text, /^node\s+admin socket \/run\/vipd\/lb1\.sock at 2026-12-06T07:04:23\.253Z \(restored from \/var\/lib\/vipd\/lb1\.state\.json\)$/m);
  assert.match(text, /^backend etcd 198\.18\.21\.2:2379\s+admin http 127\.0\.0\.1:9180 at 2026-12-06T07:05:00\.000Z$/m);
  assert.doesNotMatch(text, /198\.18\.22\.2:2379\s+admin/);
});

test('vipd status has no drain table when nothing is drained', () => {
  const text = renderStatus({ node: 'lb1', version: '0.1.0', drained: false, shuttingDown: false, vips: [], pools: [], peers: [] });
  assert.doesNotMatch(text, /DRAINED/);
});
