import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_MAX_READ_BUFFER_BYTES, MIN_READ_BUFFER_BYTES, nextReadBufferSize, UpstreamReadBuffers } from '../../src/proxy/read-buffer';

describe('upstream read buffer sizing', () => {
  const max = DEFAULT_MAX_READ_BUFFER_BYTES;

  it('a streaming connection climbs to the maximum in a few full reads and stays there', () => {
    const sizes = [MIN_READ_BUFFER_BYTES];
    while (sizes.length < 6) {
      const current = sizes[sizes.length - 1]!;
      sizes.push(nextReadBufferSize(current, current, max));
    }
    assert.deepEqual(sizes, [2048, 16384, 131072, max, max, max]);
  });

  it('a quiet connection falls back a rung per small read, never below the minimum', () => {
    const sizes = [max];
    while (sizes.length < 6) sizes.push(nextReadBufferSize(sizes[sizes.length - 1]!, 300, max));
    assert.deepEqual(sizes, [max, 65536, 8192, 2048, 2048, 2048]);
  });

  it('a read that uses a fair share of the buffer keeps its size', () => {
    assert.equal(nextReadBufferSize(131072, 131071, max), 131072);
    assert.equal(nextReadBufferSize(131072, 131072 / 8, max), 131072);
    assert.equal(nextReadBufferSize(2048, 1, max), 2048);
  });

  it('a smaller configured maximum caps the climb', () => {
    assert.equal(nextReadBufferSize(16384, 16384, 65536), 65536);
    assert.equal(nextReadBufferSize(65536, 65536, 65536), 65536);
  });
});

describe('upstream read buffers: reuse and lending', () => {
  /** Reads that fill the buffer until it is at `size`. */
  function grownTo(size: number): { buffers: UpstreamReadBuffers; current: Buffer } {
    const buffers = new UpstreamReadBuffers(size);
    let current = buffers.next(0);
    while (current.length < size) {
      buffers.read(current.length);
      current = buffers.next(0);
    }
    return { buffers, current };
  }

  it('a buffer whose chunk was written at once is reused for the next read', () => {
    const buffers = new UpstreamReadBuffers(DEFAULT_MAX_READ_BUFFER_BYTES);
    const first = buffers.next(0);
    assert.equal(first.length, MIN_READ_BUFFER_BYTES);
    buffers.read(300);
    assert.equal(buffers.next(300), first);
  });

  it('a lent buffer is never handed out while its chunk is queued, and comes back once flushed', () => {
    const size = 64 * 1024;
    const { buffers, current: a } = grownTo(size);
    // Chunk 1 (in a) is still queued: the next read must go elsewhere.
    buffers.read(size);
    buffers.lendCurrent(size);
    const b = buffers.next(0);
    assert.notEqual(b, a);
    // Chunk 2 (in b) queued as well, chunk 1 not yet flushed: a third buffer.
    buffers.read(size);
    buffers.lendCurrent(2 * size);
    const c = buffers.next(size - 1);
    assert.notEqual(c, a);
    assert.notEqual(c, b);
    // Chunk 3 (in c) queued; chunks 1 and 2 flushed: b, the spare, is free again.
    buffers.read(size);
    buffers.lendCurrent(3 * size);
    const d = buffers.next(2 * size);
    assert.equal(d, b);
    // Chunk 4 (in b) queued, chunk 3 flushed: the two buffers alternate, nothing new is allocated.
    buffers.read(size);
    buffers.lendCurrent(4 * size);
    assert.equal(buffers.next(3 * size), c);
  });

  it('a change of size drops the spare, and small buffers are never kept as spares', () => {
    const buffers = new UpstreamReadBuffers(DEFAULT_MAX_READ_BUFFER_BYTES);
    const small = buffers.next(0);
    buffers.read(100);
    buffers.lendCurrent(100);
    const other = buffers.next(100);
    assert.notEqual(other, small);
    buffers.read(100);
    buffers.lendCurrent(200);
    // Everything flushed, but the small lent buffer was not kept: a fresh slice instead.
    const third = buffers.next(200);
    assert.notEqual(third, small);
    assert.notEqual(third, other);
  });
});
