/**
 * The 8-byte magic that starts every xbzrle stream of every version, PNG style:
 * `89 58 42 5A 0D 0A 1A 0A` = 0x89 "XBZ" CR LF SUB LF.
 * - 0x89 (high bit) catches 7-bit channels, and makes text tools treat the file as binary;
 * - CR LF catches CRLF→LF and LF→CRLF conversion; SUB (^Z) stops `type` on DOS; the final LF catches LF→CRLF.
 */
export const MAGIC: Uint8Array = Uint8Array.of(0x89, 0x58, 0x42, 0x5a, 0x0d, 0x0a, 0x1a, 0x0a)
export const MAGIC_LENGTH = 8

/** True iff `bytes` starts with as much of the magic as it holds (so a short prefix can still match). */
export function matchesMagicPrefix(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, MAGIC_LENGTH)
  for (let i = 0; i < n; i++) if (bytes[i] !== MAGIC[i]) return false
  return true
}
