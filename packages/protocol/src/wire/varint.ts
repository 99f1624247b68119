/**
 * Unsigned LEB128 as used by the xbzrle stream format (see SPEC.md §2.1).
 *
 * - little-endian groups of 7 bits, high bit = "more bytes follow";
 * - at most 8 bytes, value ≤ Number.MAX_SAFE_INTEGER (2^53 − 1);
 * - canonical only: a multi-byte encoding whose last byte is 0x00 (overlong) is rejected.
 */

export const MAX_VARINT_BYTES = 8

/** Number of bytes `writeVarint` uses for `value`. */
export function varintLength(value: number): number {
  let n = 1
  let v = value
  while (v >= 0x80) {
    v = Math.floor(v / 128)
    n++
  }
  return n
}

/** Writes `value` at `pos`; returns the position after it. The caller guarantees room and a valid value. */
export function writeVarint(buf: Uint8Array, pos: number, value: number): number {
  let v = value
  let p = pos
  while (v >= 0x80) {
    buf[p++] = (v & 0x7f) | 0x80
    v = Math.floor(v / 128)
  }
  buf[p++] = v
  return p
}

export function isVarintValue(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0
}

export type VarintResult =
  | { ok: true; value: number; length: number }
  | { ok: false; reason: 'incomplete' | 'overlong' | 'too-long' | 'too-large' }

/** Decodes a varint at `pos` (bytes up to `end`). Never throws. */
export function readVarint(buf: Uint8Array, pos: number, end: number): VarintResult {
  let value = 0
  let mul = 1
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos + i >= end) return { ok: false, reason: 'incomplete' }
    const b = buf[pos + i]!
    value += (b & 0x7f) * mul
    if ((b & 0x80) === 0) {
      if (i > 0 && b === 0) return { ok: false, reason: 'overlong' }
      if (value > Number.MAX_SAFE_INTEGER) return { ok: false, reason: 'too-large' }
      return { ok: true, value, length: i + 1 }
    }
    mul *= 128
  }
  return { ok: false, reason: 'too-long' }
}
