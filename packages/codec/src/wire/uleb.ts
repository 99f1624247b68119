/**
 * QEMU's "uleb128 small" (util/cutils.c): unsigned LEB128 restricted to values <= 0x3fff, so one or two bytes.
 *
 * The decoder is deliberately as lenient as QEMU's: it accepts non-canonical two-byte forms such as `80 00` (= 0),
 * and rejects only a second byte with its continuation bit set. Matching QEMU exactly matters because our decoder
 * must accept every delta QEMU accepts and reject every delta QEMU rejects.
 */

/** Largest value the small form can carry. */
export const ULEB_SMALL_MAX = 0x3fff

/** Number of bytes `writeUlebSmall` uses for `n`. */
export function ulebSmallLength(n: number): 1 | 2 {
  return n < 0x80 ? 1 : 2
}

/**
 * Writes `n` (0..0x3fff) at `dst[off]` and returns the number of bytes written. Throws on out-of-range values
 * (QEMU asserts); the hot encoders inline this and never hit the check.
 */
export function writeUlebSmall(dst: Uint8Array, off: number, n: number): 1 | 2 {
  if (!Number.isInteger(n) || n < 0 || n > ULEB_SMALL_MAX)
    throw new RangeError(`uleb128 small: ${n} out of range`)
  if (n < 0x80) {
    dst[off] = n
    return 1
  }
  dst[off] = (n & 0x7f) | 0x80
  dst[off + 1] = n >>> 7
  return 2
}

/**
 * Reads a small uleb at `src[off]`. Returns `value * 4 + byteLength` packed into one number (no allocation on the
 * decoder's hot path), or -1 when the second byte has its high bit set (QEMU's only rejection).
 * The caller guarantees that two bytes are readable when the first has its high bit set; QEMU's decoder checks
 * "at least 2 bytes remain" before every uleb for that reason. A missing second byte reads as undefined → 0.
 */
export function readUlebSmallPacked(src: Uint8Array, off: number): number {
  const b0 = src[off]!
  if ((b0 & 0x80) === 0) return b0 * 4 + 1
  const b1 = src[off + 1] ?? 0
  if (b1 & 0x80) return -1
  return ((b0 & 0x7f) | (b1 << 7)) * 4 + 2
}

/** Friendly form of {@link readUlebSmallPacked}: `{ value, length }`, or `null` on an invalid second byte. */
export function readUlebSmall(src: Uint8Array, off: number): { value: number; length: 1 | 2 } | null {
  const p = readUlebSmallPacked(src, off)
  if (p < 0) return null
  return { value: p >>> 2, length: (p & 3) as 1 | 2 }
}
