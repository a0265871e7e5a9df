import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';
import type { ListenerSpec, PoolSpec } from '../../src/proxy/proxy';
import { WorkerPool, type WorkerProxyListener } from '../../src/dataplane/workers/worker-pool';
import { echoOnce, startEchoBackend, waitFor, type TestBackend } from '../fakes/proxy-backends';
import { FakeHealth, testPoolSpec } from '../fakes/proxy-harness';

/**
 * Multi-core proxy on loopback: real worker processes (node:cluster) sharing one listener, real echo
 * backends. Figures (accept split, restart and exit times) are printed for the record.
 */

const TEST_TIMEOUT_MS = 60_000;
/** The env var that turns this file into the pool-owning child of the SIGKILL test. */
const OWNER_ENV = 'VIPD_TEST_WORKER_POOL_OWNER';

interface Harness {
  readonly pool: WorkerPool;
  readonly listener: WorkerProxyListener;
  readonly port: number;
  readonly health: FakeHealth;
  /** Every bound() change, in order. */
  readonly boundChanges: boolean[];
}

function listenerSpec(pool: PoolSpec, port: number): ListenerSpec {
  return { id: `test:${port}`, vip: 'test', address: '127.0.0.1', port, pool };
}

async function startPool(backends: readonly TestBackend[], port = 0, reportIntervalMs = 100): Promise<Harness> {
  const spec = testPoolSpec(backends.map((b) => b.endpoint));
  const health = new FakeHealth(backends.map((b) => b.endpoint));
  const pool = new WorkerPool({ workers: 2, pools: [{ spec, health }], logger: silentLogger(), metrics: createMetrics(), reportIntervalMs });
  const listener = pool.listener(listenerSpec(spec, port));
  const boundChanges: boolean[] = [];
  listener.onBoundChange((bound) => boundChanges.push(bound));
  await listener.start();
  return { pool, listener, port: listener.address()!.port, health, boundChanges };
}

interface LoadResult {
  ok: number;
  failed: number;
  readonly errors: Map<string, number>;
}

