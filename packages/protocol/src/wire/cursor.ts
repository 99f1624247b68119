import { type ProtocolError, type ProtocolErrorCode, streamError } from '../errors.js'
import { readU32le } from './byte-writer.js'
import { readVarint } from './varint.js'

/**
 * Bounds-checked reader over one record body. Every failure is a ProtocolError('MALFORMED') naming the absolute
 * stream offset; no other exception can escape. A cursor over bytes that are not in the stream (the decompressed
 * frames of a v2 batch) is given `reportAt`: its errors are reported at that stream offset and name the position
 * inside those bytes, e.g. `… (byte 7 of the decompressed frames) at offset 48 (…)`.
 */
export class Cursor {
  pos: number

  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
    /** Absolute stream offset of `buf[0]`. */
    readonly base: number,
    /** E.g. "batch 3", used in messages. */
    readonly context: string,
    /** Stream offset errors are reported at when `buf` is not part of the stream (−1: `buf` is in the stream). */
    readonly reportAt = -1,
  ) {
    this.pos = start
  }

  get offset(): number {
    return this.base + this.pos
  }

  get remaining(): number {
    return this.end - this.pos
  }

  /** The error `code` about the byte at `at` (an offset as given by `this.offset`). */
  error(code: ProtocolErrorCode, what: string, at = this.offset): ProtocolError {
    if (this.reportAt < 0) return streamError(code, what, at)
    return streamError(code, `${what} (byte ${at} of the decompressed frames)`, this.reportAt)
  }

  fail(what: string, at = this.offset): never {
    throw this.error('MALFORMED', `${this.context}: ${what}`, at)
  }

  u8(field: string): number {
    if (this.pos >= this.end) this.fail(`${field} runs past the end of the record`)
    return this.buf[this.pos++]!
  }

  u32le(field: string): number {
    if (this.pos + 4 > this.end) this.fail(`${field} runs past the end of the record`)
    const v = readU32le(this.buf, this.pos)
    this.pos += 4
    return v
  }

  varint(field: string): number {
    const r = readVarint(this.buf, this.pos, this.end)
    if (!r.ok) {
      const why =
        r.reason === 'incomplete'
          ? 'runs past the end of the record'
          : r.reason === 'overlong'
            ? 'is a non-canonical (overlong) varint'
            : 'is a varint above 2^53-1'
      this.fail(`${field} ${why}`)
    }
    this.pos += r.length
    return r.value
  }

  bytes(n: number, field: string): Uint8Array {
    if (n > this.end - this.pos) this.fail(`${field} (${n} bytes) runs past the end of the record`)
    const v = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return v
  }
}
