import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config/config';
import { adminSocketPath } from '../../src/config/schema';
import { AdminServer, SOCKET_RESERVED, type AdminServerOptions } from '../../src/control/admin-server';
import { ADMIN_MAX_CONNECTIONS, AdminInputError, type AdminActions, type DaemonStatus } from '../../src/control/control';
import { ConfigError } from '../../src/lib/errors';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics, type Metrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { httpRequest, openRaw, rawExchange, type RawAnswer, type RawTarget } from '../fakes/admin-raw-client';

const status: DaemonStatus = { node: 'lb1', version: 't', drained: false, shuttingDown: false, vips: [], pools: [], peers: [] };
const TOKEN = '0123456789abcdef0123456789abcdef';

/** Records every mutation with its source, so a test can assert that a refused request changed nothing. */
function recordingActions(): { actions: AdminActions; calls: string[] } {
  const calls: string[] = [];
  const actions: AdminActions = {
    status: () => status,
    drain: async (source) => void calls.push(`drain (${source})`),
    undrain: async (source) => void calls.push(`undrain (${source})`),
    drainBackend: async (pool, backend, drained, source) => {
      if (pool !== 'etcd') throw new AdminInputError(404, `no pool "${pool}"`);
      calls.push(`${drained ? 'drain' : 'undrain'} ${pool} ${backend} (${source})`);
    },
    metricsText: async () => ({ contentType: 'text/plain', body: 'vipd_x 1\n' }),
    reload: async (source) => {
      calls.push(`reload (${source})`);
      return { result: 'rejected', reason: 'f.yaml:3:5: speaker.asn: restart needed', issues: [{ path: 'speaker.asn', line: 3, col: 5, message: 'restart needed' }] };
    },
  };
  return { actions, calls };
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(tmpdir(), 'vipd-admin-test-'));
}

async function startServer(overrides: Partial<AdminServerOptions> = {}): Promise<{ server: AdminServer; calls: string[]; metrics: Metrics; tcp: { port: number }; unix: { path: string }; dir: string; socketPath: string }> {
  const dir = tempDir();
  const socketPath = path.join(dir, 'run', 'lb1.sock');
  const { actions, calls } = recordingActions();
  const metrics = createMetrics();
  const server = new AdminServer({ listen: endpoint('127.0.0.1', 0), socket: { path: socketPath }, actions, logger: silentLogger(), metrics, ...overrides });
  await server.start();
  return { server, calls, metrics, tcp: { port: server.port() }, unix: { path: socketPath }, dir, socketPath };
}

function host(port: number): Record<string, string> {
  return { host: `127.0.0.1:${port}` };
}

async function send(target: RawTarget, method: string, p: string, headers: Record<string, string> = {}, body = ''): Promise<RawAnswer> {
  const defaults = 'port' in target ? host(target.port) : {};
  const json: Record<string, string> = method === 'POST' ? { 'content-type': 'application/json' } : {};
  return rawExchange(target, [httpRequest(method, p, { ...defaults, ...json, ...headers }, body)]);
}

function errorOf(answer: RawAnswer): string {
  assert.equal(answer.headers['content-type'], 'application/json', `a JSON message, got ${answer.body}`);
  return (JSON.parse(answer.body) as { error: string }).error;
}

