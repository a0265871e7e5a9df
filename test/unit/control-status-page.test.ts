import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { AdminServer } from '../../src/control/admin-server';
import type { AdminActions, DaemonStatus } from '../../src/control/control';
import { EventJournal, JOURNAL_CAPACITY } from '../../src/control/event-journal';
import { escapeHtml, renderStatusPage } from '../../src/control/status-page';
import { SSE_MAX_CLIENTS, SSE_MAX_SOCKET_CLIENTS } from '../../src/control/status-page-feed';
import { renderTimeline } from '../../src/cli/status-table';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { httpRequest, openRaw, rawExchange, type RawTarget } from '../fakes/admin-raw-client';

const HOSTILE = `<img src=x onerror="alert('x')">&`;
const T0 = '2026-12-06T08:00:00.000Z';

function statusWith(over: { vipState?: 'announced' | 'withdrawn'; vipReason?: string; health?: string; detail?: string; ok?: boolean; drained?: boolean; peerState?: string; name?: string } = {}): DaemonStatus {
  return {
    node: over.name ?? 'lb1',
    version: 't',
    drained: over.drained ?? false,
    ...(over.drained ? { drain: { drainedBy: 'admin socket /run/vipd/vipd.sock', drainedAt: '2026-12-06T08:00:05.000Z' } } : {}),
    shuttingDown: false,
    vips: [
      {
        name: over.name ?? 'apiserver',
        prefix: '198.18.100.1/32',
        state: over.vipState ?? 'announced',
        reason: over.vipReason ?? 'healthy',
        detail: '',
        since: T0,
        listeners: [{ id: 'apiserver:6443', port: 6443, pool: 'apiservers', bound: true, activeSessions: 3 }],
        peers: [{ peer: '198.18.0.1', state: over.vipState ?? 'announced' }],
      },
    ],
    pools: [
      {
        name: 'apiservers',
        healthy: over.health === 'unhealthy' ? 0 : 1,
        backends: [
          {
            address: '198.18.21.2:6443',
            health: over.health ?? 'healthy',
            since: T0,
            lastCheck: { ok: over.ok ?? true, detail: over.detail ?? 'HTTP 200', durationMs: 3, at: T0 },
            activeConnections: 3,
            totalConnections: 40,
            connectErrors: 0,
            drained: false,
          },
        ],
      },
    ],
    peers: [{ address: '198.18.0.1', asn: 65000, state: over.peerState ?? 'established', since: T0, families: ['ipv4-unicast'], advertised: ['198.18.100.1/32'] }],
  };
}

describe('status page rendering', () => {
  it('escapeHtml turns every markup character into text', () => {
    const cases: Array<[string, string]> = [
      ['plain', 'plain'],
      ['<b>', '&lt;b&gt;'],
      ['a & b', 'a &amp; b'],
      [`"q" 'a'`, '&quot;q&quot; &#39;a&#39;'],
      ['</script><script>alert(1)</script>', '&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;'],
    ];
    for (const [input, want] of cases) assert.equal(escapeHtml(input), want, input);
  });

  it('a name or probe detail with HTML in it is rendered as text, never as markup', () => {
    const html = renderStatusPage(statusWith({ name: HOSTILE, detail: `HTTP 503 <script>alert(1)</script>`, ok: false, health: 'unhealthy' }), [
      { at: T0, kind: 'health', subject: `apiservers/${HOSTILE}`, to: 'unhealthy', reason: '<i>x</i>' },
    ]);
    assert.ok(!html.includes('<img'), 'no img element from a name');
    assert.ok(!html.includes('<script>alert'), 'no script element from a detail');
    assert.ok(!html.includes('<i>x'), 'no markup from a timeline reason');
    assert.ok(html.includes('&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;'), 'the name appears as escaped text');
    assert.ok(html.includes('HTTP 503 &lt;script&gt;alert(1)&lt;/script&gt;'));
    // The page's own single script is the only one.
    assert.equal(html.split('<script>').length - 1, 1);
  });

  it('shows each section with what an operator reads first, and refreshes itself every 2 s without JavaScript', () => {
    const html = renderStatusPage(statusWith({ drained: true }), [], new Date('2026-12-06T08:01:00.000Z'));
    assert.match(html, /<meta http-equiv="refresh" content="2"/);
    for (const text of ['apiserver', '198.18.100.1/32', 'announced', 'draining', '198.18.21.2:6443', 'HTTP 200', '198.18.0.1', 'established', '60 s', 'timeline', 'DRAINED', 'node drained by admin socket /run/vipd/vipd.sock']) {
      assert.ok(html.includes(text), `page shows ${text}`);
    }
  });
});

