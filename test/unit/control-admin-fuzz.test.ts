import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { AdminServer } from '../../src/control/admin-server';
import type { AdminActions, DaemonStatus } from '../../src/control/control';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import { endpoint } from '../../src/net/endpoint';
import { fuzzGenerator, FUZZ_WRONG_TOKEN_BASE, verdict } from '../fakes/admin-fuzz-cases';
import { rawExchange, type RawTarget } from '../fakes/admin-raw-client';

/**
 * T29 (unit part): a seeded fuzz of raw requests over real sockets against a real AdminServer with
 * fake actions. Every case must get a 4xx (or be cut by the server's timeouts when it is slow,
 * truncated or half-closed), `/status` must answer 200 on both transports after every batch, and no
 * case may reach an action: nothing the fuzz sends is a valid mutation. VIPD_FUZZ_SEED and
 * VIPD_FUZZ_CASES override the defaults to explore further.
 */
const SEED = Number(process.env.VIPD_FUZZ_SEED ?? 0x5eed09);
const CASES = Number(process.env.VIPD_FUZZ_CASES ?? 3000);
/** Cases in flight at once: well under the 64-connection cap, so a refusal there would be a bug, not load. /status is checked after every BATCH cases. */
const BATCH = 32;
const TIMEOUTS = { headersMs: 250, requestMs: 500, keepAliveMs: 250, idleMs: 800 };
/** The server must have answered or cut every case by then: its request timeout plus the sweep and slack. */
const CASE_DEADLINE_MS = 4000;
/** The right token; the cases only ever send wrong ones. */
const TOKEN = FUZZ_WRONG_TOKEN_BASE;

test(`admin fuzz (T29): ${CASES} seeded raw requests, each a 4xx or cut; /status answers after every batch; nothing changes`, { timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'vipd-admin-fuzz-'));
  const socketPath = path.join(dir, 'fuzz.sock');
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  const mutations: string[] = [];
  const status: DaemonStatus = { node: 'fuzz', version: 't', drained: false, shuttingDown: false, vips: [], pools: [], peers: [] };
  const actions: AdminActions = {
    status: () => status,
    drain: async (source) => void mutations.push(`drain ${source}`),
    undrain: async (source) => void mutations.push(`undrain ${source}`),
    drainBackend: async (pool, backend, drained, source) => void mutations.push(`${drained} ${pool} ${backend} ${source}`),
    metricsText: async () => ({ contentType: 'text/plain', body: 'x 1\n' }),
    reload: async (source) => (mutations.push(`reload ${source}`), { result: 'unchanged', summary: 'nothing changed' }),
  };
  const metrics = createMetrics();
  const server = new AdminServer({ listen: endpoint('127.0.0.1', 0), socket: { path: socketPath }, tokenFile, actions, logger: silentLogger(), metrics, timeouts: TIMEOUTS });
  await server.start();
  const tcpPort = server.port();
  const next = fuzzGenerator(SEED, tcpPort, socketPath);
  const codes = new Map<string, number>();
  const failures: string[] = [];
  const started = performance.now();
  let statusChecks = 0;
  try {
    const checkStatus = async (after: number) => {
      for (const t of [{ port: tcpPort }, { path: socketPath }] as RawTarget[]) {
        const hostHeader = 'port' in t ? `127.0.0.1:${tcpPort}` : 'localhost';
        const s = await rawExchange(t, [`GET /status HTTP/1.1\r\nHost: ${hostHeader}\r\nConnection: close\r\n\r\n`], { timeoutMs: 2000 });
        statusChecks++;
        assert.equal(s.status, 200, `/status after ${after} cases over ${'port' in t ? 'TCP' : 'the socket'}: ${s.status ?? s.ending}`);
      }
      assert.deepEqual(failures.slice(0, 10), [], `${failures.length} bad answers, first ones listed`);
    };
    // BATCH cases always in flight (cases are generated in claim order, so the sequence is the seed's).
    let claimed = 0;
    let completed = 0;
    const worker = async () => {
      while (claimed < CASES) {
        const index = claimed++;
        const c = next();
        const a = await rawExchange(c.target, c.chunks, { gapMs: c.gapMs, endAfterWrite: c.endAfterWrite, timeoutMs: CASE_DEADLINE_MS });
        const key = a.status !== undefined ? String(a.status) : `cut(${a.ending})`;
        codes.set(key, (codes.get(key) ?? 0) + 1);
        const bad = verdict(c, a, CASE_DEADLINE_MS);
        if (bad) failures.push(`case ${index} [${c.label}]: ${bad}`);
        completed++;
        if (completed % BATCH === 0) await checkStatus(completed);
      }
    };
    await Promise.all(Array.from({ length: BATCH }, worker));
    await checkStatus(completed);
    const ms = performance.now() - started;
    const text = await metrics.registry.metrics();
    const summary = [...codes.entries()].sort().map(([k, v]) => `${k}:${v}`).join(' ');
    console.log(`T29 fuzz: ${CASES} cases, seed 0x${SEED.toString(16)}, ${Math.round(ms)} ms; answers ${summary}; /status 200 on ${statusChecks} checks; ${mutations.length} mutations`);
    assert.deepEqual(mutations, [], 'no fuzz case reached an action');
    assert.doesNotMatch(text, /vipd_admin_refused_total\{reason="connectionLimit"\}/, 'the fuzz stayed under the connection cap, so no case was cut by it');
    assert.ok((codes.get('200') ?? 0) < CASES / 5, 'the fuzz mostly sends bad requests');
    assert.ok([...codes.keys()].filter((k) => k.startsWith('4')).length >= 8, `a spread of 4xx codes: ${summary}`);
  } finally {
    await server.close();
  }
});
