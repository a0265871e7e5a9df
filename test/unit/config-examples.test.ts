import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { loadConfigFile } from '../../src/config/config';

/** The examples name a kubeadm node's files (CA, client certificates), which this machine does not have. */
const EXAMPLE = { checkFiles: false } as const;
import { requirePrerequisites } from '../fakes/prerequisites';
import { validateJsonSchema, type JsonSchema } from '../fakes/json-schema-check';

const root = path.join(__dirname, '..', '..', '..');
const configDir = path.join(root, 'config');
const SCHEMA_LINE = '# yaml-language-server: $schema=./vipd.schema.json';
const examples = fs.readdirSync(configDir).filter((f) => f.endsWith('.yaml'));

describe('example configs (config/*.yaml)', () => {
  it('include the dedicated-balancer and stacked kubeadm examples', () => {
    for (const name of ['vipd.yaml', 'vipd.full.yaml', 'kubeadm-dedicated.yaml', 'kubeadm-stacked.yaml']) assert.ok(examples.includes(name), name);
  });

  for (const name of examples) {
    it(`${name}: names the schema on its first line, loads with the daemon's loader, and validates against config/vipd.schema.json`, () => {
      const file = path.join(configDir, name);
      const text = fs.readFileSync(file, 'utf8');
      assert.equal(text.split('\n')[0], SCHEMA_LINE);
      assert.ok(fs.existsSync(path.join(configDir, 'vipd.schema.json')), 'the relative schema path resolves');
      const config = loadConfigFile(file, EXAMPLE);
      assert.ok(config.vips.length >= 1);
      const schema = JSON.parse(fs.readFileSync(path.join(configDir, 'vipd.schema.json'), 'utf8')) as JsonSchema;
      assert.deepEqual(validateJsonSchema(schema, parse(text)), []);
    });
  }

  it('kubeadm-dedicated: apiserver 6443 checked on /readyz over https with the cluster CA; etcd 2379 with a client certificate', () => {
    const config = loadConfigFile(path.join(configDir, 'kubeadm-dedicated.yaml'), EXAMPLE);
    const ports = config.vips[0]!.listeners.map((l) => l.port);
    assert.deepEqual(ports, [6443, 2379]);
    const check = config.pools.apiserver!.check;
    assert.equal(check.kind, 'https');
    assert.equal(check.path, '/readyz');
    assert.equal(check.tls?.insecureSkipVerify, false);
    assert.ok(check.tls?.caFile);
    assert.equal(config.pools.etcd!.backends.length, 3);
    const etcd = config.pools.etcd!.check;
    assert.equal(etcd.kind, 'etcd');
    assert.equal(etcd.tls?.certFile, '/etc/kubernetes/pki/etcd/healthcheck-client.crt');
    assert.equal(etcd.tls?.keyFile, '/etc/kubernetes/pki/etcd/healthcheck-client.key');
    assert.equal(etcd.tls?.caFile, '/etc/kubernetes/pki/etcd/ca.crt');
  });

  it('kubeadm-stacked: one listener on 6443 to all three apiservers, this node included', () => {
    const config = loadConfigFile(path.join(configDir, 'kubeadm-stacked.yaml'), EXAMPLE);
    assert.deepEqual(config.vips[0]!.listeners.map((l) => l.port), [6443]);
    assert.ok(config.pools.apiserver!.backends.some((b) => b.endpoint.host === config.speaker.routerId), 'its own apiserver is a backend');
  });
});

describe('config/frr/tor.conf', () => {
  const text = fs.readFileSync(path.join(configDir, 'frr', 'tor.conf'), 'utf8');
  it('accepts only VIP host routes from the balancers, with ECMP, BFD, and advice on resilient hashing', () => {
    assert.match(text, /^ip prefix-list VIP-HOSTS4 seq 10 permit \S+ ge 32$/m);
    assert.match(text, /^ipv6 prefix-list VIP-HOSTS6 seq 10 permit \S+ ge 128$/m);
    assert.match(text, /neighbor LB route-map LB-IN4 in/);
    assert.match(text, /^route-map LB-OUT deny 10$/m);
    assert.match(text, /^ {2}maximum-paths \d+$/m);
    assert.match(text, /neighbor LB bfd profile balancers/);
    assert.match(text, /resilient/i);
  });

  it('is valid FRR configuration (vtysh --dryrun)', () => {
    requirePrerequisites(['vtysh']);
    const run = spawnSync('vtysh', ['--dryrun', '-f', path.join(configDir, 'frr', 'tor.conf')], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stdout + run.stderr);
    // The check can fail: a broken line is refused.
    const bad = path.join(fs.mkdtempSync(path.join(tmpdir(), 'vipd-frr-')), 'bad.conf');
    fs.writeFileSync(bad, text.replace('maximum-paths 8', 'maximum-pathz 8'));
    assert.notEqual(spawnSync('vtysh', ['--dryrun', '-f', bad], { encoding: 'utf8' }).status, 0);
  });
});