/** `total` echo round trips through `port`, `concurrency` at a time; counts the ones that failed or came back wrong. */
async function runConnections(port: number, total: number, concurrency: number): Promise<LoadResult> {
  const result: LoadResult = { ok: 0, failed: 0, errors: new Map() };
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < total) {
      const n = next++;
      const payload = Buffer.from(`connection ${n}`);
      try {
        const reply = await echoOnce(port, payload);
        if (reply.equals(payload)) result.ok++;
        else throw Object.assign(new Error('wrong echo'), { code: 'WRONG_ECHO' });
      } catch (err) {
        result.failed++;
        const code = (err as NodeJS.ErrnoException).code ?? String(err);
        result.errors.set(code, (result.errors.get(code) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, one));
  return result;
}

function acceptedPerWorker(pool: WorkerPool, listenerId: string): number[] {
  return pool.workers().map((w) => w.listeners[listenerId]?.accepted ?? 0);
}

function split(counts: readonly number[]): string {
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((c, i) => `worker ${i}: ${c} (${total === 0 ? 0 : Math.round((100 * c) / total)}%)`).join(', ');
}

function metricLine(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Running, as opposed to gone or a zombie: a container's PID 1 may never reap the orphans it inherits. */
function alive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** The child side of the SIGKILL test: owns a pool, prints its workers' pids, then waits to be killed. */
async function runOwner(): Promise<void> {
  const backend = await startEchoBackend();
  const harness = await startPool([backend]);
  await waitFor(() => harness.listener.workersBound() === 2, 10_000, 'both workers to accept');
  const pids = harness.pool.workers().map((w) => w.pid);
  process.stdout.write(`${JSON.stringify({ pids, port: harness.port })}\n`);
  setInterval(() => undefined, 1000);
}

if (process.env[OWNER_ENV] === '1') {
  void runOwner();
} else {
  describe('proxy worker pool (2 workers, loopback)', () => {
    let backends: TestBackend[] = [];

    before(async () => {
      backends = [await startEchoBackend(), await startEchoBackend()];
    });

    after(async () => {
      await Promise.all(backends.map((b) => b.close()));
    });

    it('serves 2,000 connections through one shared listener, both workers accepting a share', { timeout: TEST_TIMEOUT_MS }, async () => {
      const h = await startPool(backends);
      try {
        assert.equal(h.listener.bound(), true);
        await waitFor(() => h.listener.workersBound() === 2, 10_000, 'both workers to accept');
        const started = performance.now();
        const result = await runConnections(h.port, 2000, 50);
        const elapsedMs = performance.now() - started;
        assert.deepEqual({ ok: result.ok, failed: result.failed }, { ok: 2000, failed: 0 }, `errors: ${JSON.stringify([...result.errors])}`);
        await waitFor(() => h.listener.stats().accepted === 2000, 5_000, 'worker reports to add up to 2000 accepted');
        const perWorker = acceptedPerWorker(h.pool, h.listener.spec.id);
        console.log(`2000 connections at 50 in flight in ${Math.round(elapsedMs)} ms (${Math.round(2000 / (elapsedMs / 1000))}/s); accept split ${split(perWorker)}`);
        for (const accepted of perWorker) assert.ok(accepted >= 100, `each worker accepts a share: ${split(perWorker)}`);

        const load = h.pool.load('test-pool');
        // A report may have counted a connection's accept before its upstream was established.
        const established = (): number => backends.reduce((sum, b) => sum + load.counters(b.endpoint.key).total, 0);
        await waitFor(() => established() === 2000, 5_000, `backend totals (${established()}) to reach 2000`);
        await waitFor(() => backends.every((b) => load.counters(b.endpoint.key).active === 0), 5_000, 'reports of no active upstream connections');

        const text = await h.pool.metricsText();
        assert.equal(metricLine(text, 'vipd_proxy_listener_accepted_total', `listener="${h.listener.spec.id}"`), 2000);
        assert.equal(metricLine(text, 'vipd_proxy_listener_bound', `listener="${h.listener.spec.id}"`), 1);
        const fromMetrics = backends.map((b) => metricLine(text, 'vipd_proxy_backend_connections_total', `pool="test-pool",backend="${b.endpoint.key}"`) ?? 0);
        assert.equal(fromMetrics[0]! + fromMetrics[1]!, 2000);
      } finally {
        await h.listener.close(1000);
        await h.pool.close();
      }
      assert.equal(h.listener.bound(), false);
      assert.deepEqual(h.boundChanges, [true, false]);
      assert.ok(h.pool.workers().every((w) => w.state === 'stopped' && !alive(w.pid ?? 0)));
    });

    it('restarts a killed worker; the listener stays bound and every later connection is served', { timeout: TEST_TIMEOUT_MS }, async () => {
      const h = await startPool(backends);
      try {
        await waitFor(() => h.listener.workersBound() === 2, 10_000, 'both workers to accept');
        // Traffic runs while the worker dies: its own sessions are cut, everyone else's are not.
        const during = runConnections(h.port, 1000, 20);
        await waitFor(() => (h.pool.workers()[0]!.listeners[h.listener.spec.id]?.accepted ?? 0) >= 100, 10_000, 'worker 0 to report 100 accepts');
        const before = h.pool.workers();
        const reportedByVictim = before[0]!.listeners[h.listener.spec.id]!.accepted;
        const killedAt = performance.now();
        process.kill(before[0]!.pid!, 'SIGKILL');
        await waitFor(() => h.pool.workers()[0]!.state !== 'up', 5_000, 'the pool to notice the death');
        assert.equal(h.listener.bound(), true, 'one worker still accepts');
        await waitFor(() => h.pool.workers()[0]!.state === 'up' && h.listener.workersBound() === 2, 10_000, 'the worker to come back and accept');
        const restartMs = performance.now() - killedAt;
        const duringResult = await during;
        const after = h.pool.workers();
        assert.equal(after[0]!.restarts, 1);
        assert.notEqual(after[0]!.pid, before[0]!.pid);
        assert.equal(after[1]!.pid, before[1]!.pid);

        const afterResult = await runConnections(h.port, 1000, 20);
        await waitFor(() => (h.pool.workers()[0]!.listeners[h.listener.spec.id]?.accepted ?? 0) > 0, 5_000, 'a report from the new worker');
        const perWorker = acceptedPerWorker(h.pool, h.listener.spec.id);
        console.log(
          `worker 0 killed: back and accepting after ${Math.round(restartMs)} ms; during the kill ${duringResult.ok} ok, ${duringResult.failed} failed ${JSON.stringify([...duringResult.errors])}; ` +
            `after: ${afterResult.ok} ok, ${afterResult.failed} failed; since restart ${split(perWorker)} (worker 1 counts since its start)`,
        );
        assert.deepEqual({ ok: afterResult.ok, failed: afterResult.failed }, { ok: 1000, failed: 0 }, `errors: ${JSON.stringify([...afterResult.errors])}`);
        assert.ok(perWorker[0]! > 0, 'the restarted worker accepts');
        assert.deepEqual(h.boundChanges, [true], 'bound() never dropped');
        // What the dead worker had reported stays in the totals.
        const live = perWorker.reduce((a, b) => a + b, 0);
        assert.ok(h.listener.stats().accepted >= reportedByVictim + live, `accepted ${h.listener.stats().accepted} < ${reportedByVictim} + ${live}`);
      } finally {
        await h.listener.close(1000);
        await h.pool.close();
      }
    });

    it('applies health changes and backend drains in every worker, including one started later', { timeout: TEST_TIMEOUT_MS }, async () => {
      const h = await startPool(backends);
      const [a, b] = backends as [TestBackend, TestBackend];
      const load = h.pool.load('test-pool');
      /** Connections each backend took during `run`. */
      const shares = async (run: () => Promise<LoadResult>): Promise<[number, number]> => {
        const before = [a.accepted, b.accepted];
        const result = await run();
        assert.equal(result.failed, 0, JSON.stringify([...result.errors]));
        return [a.accepted - before[0]!, b.accepted - before[1]!];
      };
      /** IPC is sub-millisecond on loopback; this is a generous bound, not a synchronisation. */
      const propagate = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 200));
      try {
        await waitFor(() => h.listener.workersBound() === 2, 10_000, 'both workers to accept');
        h.health.set([b.endpoint], [a.endpoint]);
        await propagate();
        assert.deepEqual(await shares(() => runConnections(h.port, 200, 10)), [0, 200], 'a is down');

        h.health.set([a.endpoint, b.endpoint]);
        assert.equal(load.drainBackend(a.endpoint.key, true), true);
        assert.equal(load.drainBackend('127.0.0.1:1', true), false, 'not in the pool');
        await propagate();
        assert.deepEqual(await shares(() => runConnections(h.port, 200, 10)), [0, 200], 'a is drained');
        assert.equal(load.counters(a.endpoint.key).drained, true);
        const text = await h.pool.metricsText();
        assert.equal(metricLine(text, 'vipd_proxy_backend_drained', `pool="test-pool",backend="${a.endpoint.key}"`), 1, 'drained in some worker, not a count of workers');

        const victim = h.pool.workers()[0]!.pid!;
        process.kill(victim, 'SIGKILL');
        await waitFor(() => h.pool.workers()[0]!.pid !== victim && h.listener.workersBound() === 2, 10_000, 'worker 0 to come back');
        assert.deepEqual(await shares(() => runConnections(h.port, 200, 10)), [0, 200], 'a is still drained, in the new worker too');

        load.drainBackend(a.endpoint.key, false);
        await propagate();
        const [toA, toB] = await shares(() => runConnections(h.port, 200, 10));
        assert.ok(toA >= 50 && toB >= 50, `undrained: a ${toA}, b ${toB}`);
      } finally {
        await h.listener.close(1000);
        await h.pool.close();
      }
    });

    it('reports unbound while no worker accepts, and binds again when they are back', { timeout: TEST_TIMEOUT_MS }, async () => {
      // A fixed port: once the last worker is gone the socket is closed, and port 0 would then pick another.
      const h = await startPool(backends, await freePort());
      try {
        await waitFor(() => h.listener.workersBound() === 2, 10_000, 'both workers to accept');
        const killedAt = performance.now();
        for (const w of h.pool.workers()) process.kill(w.pid!, 'SIGKILL');
        await waitFor(() => !h.listener.bound(), 5_000, 'bound() to turn false');
        const unboundMs = performance.now() - killedAt;
        await waitFor(() => h.listener.bound(), 10_000, 'bound() to turn true again');
        const reboundMs = performance.now() - killedAt;
        console.log(`both workers killed: unbound after ${Math.round(unboundMs)} ms, bound again after ${Math.round(reboundMs)} ms`);
        assert.deepEqual(h.boundChanges, [true, false, true]);
        await waitFor(() => h.listener.workersBound() === 2, 10_000, 'both workers to accept again');
        const result = await runConnections(h.port, 200, 10);
        assert.deepEqual({ ok: result.ok, failed: result.failed }, { ok: 200, failed: 0 });
      } finally {
        await h.listener.close(1000);
        await h.pool.close();
      }
    });

    it('workers ignore SIGTERM and SIGINT, which reach the whole process group, and stop when the pool closes', { timeout: TEST_TIMEOUT_MS }, async () => {
      const h = await startPool(backends);
      try {
        await waitFor(() => h.listener.workersBound() === 2, 10_000, 'both workers to accept');
        const pids = h.pool.workers().map((w) => w.pid!);
        process.kill(pids[0]!, 'SIGTERM');
        process.kill(pids[1]!, 'SIGINT');
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.deepEqual(h.pool.workers().map((w) => w.pid), pids, 'the same processes');
        assert.equal(h.listener.workersBound(), 2);
        const result = await runConnections(h.port, 100, 10);
        assert.equal(result.ok, 100);
      } finally {
        await h.listener.close(1000);
        await h.pool.close();
      }
      assert.ok(h.pool.workers().every((w) => w.state === 'stopped'));
    });

    it('start() rejects with the bind error when no worker can bind', { timeout: TEST_TIMEOUT_MS }, async () => {
      const spec = testPoolSpec(backends.map((b) => b.endpoint));
      const pool = new WorkerPool({ workers: 2, pools: [{ spec, health: new FakeHealth([]) }], logger: silentLogger(), metrics: createMetrics() });
      // TEST-NET-1: never an address of this host.
      const listener = pool.listener({ id: 'test:unbindable', vip: 'test', address: '192.0.2.1', port: 6443, pool: spec });
      try {
        await assert.rejects(listener.start(), (err: NodeJS.ErrnoException) => err.code === 'EADDRNOTAVAIL');
        assert.equal(listener.bound(), false);
      } finally {
        await listener.close(0);
        await pool.close();
      }
    });

    it('workers exit within 1 s of a SIGKILL of the process that owns the pool', { timeout: TEST_TIMEOUT_MS }, async () => {
      const owner = spawn(process.execPath, [__filename], { env: { ...process.env, [OWNER_ENV]: '1' }, stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const line = await new Promise<string>((resolve, reject) => {
          createInterface({ input: owner.stdout! }).once('line', resolve);
          owner.once('exit', (code) => reject(new Error(`owner exited early (${code})`)));
        });
        const { pids, port } = JSON.parse(line) as { pids: number[]; port: number };
        assert.equal(pids.length, 2);
        assert.ok(pids.every(alive));
        assert.deepEqual(await echoOnce(port, Buffer.from('hi')), Buffer.from('hi'));
        const killedAt = performance.now();
        owner.kill('SIGKILL');
        const goneMs = await waitFor(() => !pids.some(alive), 1000, 'the workers to exit');
        console.log(`owner SIGKILLed: both workers gone after ${Math.round(goneMs)} ms`);
        assert.ok(performance.now() - killedAt < 1000);
        // A zombie leader's sibling threads may still hold the socket for a moment; it must go soon.
        let lastOutcome = '';
        while (lastOutcome !== 'ECONNREFUSED' && performance.now() - killedAt < 1000) {
          lastOutcome = await echoOnce(port, Buffer.from('hi')).then(
            () => 'served',
            (err: NodeJS.ErrnoException) => err.code ?? String(err),
          );
        }
        assert.equal(lastOutcome, 'ECONNREFUSED', 'nobody accepts on the port once the workers are gone');
      } finally {
        owner.kill('SIGKILL');
      }
    });
  });
}