describe('EventJournal', () => {
  it('records announce, withdraw, health, drain and peer transitions from status diffs, in time order', () => {
    const journal = new EventJournal();
    journal.observe(statusWith({ vipState: 'withdrawn', vipReason: 'starting', health: 'unknown', peerState: 'active' }));
    assert.deepEqual(journal.list(), [], 'the starting state is the baseline');
    journal.observe(statusWith({ vipState: 'announced', vipReason: 'healthy', peerState: 'established' }));
    journal.observe(statusWith({ health: 'unhealthy', ok: false, detail: 'connect ECONNREFUSED', vipState: 'withdrawn', vipReason: 'noHealthyBackends' }));
    journal.observe(statusWith({ drained: true, vipState: 'withdrawn', vipReason: 'drained' }));
    journal.observe(statusWith({ drained: true, vipState: 'withdrawn', vipReason: 'drained' }));
    journal.record({ at: T0, kind: 'reload', subject: 'config', to: 'applied' });
    const seen = journal.list().map((e) => `${e.kind} ${e.subject} ${e.from ?? ''}->${e.to} ${e.reason ?? ''}`.trim());
    assert.deepEqual(seen, [
      'announce apiserver withdrawn (starting)->announced healthy',
      'health apiservers/198.18.21.2:6443 unknown->healthy',
      'peer peer 198.18.0.1 active->established',
      'withdraw apiserver announced (healthy)->withdrawn noHealthyBackends',
      'health apiservers/198.18.21.2:6443 healthy->unhealthy connect ECONNREFUSED',
      // Same time stamp: VIPs before backends.
      'withdraw apiserver withdrawn (noHealthyBackends)->withdrawn drained',
      'health apiservers/198.18.21.2:6443 unhealthy->healthy',
      'drain node ->drained admin socket /run/vipd/vipd.sock',
      'reload config ->applied',
    ]);
  });

  it(`keeps the last ${JOURNAL_CAPACITY} and tells listeners`, () => {
    const journal = new EventJournal();
    let told = 0;
    journal.onEvent(() => told++);
    for (let i = 0; i < JOURNAL_CAPACITY + 50; i++) journal.record({ at: T0, kind: 'health', subject: `b${i}`, to: 'healthy' });
    assert.equal(journal.list().length, JOURNAL_CAPACITY);
    assert.equal(journal.list()[0]!.subject, 'b50');
    assert.equal(told, JOURNAL_CAPACITY + 50);
  });
});

