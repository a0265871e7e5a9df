import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { ConfigError } from '../../src/lib/errors';

function config(pool: string, extra = '', listener = ''): string {
  return `node:
  name: lb1
speaker:
  driver: none
${extra}vips:
  - name: cp
    address: 198.19.0.10
    listeners:
      - port: 2379
        pool: etcd
        dataPath: kernel
${listener}pools:
  etcd:
    backends: ["198.18.21.2:2379", "198.18.22.2:2379"]
${pool}`;
}

function refused(text: string, key: string, reason: RegExp): void {
  assert.throws(
    () => parseConfig(text, 'vipd.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      const issue = err.issues.find((i) => i.path === key);
      assert.ok(issue, `no issue at ${key}: ${err.message}`);
      assert.match(issue.message, reason);
      assert.ok(issue.line > 0);
      return true;
    },
  );
}

describe('config: dataPath kernel', () => {
  it('defaults: proxy; a kernel pool defaults to retryBeforeReply off and firstByte 0s (it can do neither)', () => {
    const c = parseConfig(config(''));
    assert.equal(c.vips[0]!.listeners[0]!.dataPath, 'kernel');
    assert.equal(c.pools.etcd!.retryBeforeReply, 'off');
    assert.equal(c.pools.etcd!.timeouts.firstByte, 0);
    assert.equal(c.kernel.table, 'vipd');
    const proxy = parseConfig(config('').replace('        dataPath: kernel\n', ''));
    assert.equal(proxy.vips[0]!.listeners[0]!.dataPath, 'proxy');
    assert.equal(proxy.pools.etcd!.retryBeforeReply, 'tls');
    assert.equal(proxy.pools.etcd!.timeouts.firstByte, 10_000);
  });

  const cases: Array<[string, string, string, RegExp, string?, string?]> = [
    ['least-conn', '    balance: least-conn\n', 'pools.etcd.balance', /least-conn picks on each backend's open connections/],
    ['random-two', '    balance: random-two\n', 'pools.etcd.balance', /random-two picks on each backend's open connections/],
    ['retryBeforeReply', '    retryBeforeReply: tls\n', 'pools.etcd.retryBeforeReply', /the kernel cannot retry/],
    ['queue', '    queue: {size: 10}\n', 'pools.etcd.queue.size', /no queue in the kernel data path/],
    ['firstByte', '    timeouts: {firstByte: 5s}\n', 'pools.etcd.timeouts.firstByte', /cannot wait for the first one/],
    ['idle timeout', '    timeouts: {idle: 5m}\n', 'pools.etcd.timeouts.idle', /cannot time them out/],
    ['slow start', '    slowStart: 10s\n', 'pools.etcd.slowStart', /slow start/],
    ['per-backend cap', '    maxConnectionsPerBackend: 10\n', 'pools.etcd.maxConnectionsPerBackend', /cannot cap/],
    ['per-source cap', '', 'proxy.maxConnectionsPerSource', /per-source caps are counted by the proxy/, 'proxy:\n  maxConnectionsPerSource: 10\n'],
    ['listener cap', '', 'vips[0].listeners[0].maxConnections', /connection cap needs vipd to see each connection/, '', '        maxConnections: 100\n'],
  ];
  for (const [name, pool, key, reason, extra, listener] of cases) {
    it(`refuses ${name}, naming ${key} and the reason`, () => refused(config(pool, extra ?? '', listener ?? ''), key, reason));
  }

  it('refuses a loopback backend: DNAT to 127/8 needs route_localnet', () => {
    const text = config('').replace('["198.18.21.2:2379", "198.18.22.2:2379"]', '["127.0.0.1:2379", "198.18.22.2:2379"]');
    refused(text, 'pools.etcd.backends[0]', /route_localnet/);
  });

  it('refuses a backend of the other family (DNAT cannot change it)', () => {
    const text = config('').replace('["198.18.21.2:2379", "198.18.22.2:2379"]', '["[2001:db8:21::2]:2379"]');
    refused(text, 'pools.etcd.backends[0]', /cannot change the address family/);
  });

  it('refuses a table name nft would not take', () => {
    refused(config('', 'kernel:\n  table: "no such"\n'), 'kernel.table', /a table name/);
  });

  it('the same settings on a proxy listener are accepted', () => {
    const text = config('    balance: least-conn\n    retryBeforeReply: tls\n    queue: {size: 10}\n').replace('        dataPath: kernel\n', '');
    assert.equal(parseConfig(text).pools.etcd!.balance, 'least-conn');
  });
});
