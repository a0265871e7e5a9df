import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig, type Config } from '../../src/config/config';
import type { ConfigChanges } from '../../src/config/diff';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { ConfigReloader, type Refusal, type ReloadTarget } from '../../src/reload';
import { oneVipOnePool } from '../fakes/config-fixtures';

const base = `node:
  name: lb1
speaker:
  driver: gobgp
  asn: 65001
  routerId: 198.18.1.2
  peers:
    - address: 198.18.1.1
      asn: 65000
${oneVipOnePool({ vipName: 'cp', backends: ['198.18.21.2:2379', '198.18.22.2:2379'] })}`;

/** A target that records applies and can refuse; its config moves only when apply runs. */
class FakeTarget implements ReloadTarget {
  config: Config = parseConfig(base, 'start.yaml');
  readonly applied: ConfigChanges[] = [];
  refuse: Refusal[] = [];
  failApply = false;
  refusals(): readonly Refusal[] {
    return this.refuse;
  }
  async apply(next: Config, changes: ConfigChanges): Promise<void> {
    if (this.failApply) throw new Error('injected apply failure');
    this.applied.push(changes);
    this.config = next;
  }
}

function setup(file: () => string | Error) {
  const target = new FakeTarget();
  const metrics = createMetrics();
  const reloader = new ConfigReloader({
    file: '/etc/vipd/vipd.yaml',
    target,
    logger: silentLogger(),
    metrics,
    read: async () => {
      const text = file();
      if (text instanceof Error) throw text;
      return text;
    },
  });
  const counted = async (result: string) => (await metrics.configReloads.get()).values.find((v) => v.labels.result === result)?.value ?? 0;
  return { target, reloader, counted };
}

/** Bad files: each is rejected, names its key and line, changes nothing, and is counted. */
const rejected: Array<{ name: string; file: string | Error; key: string; line: number }> = [
  { name: 'unreadable file', file: Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' }), key: '(file)', line: 0 },
  { name: 'broken YAML', file: base.replace('vips:', 'vips: [\n'), key: '(yaml)', line: 12 },
  { name: 'schema error', file: base.replace('asn: 65000', 'asn: -1'), key: 'speaker.peers[0].asn', line: 9 },
  { name: 'unknown key', file: base.replace('  name: lb1', '  name: lb1\n  colour: blue'), key: 'node.colour', line: 3 },
  { name: 'VIP that is not a host address', file: base.replace('address: 198.19.0.10', 'address: 198.19.0.0/24'), key: 'vips[0].address', line: 12 },
  { name: 'backend equal to the VIP', file: base.replace('"198.18.22.2:2379"', '"198.19.0.10:2379"'), key: 'pools.etcd.backends[1]', line: 18 },
  { name: 'restart needed: node.name', file: base.replace('name: lb1', 'name: lb2'), key: 'node.name', line: 2 },
  { name: 'restart needed: speaker.asn', file: base.replace('asn: 65001', 'asn: 65009'), key: 'speaker.asn', line: 5 },
];

for (const c of rejected) {
  test(`reload rejects ${c.name}: key and line named, counted, nothing applied`, async () => {
    const { target, reloader, counted } = setup(() => c.file);
    const before = target.config;
    const result = await reloader.reload('test');
    assert.equal(result.result, 'rejected');
    assert.ok(result.result === 'rejected');
    const issue = result.issues.find((i) => i.path === c.key);
    assert.ok(issue, `issues name ${c.key}: ${JSON.stringify(result.issues)}`);
    assert.equal(issue.line, c.line, `line of ${c.key}`);
    if (c.key === 'node.name' || c.key === 'speaker.asn') assert.match(result.reason, /restart needed/);
    assert.equal(target.config, before, 'the old config keeps serving');
    assert.equal(target.applied.length, 0);
    assert.equal(await counted('rejected'), 1);
    assert.equal(await counted('applied'), 0);
  });
}

test('reload: a refusal by the target (e.g. workers) is a rejection too', async () => {
  const { target, reloader, counted } = setup(() => base.replace('"198.18.22.2:2379"]', '"198.18.23.2:2379"]'));
  target.refuse = [{ key: 'pools.etcd', path: ['pools', 'etcd'], message: 'restart needed: workers' }];
  const result = await reloader.reload('test');
  assert.equal(result.result, 'rejected');
  assert.ok(result.result === 'rejected');
  assert.deepEqual(result.issues.map((i) => [i.path, i.line]), [['pools.etcd', 17]], 'the refused key is located in the file');
  assert.equal(target.applied.length, 0);
  assert.equal(await counted('rejected'), 1);
});

test('reload: the same file is unchanged; an edited one is applied with its summary; counters per result', async () => {
  let text = base;
  const { target, reloader, counted } = setup(() => text);
  assert.equal((await reloader.reload('SIGHUP')).result, 'unchanged');
  assert.equal(target.applied.length, 0);
  text = base.replace('"198.18.22.2:2379"]', '"198.18.23.2:2379"]');
  const result = await reloader.reload('SIGHUP');
  assert.equal(result.result, 'applied');
  assert.ok(result.result === 'applied');
  assert.equal(result.summary, 'pools ~etcd(+198.18.23.2:2379,-198.18.22.2:2379)');
  assert.equal(target.applied.length, 1);
  assert.equal(await counted('unchanged'), 1);
  assert.equal(await counted('applied'), 1);
  assert.equal(await counted('rejected'), 0);
});

test('reload: an apply that throws is reported as failed and counted', async () => {
  const { target, reloader, counted } = setup(() => base.replace('"198.18.22.2:2379"]', '"198.18.23.2:2379"]'));
  target.failApply = true;
  const result = await reloader.reload('test');
  assert.equal(result.result, 'failed');
  assert.equal(await counted('failed'), 1);
});

test('reload: two reloads at once run one after the other', async () => {
  const { target, reloader } = setup(() => base.replace('"198.18.22.2:2379"]', '"198.18.23.2:2379"]'));
  const [first, second] = await Promise.all([reloader.reload('a'), reloader.reload('b')]);
  assert.equal(first.result, 'applied');
  assert.equal(second.result, 'unchanged', 'the second one sees the first one applied');
  assert.equal(target.applied.length, 1);
});