describe('packaging files (T25)', () => {
  it('config/vipd.service: user vipd, CAP_NET_ADMIN only, hardened, runtime and state directories, reload by SIGHUP', () => {
    const unit = fs.readFileSync(path.join(configDir, 'vipd.service'), 'utf8');
    const settings = new Map<string, string>();
    for (const line of unit.split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) settings.set(m[1]!, m[2]!);
    }
    const want: Record<string, string> = {
      User: 'vipd',
      AmbientCapabilities: 'CAP_NET_ADMIN',
      CapabilityBoundingSet: 'CAP_NET_ADMIN',
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      RestrictAddressFamilies: 'AF_UNIX AF_INET AF_INET6 AF_NETLINK',
      SystemCallFilter: '@system-service',
      RuntimeDirectory: 'vipd',
      StateDirectory: 'vipd',
      ExecReload: '/bin/kill -HUP $MAINPID',
    };
    for (const [key, value] of Object.entries(want)) assert.equal(settings.get(key), value, key);
  });

  it('config/vipd.service passes systemd-analyze verify (with ExecStart pointed at this checkout\'s bin/vipd)', () => {
    requirePrerequisites(['systemd-analyze']);
    const dir = fs.mkdtempSync(path.join(tmpdir(), 'vipd-unit-'));
    const unit = fs.readFileSync(path.join(configDir, 'vipd.service'), 'utf8');
    assert.ok(unit.includes('/usr/local/bin/vipd run'), 'installed path, as npm install -g puts it');
    const file = path.join(dir, 'vipd.service');
    fs.writeFileSync(file, unit.replaceAll('/usr/local/bin/vipd', path.join(root, 'bin', 'vipd')));
    const run = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr.trim(), '', 'no warnings (an unknown key is only a warning)');
    // The check can fail: an unknown key is reported.
    fs.writeFileSync(file, unit.replaceAll('/usr/local/bin/vipd', path.join(root, 'bin', 'vipd')).replace('PrivateTmp=yes', 'PrivateTmpp=yes'));
    assert.match(spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' }).stderr, /Unknown key 'PrivateTmpp'/);
  });

  it('config/gobgpd.service and the vipd drop-in for an external gobgpd pass systemd-analyze verify; the drop-in binds vipd to gobgpd', () => {
    requirePrerequisites(['systemd-analyze', 'gobgpd']);
    const dir = fs.mkdtempSync(path.join(tmpdir(), 'vipd-external-unit-'));
    const vipdBin = path.join(root, 'bin', 'vipd');
    const gobgpdBin = spawnSync('sh', ['-c', 'command -v gobgpd'], { encoding: 'utf8' }).stdout.trim();
    fs.writeFileSync(path.join(dir, 'vipd.service'), fs.readFileSync(path.join(configDir, 'vipd.service'), 'utf8').replaceAll('/usr/local/bin/vipd', vipdBin));
    fs.writeFileSync(path.join(dir, 'gobgpd.service'), fs.readFileSync(path.join(configDir, 'gobgpd.service'), 'utf8').replaceAll('/usr/local/bin/gobgpd', gobgpdBin));
    fs.mkdirSync(path.join(dir, 'vipd.service.d'));
    const dropIn = fs.readFileSync(path.join(configDir, 'vipd-external-gobgpd.conf'), 'utf8');
    const dropInFile = path.join(dir, 'vipd.service.d', 'external-gobgpd.conf');
    fs.writeFileSync(dropInFile, dropIn.replaceAll('/usr/local/bin/vipd', vipdBin));
    const verify = () => spawnSync('systemd-analyze', ['verify', path.join(dir, 'vipd.service'), path.join(dir, 'gobgpd.service')], { encoding: 'utf8', env: { ...process.env, SYSTEMD_UNIT_PATH: `${dir}:` } });
    const run = verify();
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr.trim(), '', 'no warnings');
    for (const line of ['PartOf=gobgpd.service', 'After=gobgpd.service', 'KillMode=mixed']) assert.ok(dropIn.split('\n').includes(line), line);
    assert.match(dropIn, /^ExecStopPost=.*SERVICE_RESULT.*vipd withdraw-owned/m);
    // The drop-in is really read: an unknown key in it is reported.
    fs.appendFileSync(dropInFile, 'PrivateTmpp=yes\n');
    assert.match(verify().stderr, /external-gobgpd\.conf.*Unknown key 'PrivateTmpp'/);
  });

  it('config/kubeadm/vipd.yaml: a static pod on the host network, NET_ADMIN only, config from a hostPath, liveness from /status', () => {
    const pod = parse(fs.readFileSync(path.join(configDir, 'kubeadm', 'vipd.yaml'), 'utf8')) as any;
    assert.equal(pod.kind, 'Pod');
    assert.equal(pod.metadata.namespace, 'kube-system');
    assert.equal(pod.spec.hostNetwork, true);
    assert.equal(pod.spec.containers.length, 1);
    const c = pod.spec.containers[0];
    assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] });
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.privileged, false);
    assert.equal(c.livenessProbe.httpGet.path, '/status');
    const configMount = c.volumeMounts.find((m: any) => m.mountPath === '/etc/vipd');
    assert.equal(configMount.readOnly, true);
    const volume = pod.spec.volumes.find((v: any) => v.name === configMount.name);
    assert.equal(volume.hostPath.path, '/etc/vipd');
    assert.deepEqual(c.args, ['run', '--config', '/etc/vipd/vipd.yaml']);
  });

  it('Dockerfile (linted here: no docker daemon in this lab): Node 20 slim, Debian gobgpd, non-root user, exec-form ENTRYPOINT', () => {
    const text = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');
    const lines = text.split('\n').filter((l) => !l.startsWith('#'));
    const from = lines.filter((l) => l.startsWith('FROM '));
    assert.equal(from.length, 1);
    assert.match(from[0]!, /^FROM node:20[-.\w]*slim$/);
    assert.match(text, /apt-get install [^\n]*\bgobgpd\b/);
    assert.match(text, /useradd --system [^\n]* vipd/);
    const users = lines.filter((l) => l.startsWith('USER '));
    assert.deepEqual(users, ['USER vipd'], 'the last (only) USER is not root');
    const entry = lines.find((l) => l.startsWith('ENTRYPOINT '));
    assert.ok(entry, 'has an ENTRYPOINT');
    assert.doesNotThrow(() => JSON.parse(entry!.slice('ENTRYPOINT '.length)), 'exec form (signals reach vipd)');
    assert.match(text, /npm install -g [^\n]*vipd-\*\.tgz/);
  });

  it('package.json: bin/vipd, and only bin, dist/src, proto, config, docs and the README in the package', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string>; files: string[] };
    assert.deepEqual(pkg.bin, { vipd: 'bin/vipd' });
    assert.ok(fs.statSync(path.join(root, 'bin', 'vipd')).mode & 0o111, 'bin/vipd is executable');
    assert.ok(!pkg.files.some((f) => f.includes('test')), 'no tests');
    for (const f of ['bin/', 'dist/src/', 'proto/']) assert.ok(pkg.files.includes(f), f);
  });
});