describe('admin API routes', () => {
  it('reads are GET, mutations POST only, wrong method 405 with Allow, unknown 404, all counted', async () => {
    const { server, calls, metrics, tcp, unix } = await startServer();
    try {
      assert.deepEqual(JSON.parse((await send(tcp, 'GET', '/status')).body), status);
      assert.equal((await send(tcp, 'GET', '/metrics')).body, 'vipd_x 1\n');
      assert.deepEqual(JSON.parse((await send(unix, 'GET', '/status')).body), status);

      for (const target of [tcp, unix]) {
        const getDrain = await send(target, 'GET', '/drain');
        assert.equal(getDrain.status, 405);
        assert.equal(getDrain.headers.allow, 'POST');
        assert.match(errorOf(getDrain), /accepts POST only/);
        assert.equal((await send(target, 'POST', '/status')).status, 405);
        const unknown = await send(target, 'GET', '/nope');
        assert.equal(unknown.status, 404);
        assert.match(errorOf(unknown), /no such endpoint "\/nope"/);
      }
      assert.deepEqual(calls, [], 'a GET never drains');

      assert.equal((await send(unix, 'POST', '/drain')).status, 200);
      assert.equal((await send(unix, 'POST', '/undrain', {}, '{}')).status, 200);
      const ok = await send(unix, 'POST', '/backends/drain', {}, JSON.stringify({ pool: 'etcd', backend: '198.18.21.2:2379' }));
      assert.equal(ok.status, 200, ok.body);
      assert.equal((await send(unix, 'POST', '/backends/undrain', {}, JSON.stringify({ pool: 'etcd', backend: '198.18.21.2:2379' }))).status, 200);
      const source = `admin socket ${unix.path}`;
      assert.deepEqual(calls, [`drain (${source})`, `undrain (${source})`, `drain etcd 198.18.21.2:2379 (${source})`, `undrain etcd 198.18.21.2:2379 (${source})`]);

      const text = await metrics.registry.metrics();
      assert.match(text, /vipd_admin_requests_total\{route="\/drain",code="405"\} 2/);
      assert.match(text, /vipd_admin_requests_total\{route="\/drain",code="200"\} 1/);
      assert.match(text, /vipd_admin_refused_total\{reason="method"\} 4/);
      assert.match(text, /vipd_admin_refused_total\{reason="notFound"\} 2/);
    } finally {
      await server.close();
    }
  });

  it('refuses bad bodies with the right 4xx and a JSON message, and changes nothing', async () => {
    const { server, calls, unix } = await startServer();
    try {
      const refused: Array<[string, string, number, RegExp]> = [
        ['/backends/drain', '{not json', 400, /not JSON/],
        ['/backends/drain', '[1,2]', 400, /JSON object/],
        ['/backends/drain', 'null', 400, /JSON object/],
        ['/backends/drain', JSON.stringify({ pool: 'etcd' }), 400, /"backend".*required/],
        ['/backends/drain', JSON.stringify({ backend: '198.18.21.2:2379' }), 400, /"pool".*required/],
        ['/backends/drain', JSON.stringify({ pool: 'etcd', backend: 'x', force: true }), 400, /unknown field\(s\) "force"/],
        ['/backends/drain', JSON.stringify({ pool: 'nope', backend: '198.18.21.2:2379' }), 404, /no pool "nope"/],
        ['/backends/drain', 'x'.repeat(20_000), 413, /body over 16384 bytes/],
        ['/drain', JSON.stringify({ now: true }), 400, /unknown field\(s\) "now"/],
      ];
      for (const [route, body, code, message] of refused) {
        const res = await send(unix, 'POST', route, {}, body);
        assert.equal(res.status, code, `${body.slice(0, 40)} -> ${res.status} ${res.body}`);
        assert.match(errorOf(res), message);
      }
      // Declared too large: refused before a byte of it is read.
      const declared = await rawExchange(unix, [httpRequest('POST', '/backends/drain', { 'content-type': 'application/json', 'content-length': '10000000' })]);
      assert.equal(declared.status, 413);
      assert.deepEqual(calls, [], 'refused requests changed nothing');
    } finally {
      await server.close();
    }
  });

  it('a failing action answers 500 with the error, and the server lives on', async () => {
    const dir = tempDir();
    const actions: AdminActions = {
      status: () => status,
      drain: async () => {
        throw new Error('speaker unreachable');
      },
      undrain: async () => {},
      drainBackend: async () => {},
      metricsText: async () => ({ contentType: 'text/plain', body: '' }),
      reload: async () => ({ result: 'unchanged' }),
    };
    const socketPath = path.join(dir, 'a.sock');
    const server = new AdminServer({ socket: { path: socketPath }, actions, logger: silentLogger(), metrics: createMetrics() });
    await server.start();
    try {
      const res = await send({ path: socketPath }, 'POST', '/drain');
      assert.equal(res.status, 500);
      assert.match(errorOf(res), /speaker unreachable/);
      assert.equal((await send({ path: socketPath }, 'GET', '/status')).status, 200);
    } finally {
      await server.close();
    }
  });

  it('regression (issue 9 defect 1): GET // and other odd targets get a 4xx, never a crash', async () => {
    const { server, tcp } = await startServer();
    try {
      for (const [target, code] of [['//', 404], ['/%', 404], ['/%zz', 404], ['/%73tatus', 404], ['//status', 404], ['http://admin/status', 400], ['*', 400], ['/' + 'a'.repeat(300), 400]] as const) {
        const res = await rawExchange(tcp, [`GET ${target} HTTP/1.1\r\nhost: 127.0.0.1:${tcp.port}\r\nconnection: close\r\n\r\n`]);
        assert.equal(res.status, code, `${target.slice(0, 20)} -> ${res.status} ${res.body}`);
        assert.ok(errorOf(res).length > 0);
      }
      assert.equal((await send(tcp, 'GET', '/status?verbose=1')).status, 200, 'a query string is ignored');
      assert.equal((await send(tcp, 'GET', '/status')).status, 200);
    } finally {
      await server.close();
    }
  });
});

