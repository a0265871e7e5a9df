/*
 * The client bytes a session keeps for pool.retryBeforeReply (proxy.ts explains the modes).
 */

/**
 * The most client bytes kept for a replay. A ClientHello is 0.3-2 KiB (larger with post-quantum key
 * shares); a client that sends more before any answer is past what a replay is for.
 */
export const REPLAY_LIMIT_BYTES = 16 * 1024;

const TLS_RECORD_HEADER_BYTES = 5;
const TLS_CONTENT_HANDSHAKE = 0x16;
const TLS_MAJOR_VERSION = 0x03;

/** False when `firstChunk` cannot be the start of a TLS handshake (a cheap test before any ReplayBuffer exists). */
export function mayStartTlsHandshake(firstChunk: Buffer): boolean {
  return firstChunk[0] === TLS_CONTENT_HANDSHAKE;
}

/**
 * What a session has sent to a backend that has not answered yet, kept (the chunks themselves, no
 * copies: Node gives every read a buffer of its own) until the backend's first byte.
 */
export class ReplayBuffer {
  readonly chunks: Buffer[] = [];
  private bytes = 0;
  /** TLS mode: body bytes of the current record that are still to come in later chunks. */
  private recordBodyLeft = 0;

  constructor(private readonly tlsOnly: boolean) {}

  /** Keeps `chunk`; false when the session can no longer be replayed (too many bytes, or not a TLS handshake). */
  add(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    if (this.bytes > REPLAY_LIMIT_BYTES) return false;
    if (this.tlsOnly && !this.handshakeRecordsOnly(chunk)) return false;
    this.chunks.push(chunk);
    return true;
  }

  /**
   * Walks the record headers in `chunk` (continuing a record begun in an earlier chunk): every record
   * must be a handshake record. A header split across two reads is treated as not replayable; it
   * does not happen for a ClientHello, which is one record at the start of the stream.
   */
  private handshakeRecordsOnly(chunk: Buffer): boolean {
    let at = this.recordBodyLeft;
    while (at < chunk.length) {
      if (at + TLS_RECORD_HEADER_BYTES > chunk.length) return false;
      if (chunk[at] !== TLS_CONTENT_HANDSHAKE || chunk[at + 1] !== TLS_MAJOR_VERSION) return false;
      at += TLS_RECORD_HEADER_BYTES + chunk.readUInt16BE(at + 3);
    }
    this.recordBodyLeft = at - chunk.length;
    return true;
  }
}
