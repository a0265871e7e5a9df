/**
 * 32-bit string hash for source-hash balancing: FNV-1a over UTF-16 code units, then murmur3's fmix32.
 * FNV-1a alone leaves addresses that differ only in their last digits close together in the low bits;
 * the finalizer spreads every input bit over the whole word, so `hash % tableSize` is uniform.
 * Not cryptographic: a client choosing its own address can aim at a backend, which it could anyway by
 * connecting repeatedly. The same input and seed give the same value in every process and on every
 * node, which is what lets several vipd nodes behind one anycast VIP agree on where a client goes.
 */
export function hash32(text: string, start = 0, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = start; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const IPV4_MAPPED_PREFIX = '::ffff:';

/**
 * Hash of a client address. An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d;
 * hashing only the IPv4 part keeps that client on the same backend whichever family the listener uses.
 */
export function hashClientAddress(address: string): number {
  const mapped = address.length > IPV4_MAPPED_PREFIX.length && address.startsWith(IPV4_MAPPED_PREFIX) && address.includes('.', IPV4_MAPPED_PREFIX.length);
  return hash32(address, mapped ? IPV4_MAPPED_PREFIX.length : 0);
}
