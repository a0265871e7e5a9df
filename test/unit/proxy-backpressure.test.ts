import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { connectClient, startBackend } from '../fakes/proxy-backends';
import { startProxy, type ProxyUnderTest } from '../fakes/proxy-harness';

/** A relay that stalls must fail the test, not hang the run. */
const TEST_TIMEOUT_MS = 20_000;

const MB = 1024 * 1024;
const TOTAL = 20 * MB;
/**
 * The largest chunk one read hands to JavaScript: 64 KiB for the client leg (Node's reads), and the
 * session's read buffer for the upstream leg, pinned to the same size here (maxReadBufferBytes).
 */
const READ_CHUNK = 64 * 1024;
/** vipd's stream high-water mark on both legs (Node 20's default, set explicitly so the bound is ours). */
const HIGH_WATER_MARK = 16 * 1024;
/** Slow enough that the proxy, not the kernel, decides how much piles up. */
const READER_BYTES_PER_SECOND = 16 * MB;

/** Writes `total` pseudo-random bytes as fast as the socket accepts them; returns their sha256. */
function writeFast(socket: Socket, total: number): Promise<string> {
  const hash = createHash('sha256');
  const block = Buffer.alloc(READ_CHUNK);
  let sent = 0;
  let seed = 12345;
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    const pump = (): void => {
      while (sent < total) {
        for (let i = 0; i < block.length; i += 4) {
          seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
          block.writeUInt32LE(seed, i);
        }
        const chunk = Buffer.from(block.subarray(0, Math.min(block.length, total - sent)));
        hash.update(chunk);
        sent += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end(() => resolve(hash.digest('hex')));
    };
    pump();
  });
}

/** Reads to EOF at about `bytesPerSecond`; returns the sha256 of what arrived and its length. */
function readSlowly(socket: Socket, bytesPerSecond: number): Promise<{ sha: string; length: number }> {
  const hash = createHash('sha256');
  let length = 0;
  return new Promise((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
      socket.pause();
      setTimeout(() => socket.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    socket.once('end', () => resolve({ sha: hash.digest('hex'), length }));
    socket.once('error', reject);
  });
}

/** Samples the proxy's buffered bytes per session on every turn of the event loop until stopped. */
function sampleBuffered(proxy: ProxyUnderTest): { stop(): { max: number; samples: number } } {
  let max = 0;
  let samples = 0;
  let running = true;
  const tick = (): void => {
    if (!running) return;
    for (const session of proxy.listener.sessions()) {
      max = Math.max(max, session.bufferedBytes());
      samples++;
    }
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop: () => {
      running = false;
      return { max, samples };
    },
  };
}

describe('backpressure (T10)', () => {
  // With a first-byte timeout the client's first chunk is held while the upstream is dialled: it must
  // count in the bound too.
  for (const [direction, firstByteMs] of [
    ['backend->client', 0],
    ['client->backend', 0],
    ['client->backend', 5_000],
  ] as const) {
    it(`${direction}${firstByteMs > 0 ? ', first-byte timeout on' : ''}: 20 MB to a slow reader stays bounded in vipd and arrives intact`, { timeout: TEST_TIMEOUT_MS }, async () => {
      let backendSide!: Promise<{ sha: string; length: number } | string>;
      const backend = await startBackend((socket) => {
        backendSide = direction === 'backend->client' ? writeFast(socket, TOTAL) : readSlowly(socket, READER_BYTES_PER_SECOND);
      });
      const proxy = await startProxy({
        healthy: [backend.endpoint],
        highWaterMark: HIGH_WATER_MARK,
        maxReadBufferBytes: READ_CHUNK,
        timeouts: { firstByteMs },
      });
      try {
        const client = await connectClient(proxy.port);
        const sampler = sampleBuffered(proxy);
        const started = performance.now();
        let sentSha: string;
        let received: { sha: string; length: number };
        if (direction === 'backend->client') {
          received = await readSlowly(client, READER_BYTES_PER_SECOND);
          sentSha = (await backendSide) as string;
          client.end();
        } else {
          sentSha = await writeFast(client, TOTAL);
          received = (await backendSide) as { sha: string; length: number };
        }
        const seconds = (performance.now() - started) / 1000;
        const { max, samples } = sampler.stop();
        // Per direction the writer holds < its high-water mark + the chunk that crossed it. From the
        // client, the paused reader also holds what one more read brings in (< its high-water mark + a
        // chunk): Node stops reading a paused socket only after the next read has landed. The upstream
        // leg reads into the session's buffer, which stops at once: one chunk.
        const bound = direction === 'client->backend' ? 2 * HIGH_WATER_MARK + 2 * READ_CHUNK : HIGH_WATER_MARK + READ_CHUNK;
        console.log(
          `T10 ${direction}: ${(TOTAL / MB).toFixed(0)} MB in ${seconds.toFixed(2)} s; max buffered in vipd ${max} B ` +
            `over ${samples} samples (high-water mark ${HIGH_WATER_MARK} B, read chunk ${READ_CHUNK} B, bound ${bound} B)`,
        );
        assert.equal(received.length, TOTAL);
        assert.equal(received.sha, sentSha);
        assert.ok(samples > 100, 'too few samples to say anything about buffering');
        assert.ok(max > 0, 'nothing was ever buffered: the reader was not slow enough to test backpressure');
        assert.ok(max <= bound, `buffered ${max} B > ${bound} B`);
      } finally {
        await proxy.listener.close(1_000);
        await backend.close();
      }
    });
  }
});
