import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_MAX_READ_BUFFER_BYTES, MIN_READ_BUFFER_BYTES, nextReadBufferSize } from '../../src/proxy/read-buffer';

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
