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

/**
 * The buffers one upstream leg reads into (net's `onread`): the current one, reused from read to read,
 * and a spare.
 *
 * A buffer is *lent* while a write to the client still refers to it: a chunk that the kernel did not
 * take at once waits in the client's queue as a view of the read buffer, so the next read needs
 * another one. Writes complete in order, so the lent buffer is free again once the client's queue
 * holds fewer bytes than were written after its chunk. A bulk transfer thus alternates between two
 * buffers instead of allocating a large one per read: allocating and freeing 512 KiB buffers at
 * gigabytes per second stalled the event loop for milliseconds whenever the freed ones were swept
 * (latency p99 after a download, docs/performance.md). Small buffers are not kept as spares: they
 * are slices of Node's shared pool and cost next to nothing to allocate.
 */
export class UpstreamReadBuffers {
  private current: Buffer | undefined;
  private currentLent = false;
  /** Bytes written to the client up to the end of the current buffer's chunk (valid while lent). */
  private currentChunkEnd = 0;
  private spare: Buffer | undefined;
  private spareChunkEnd = 0;
  private lastRead = 0;

  constructor(private readonly maxBytes: number) {}

  /** `length` bytes were read into the current buffer. */
  read(length: number): void {
    this.lastRead = length;
  }

  /** The chunk just read is still queued towards the client; it ends at `chunkEnd` bytes written in all. */
  lendCurrent(chunkEnd: number): void {
    this.currentLent = true;
    this.currentChunkEnd = chunkEnd;
  }

  /** The buffer for the next read. `flushed`: bytes written to the client that have left its queue. */
  next(flushed: number): Buffer {
    const current = this.current;
    if (current === undefined) return (this.current = Buffer.allocUnsafe(MIN_READ_BUFFER_BYTES));
    const size = nextReadBufferSize(current.length, this.lastRead, this.maxBytes);
    if (size !== current.length) {
      this.spare = undefined;
      this.currentLent = false;
      return (this.current = Buffer.allocUnsafe(size));
    }
    if (!this.currentLent) return current;
    const spare = this.spare;
    const spareFree = spare !== undefined && this.spareChunkEnd <= flushed;
    this.spare = size > MIN_READ_BUFFER_BYTES ? current : undefined;
    this.spareChunkEnd = this.currentChunkEnd;
    this.currentLent = false;
    return (this.current = spareFree ? spare : Buffer.allocUnsafe(size));
  }
}
