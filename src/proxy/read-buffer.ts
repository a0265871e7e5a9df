/**
 * Sizes of the buffers the upstream leg reads into (net's `onread`, see Session.nextReadBuffer).
 *
 * Why not Node's default reads: a net.Socket without `onread` allocates a fresh 64 KiB buffer for
 * every read and pushes it through its Readable. With `onread` the session owns the buffer: an idle
 * or chatty connection reads into one small buffer again and again (no allocation per read), and a
 * bulk transfer climbs to large reads, which cost far fewer syscalls and wake-ups per byte than
 * 64 KiB ones (docs/performance.md has the measurements).
 *
 * The size follows what the reads bring: a read that fills the buffer moves the next one a rung up;
 * a read that uses less than a rung's worth moves it a rung down. A quiet connection thus holds
 * MIN_READ_BUFFER_BYTES, and only a connection that is streaming holds a large buffer.
 */
export const MIN_READ_BUFFER_BYTES = 2 * 1024;
/** Default largest read; ListenerOptions.maxReadBufferBytes overrides it. */
export const DEFAULT_MAX_READ_BUFFER_BYTES = 512 * 1024;
const RUNG_FACTOR = 8;

/** The size of the next read buffer, after a read of `lastRead` bytes into one of `current` bytes. */
export function nextReadBufferSize(current: number, lastRead: number, max: number): number {
  if (lastRead >= current) return Math.min(current * RUNG_FACTOR, Math.max(max, MIN_READ_BUFFER_BYTES));
  if (lastRead < current / RUNG_FACTOR && current > MIN_READ_BUFFER_BYTES) {
    return Math.max(MIN_READ_BUFFER_BYTES, Math.floor(current / RUNG_FACTOR));
  }
  return current;
}