describe('config/grafana-vipd.json', () => {
  it('uses only metrics vipd defines (src/lib/metrics.ts), and shows the VIP, health, proxy and BGP', async () => {
    const { createMetrics } = await import('../../src/lib/metrics');
    const registry = createMetrics().registry;
    const defined = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    const dashboard = JSON.parse(fs.readFileSync(path.join(configDir, 'grafana-vipd.json'), 'utf8')) as { panels: Array<{ targets: Array<{ expr: string }> }>; templating: { list: Array<{ query?: unknown }> } };
    const exprs = [...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)), ...dashboard.templating.list.map((v) => String(v.query ?? ''))];
    const used = new Set(exprs.flatMap((e) => e.match(/\bvipd_[a-z0-9_]+/g) ?? []));
    // Histograms are queried through their series (_bucket, _sum, _count).
    const base = (name: string) => name.replace(/_(bucket|sum|count)$/, '');
    const unknown = [...used].filter((n) => !defined.has(n) && !defined.has(base(n)));
    assert.deepEqual(unknown, [], 'every metric in the dashboard exists');
    for (const must of ['vipd_announce_vip_announced', 'vipd_health_backend_state', 'vipd_proxy_sessions_active', 'vipd_speaker_peer_state', 'vipd_config_reloads_total']) assert.ok(used.has(must), must);
    assert.ok(used.size >= 20, `${used.size} metrics shown`);
  });
});