describe('status page on the admin server', () => {
  async function start() {
    const dir = fs.mkdtempSync(path.join(tmpdir(), 'vipd-page-test-'));
    let current = statusWith();
    // `reload` is there for the reload branch's AdminActions (an extra member is fine before it lands).
    const actions = {
      status: () => current,
      drain: async () => {},
      undrain: async () => {},
      drainBackend: async () => {},
      metricsText: async () => ({ contentType: 'text/plain', body: '' }),
      reload: async () => ({ result: 'unchanged' }),
    } as AdminActions;
    const socketPath = path.join(dir, 'lb1.sock');
    const server = new AdminServer({ listen: endpoint('127.0.0.1', 0), socket: { path: socketPath }, actions, logger: silentLogger(), metrics: createMetrics() });
    await server.start();
    return { server, tcp: { port: server.port() }, unix: { path: socketPath }, set: (s: DaemonStatus) => (current = s) };
  }

  /** Opens an /events stream and collects what arrives. */
  function stream(target: RawTarget, headers: Record<string, string>): Promise<{ socket: Socket; text: () => string; head: Promise<string> }> {
    const socket = openRaw(target);
    let text = '';
    socket.on('error', () => {});
    const head = new Promise<string>((resolve) => {
      socket.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('\r\n\r\n')) resolve(text.slice(0, text.indexOf('\r\n')));
      });
      socket.on('close', () => resolve(text.slice(0, text.indexOf('\r\n'))));
    });
    return new Promise((resolve) => socket.once('connect', () => (socket.write(httpRequest('GET', '/events', headers, '')), resolve({ socket, text: () => text, head }))));
  }

  it('serves the page on TCP (its own origin passes) and the socket, refuses a foreign origin, and pushes changes over /events', async () => {
    const { server, tcp, unix, set } = await start();
    try {
      const host = { host: `127.0.0.1:${tcp.port}` };
      const page = await rawExchange(tcp, [httpRequest('GET', '/', host, '')]);
      assert.equal(page.status, 200);
      assert.match(page.headers['content-type']!, /text\/html/);
      assert.match(page.body, /198\.18\.21\.2:6443/);
      assert.equal((await rawExchange(unix, [httpRequest('GET', '/', {}, '')])).status, 200);
      assert.equal((await rawExchange(tcp, [httpRequest('GET', '/events', { ...host, origin: 'http://evil.example' }, '')])).status, 403);
      assert.equal((await rawExchange(tcp, [httpRequest('GET', '/', { host: 'evil.example' }, '')])).status, 421);

      const live = await stream(tcp, { ...host, origin: `http://127.0.0.1:${tcp.port}`, accept: 'text/event-stream' });
      assert.match(await live.head, / 200 /);
      set(statusWith({ health: 'unhealthy', ok: false, detail: 'connect ECONNREFUSED' }));
      const deadline = Date.now() + 2000;
      while (!live.text().includes('ECONNREFUSED') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(live.text().includes('event: status'), 'status events');
      assert.ok(live.text().includes('ECONNREFUSED'), 'the change arrives within 2 s');
      const timeline = JSON.parse((await rawExchange(tcp, [httpRequest('GET', '/timeline', host, '')])).body) as { events: Array<{ kind: string; to: string }> };
      assert.ok(timeline.events.some((e) => e.kind === 'health' && e.to === 'unhealthy'), JSON.stringify(timeline));
      live.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it(`caps /events at ${SSE_MAX_CLIENTS} (${SSE_MAX_SOCKET_CLIENTS} on the socket): 503 at once; 1,000 idle clients leave /status and a drain over the socket working`, async () => {
    const { server, tcp, unix } = await start();
    const held: Socket[] = [];
    try {
      const host = { host: `127.0.0.1:${tcp.port}` };
      for (let i = 0; i < SSE_MAX_CLIENTS; i++) {
        const s = await stream(tcp, host);
        held.push(s.socket);
        assert.match(await s.head, / 200 /, `client ${i + 1}`);
      }
      const started = performance.now();
      const over = await rawExchange(tcp, [httpRequest('GET', '/events', host, '')]);
      assert.equal(over.status, 503, over.body);
      assert.ok(performance.now() - started < 500, 'refused at once');
      assert.equal(server.feed.clientCount(), SSE_MAX_CLIENTS);
      // 1,000 more that connect, ask for /events and never read: the connection cap and the SSE cap turn them away.
      for (let i = 0; i < 1000; i++) {
        const s = openRaw(tcp);
        s.on('error', () => {});
        s.once('connect', () => s.write(httpRequest('GET', '/events', host, '')));
        s.pause();
        held.push(s);
      }
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(server.feed.clientCount(), SSE_MAX_CLIENTS);
      const status = await rawExchange(unix, [httpRequest('GET', '/status', {}, '')]);
      assert.equal(status.status, 200, 'the socket still answers');
      const drain = await rawExchange(unix, [httpRequest('POST', '/drain', { 'content-type': 'application/json' }, '{}')]);
      assert.equal(drain.status, 200, 'a drain over the socket still works');
      // On the socket, only SSE_MAX_SOCKET_CLIENTS of the (already full) cap.
      for (const s of held.splice(0)) s.destroy();
      await new Promise((r) => setTimeout(r, 300));
      const socketStreams: Socket[] = [];
      for (let i = 0; i < SSE_MAX_SOCKET_CLIENTS; i++) {
        const s = await stream(unix, {});
        socketStreams.push(s.socket);
        assert.match(await s.head, / 200 /);
      }
      held.push(...socketStreams);
      assert.equal((await rawExchange(unix, [httpRequest('GET', '/events', {}, '')])).status, 503);
      assert.equal((await rawExchange(unix, [httpRequest('POST', '/undrain', { 'content-type': 'application/json' }, '{}')])).status, 200);
    } finally {
      for (const s of held) s.destroy();
      await server.close();
    }
  });
});

describe('vipd status --watch timeline', () => {
  it('newest first, limited to the rows asked, and terminal escapes in names shown as ?', () => {
    const events = Array.from({ length: 20 }, (_, i) => ({ at: `2026-12-06T08:00:${String(i).padStart(2, '0')}.000Z`, kind: 'health' as const, subject: `etcd/b${i}`, from: 'healthy', to: 'unhealthy' }));
    events.push({ at: '2026-12-06T08:01:00.000Z', kind: 'health', subject: 'etcd/\u001b[2Jx', from: 'healthy', to: 'unhealthy', reason: 'bad\u0007' } as never);
    const out = renderTimeline(events, 5).split('\n');
    assert.equal(out.length, 6, 'header and 5 rows');
    assert.match(out[0]!, /LAST TRANSITIONS \(5 of 21\)/);
    assert.match(out[1]!, /etcd\/\?\[2Jx\s+healthy -> unhealthy\s+bad\?/);
    assert.ok(!out.join('').includes('\u001b'), 'no escape sequence reaches the terminal');
    assert.match(out[2]!, /etcd\/b19/);
  });
});