describe('admin lock-down', () => {
  let ctx: Awaited<ReturnType<typeof startServer>>;
  before(async () => {
    const dir = tempDir();
    const tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    ctx = await startServer({ tokenFile });
  });
  after(() => ctx.server.close());

  it('TCP is read-only without the token: 401 without one, 403 with a wrong one, 200 with the right one', async () => {
    const { tcp, calls } = ctx;
    calls.length = 0;
    const none = await send(tcp, 'POST', '/drain');
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="vipd admin"');
    assert.match(errorOf(none), /Authorization: Bearer/);
    assert.equal((await send(tcp, 'POST', '/drain', { authorization: 'Bearer wrong-token-wrong-token' })).status, 403);
    assert.equal((await send(tcp, 'POST', '/drain', { authorization: `Basic ${TOKEN}` })).status, 403);
    assert.equal((await send(tcp, 'POST', '/drain', { authorization: `Bearer ${TOKEN}x` })).status, 403);
    assert.deepEqual(calls, [], 'nothing changed');
    const ok = await send(tcp, 'POST', '/drain', { authorization: `Bearer ${TOKEN}` });
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(calls, [`drain (admin tcp 127.0.0.1:0 (token))`]);
    assert.equal((await send(tcp, 'GET', '/status')).status, 200, 'reads need no token');
  });

  it('TCP checks Host (421), Origin (403) and Sec-Fetch-Site (403); mutations need JSON on both transports (415)', async () => {
    const { tcp, unix, calls } = ctx;
    const port = tcp.port;
    calls.length = 0;
    const auth = { authorization: `Bearer ${TOKEN}` };
    const cases: Array<[string, RawTarget, string, string, Record<string, string>, number, RegExp]> = [
      ['foreign Host (DNS rebinding)', tcp, 'POST', '/drain', { ...auth, host: `evil.example:${port}` }, 421, /not this admin listener/],
      ['foreign Host on a read', tcp, 'GET', '/status', { host: `evil.example:${port}` }, 421, /not this admin listener/],
      ['right name, wrong port', tcp, 'GET', '/status', { host: `localhost:${port + 1}` }, 421, /not this admin listener/],
      ['foreign Origin', tcp, 'POST', '/drain', { ...auth, origin: 'http://evil.example' }, 403, /cross-origin/],
      ['Origin null', tcp, 'POST', '/drain', { ...auth, origin: 'null' }, 403, /cross-origin/],
      ['Origin on the socket', unix, 'POST', '/drain', { origin: `http://127.0.0.1:${port}` }, 403, /cross-origin/],
      ['Sec-Fetch-Site cross-site', tcp, 'POST', '/drain', { ...auth, 'sec-fetch-site': 'cross-site' }, 403, /cross-site/],
      ['text/plain on TCP', tcp, 'POST', '/drain', { ...auth, 'content-type': 'text/plain' }, 415, /application\/json/],
      ['text/plain on the socket', unix, 'POST', '/drain', { 'content-type': 'text/plain' }, 415, /application\/json/],
      ['form on the socket', unix, 'POST', '/backends/drain', { 'content-type': 'application/x-www-form-urlencoded' }, 415, /application\/json/],
    ];
    for (const [name, target, method, p, headers, code, message] of cases) {
      const res = await send(target, method, p, headers, method === 'POST' ? '{}' : '');
      assert.equal(res.status, code, `${name}: ${res.status} ${res.body}`);
      assert.match(errorOf(res), message, name);
    }
    // A missing Host on HTTP/1.1 is refused too (raw: every client library adds one).
    const noHost = await rawExchange(tcp, ['GET /status HTTP/1.1\r\nconnection: close\r\n\r\n']);
    assert.equal(noHost.status, 421);
    assert.deepEqual(calls, [], 'nothing changed');

    for (const h of [`localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`, `127.0.0.1:${port}`]) {
      assert.equal((await send(tcp, 'GET', '/status', { host: h })).status, 200, h);
    }
    assert.equal((await send(tcp, 'GET', '/status', { origin: `http://localhost:${port}` })).status, 200, 'its own origin');
    assert.equal((await send(tcp, 'POST', '/drain', { ...auth, 'content-type': 'application/json; charset=utf-8' }, '{}')).status, 200);

    const text = await ctx.metrics.registry.metrics();
    assert.match(text, /vipd_admin_refused_total\{reason="host"\} [4-9]/);
    assert.match(text, /vipd_admin_refused_total\{reason="origin"\} [4-9]/);
    assert.match(text, /vipd_admin_refused_total\{reason="contentType"\} [3-9]/);
    assert.match(text, /vipd_admin_requests_total\{route="unknown",code="421"\}/);
  });

  it(`caps connections at ${ADMIN_MAX_CONNECTIONS} across both listeners, ${SOCKET_RESERVED} kept for the socket; the next is closed at once and counted`, async () => {
    const { tcp, unix, metrics } = ctx;
    const refusedBefore = await refusedCount(metrics, 'connectionLimit');
    const open = async (target: RawTarget, n: number) => {
      const held = [];
      for (let i = 0; i < n; i++) {
        const s = openRaw(target);
        s.on('error', () => {});
        await new Promise((r) => s.once('connect', r));
        held.push(s);
      }
      return held;
    };
    const connections = async () => (await metrics.adminConnections.get()).values[0]?.value ?? 0;
    const settle = async (n: number) => {
      // The server counts a connection when it accepts it.
      for (let i = 0; i < 100 && (await connections()) !== n; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(await connections(), n);
    };
    const tcpHeld = await open(tcp, ADMIN_MAX_CONNECTIONS - SOCKET_RESERVED);
    await settle(ADMIN_MAX_CONNECTIONS - SOCKET_RESERVED);
    const held = [...tcpHeld];
    try {
      const tcpOver = await send(tcp, 'GET', '/status');
      assert.equal(tcpOver.status, undefined, 'TCP over its share: no answer');
      assert.ok(tcpOver.ending === 'closed' || tcpOver.ending === 'reset', tcpOver.ending);
      assert.ok(tcpOver.ms < 500, `closed at once (${Math.round(tcpOver.ms)} ms)`);
      assert.equal((await send(unix, 'GET', '/status')).status, 200, 'the socket still answers while TCP is full');

      held.push(...(await open(unix, SOCKET_RESERVED)));
      await settle(ADMIN_MAX_CONNECTIONS);
      const socketOver = await send(unix, 'GET', '/status');
      assert.equal(socketOver.status, undefined, 'over the total cap: no answer');
      assert.ok(socketOver.ms < 500, `closed at once (${Math.round(socketOver.ms)} ms)`);
      assert.equal((await refusedCount(metrics, 'connectionLimit')) - refusedBefore, 2);
    } finally {
      for (const s of held) s.destroy();
    }
    await settle(0);
    assert.equal((await send(tcp, 'GET', '/status')).status, 200, 'served again once they are gone');
  });
});

async function refusedCount(metrics: Metrics, reason: string): Promise<number> {
  return (await metrics.adminRefused.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

describe('admin socket and token files', () => {
  it('the socket is 0660 in a directory created 0750, with the configured group; its file goes at close', async () => {
    // Root may give the socket any group; anyone else, their own.
    const gid = process.getuid!() === 0 ? 65534 : process.getgid!();
    const p = path.join(tempDir(), 'new', 'lb1.sock');
    const server = new AdminServer({ socket: { path: p, group: gid }, actions: recordingActions().actions, logger: silentLogger(), metrics: createMetrics() });
    await server.start();
    try {
      const st = fs.statSync(p);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o660);
      assert.equal(st.gid, gid);
      const dir = fs.statSync(path.dirname(p));
      assert.equal(dir.mode & 0o777, 0o750);
      assert.equal(dir.gid, gid, 'members of the group can reach the socket');
      assert.equal((await send({ path: p }, 'GET', '/status')).status, 200);
    } finally {
      await server.close();
    }
    assert.equal(fs.existsSync(p), false, 'socket file removed at close');
  });

  it('a stale socket file is replaced; a live one, or a file that is not a socket, refuses the start', async () => {
    const p = path.join(tempDir(), 'lb1.sock');
    const make = () => new AdminServer({ socket: { path: p }, actions: recordingActions().actions, logger: silentLogger(), metrics: createMetrics() });

    // Stale: what a vipd killed with SIGKILL leaves behind (a socket file nobody listens on).
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    assert.ok(fs.statSync(p).isSocket(), 'a leftover socket file');
    const running = make();
    await running.start();
    try {
      assert.equal((await send({ path: p }, 'GET', '/status')).status, 200, 'stale file replaced');
      await assert.rejects(make().start(), /another process \(a vipd already running\?\) answers on it; refusing to start/);
      assert.equal((await send({ path: p }, 'GET', '/status')).status, 200, 'the running one is untouched');
    } finally {
      await running.close();
    }
    fs.writeFileSync(p, 'not a socket');
    await assert.rejects(make().start(), /exists and is not a socket/);
    assert.equal(fs.readFileSync(p, 'utf8'), 'not a socket', 'left alone');
  });

  it('a missing group, a world-readable or short token file, a port in use are start errors naming the key', async () => {
    const dir = tempDir();
    const base = { actions: recordingActions().actions, logger: silentLogger(), metrics: createMetrics() };
    await assert.rejects(new AdminServer({ ...base, socket: { path: path.join(dir, 'a.sock'), group: 'no-such-group-vipd' } }).start(), /admin.socketGroup: no group "no-such-group-vipd"/);
    const open = path.join(dir, 'open-token');
    fs.writeFileSync(open, TOKEN, { mode: 0o644 });
    fs.chmodSync(open, 0o644);
    await assert.rejects(new AdminServer({ ...base, listen: endpoint('127.0.0.1', 0), tokenFile: open }).start(), /admin.tokenFile: .* is readable by every user \(mode 0644\)/);
    const short = path.join(dir, 'short-token');
    fs.writeFileSync(short, 'abc\n', { mode: 0o600 });
    await assert.rejects(new AdminServer({ ...base, listen: endpoint('127.0.0.1', 0), tokenFile: short }).start(), /admin.tokenFile: .* shorter than 16/);
    await assert.rejects(new AdminServer({ ...base, listen: endpoint('127.0.0.1', 0), tokenFile: path.join(dir, 'none') }).start(), /admin.tokenFile: cannot read .* ENOENT/);
    const first = new AdminServer({ ...base, listen: endpoint('127.0.0.1', 0) });
    await first.start();
    try {
      await assert.rejects(new AdminServer({ ...base, listen: endpoint('127.0.0.1', first.port()) }).start(), new RegExp(`admin\\.listen 127\\.0\\.0\\.1:${first.port()}: cannot listen: EADDRINUSE`));
    } finally {
      await first.close();
    }
  });

  it('idle and slow connections are closed by the timeouts', async () => {
    const { server, tcp } = await startServer({ timeouts: { headersMs: 300, requestMs: 600, keepAliveMs: 300, idleMs: 400 } });
    try {
      const idle = await rawExchange(tcp, [], { timeoutMs: 3000 });
      assert.notEqual(idle.ending, 'timeout', 'an idle connection is closed by the server');
      assert.ok(idle.ms < 2000, `idle closed after ${Math.round(idle.ms)} ms`);
      const slow = await rawExchange(tcp, ['GET /status HTTP/1.1\r\n', 'x-a: 1\r\n', 'x-b: 2\r\n', 'x-c: 3\r\n', 'x-d: 4\r\n'], { gapMs: 150, timeoutMs: 3000 });
      assert.notEqual(slow.ending, 'timeout', 'slow headers are cut');
      assert.ok(slow.status === undefined || (slow.status >= 400 && slow.status < 500), `slow headers: ${slow.status}`);
      const truncated = await rawExchange(tcp, [httpRequest('POST', '/drain', { host: `127.0.0.1:${tcp.port}`, 'content-type': 'application/json', 'content-length': '100' }, '{"a"')], { timeoutMs: 3000 });
      assert.notEqual(truncated.ending, 'timeout', 'a truncated body is cut');
      assert.ok(truncated.status === undefined || (truncated.status >= 400 && truncated.status < 500), `truncated: ${truncated.status}`);
    } finally {
      await server.close();
    }
  });
});

describe('admin config', () => {
  const config = (admin: string) => `node:
  name: lb7
${admin}
speaker:
  driver: none
vips:
  - name: api
    address: 198.19.0.10
    listeners: [{ port: 6443, pool: web }]
pools:
  web:
    backends: ["198.18.21.2:6443"]
`;

  it('the socket defaults to /run/vipd/<node.name>.sock; socket, socketGroup and tokenFile are read', () => {
    assert.equal(adminSocketPath(parseConfig(config(''), 'a.yaml')), '/run/vipd/lb7.sock');
    const c = parseConfig(config('admin:\n  socket: /var/run/x/admin.sock\n  socketGroup: vipd-admin\n  tokenFile: /etc/vipd/admin.token'), 'b.yaml');
    assert.equal(adminSocketPath(c), '/var/run/x/admin.sock');
    assert.equal(c.admin.socketGroup, 'vipd-admin');
    assert.equal(c.admin.tokenFile, '/etc/vipd/admin.token');
    assert.equal(parseConfig(config('admin:\n  socketGroup: 998'), 'c.yaml').admin.socketGroup, 998);
  });

  it('refuses a relative or overlong socket path, a bad group name and a relative token file, naming key and line', () => {
    const cases: Array<[string, RegExp]> = [
      ['admin:\n  socket: run/lb1.sock', /c\.yaml:4:11: admin\.socket: must be an absolute path/],
      [`admin:\n  socket: /${'x'.repeat(120)}.sock`, /admin\.socket: a unix socket path is at most 107 bytes/],
      ['admin:\n  socketGroup: "bad group"', /admin\.socketGroup: /],
      ['admin:\n  tokenFile: token', /admin\.tokenFile: must be an absolute path/],
      ['admin:\n  listen: 0.0.0.0:9180', /admin\.listen: .*must be a loopback IP:PORT/],
      ['admin:\n  token: abc', /admin\.token: unknown key/],
    ];
    for (const [admin, message] of cases) {
      assert.throws(() => parseConfig(config(admin), 'c.yaml'), (err: Error) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, message);
        return true;
      });
    }
  });
});
