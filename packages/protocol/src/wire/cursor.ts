import { streamError } from '../errors.js'
import { readU32le } from './byte-writer.js'
import { readVarint } from './varint.js'

/**
 * Bounds-checked reader over one record body. Every failure is a ProtocolError('MALFORMED') naming the absolute
 * stream offset; no other exception can escape.
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
  ) {
    this.pos = start
  }

  get offset(): number {
    return this.base + this.pos
  }

  get remaining(): number {
    return this.end - this.pos
  }

  fail(what: string, at = this.offset): never {
    throw streamError('MALFORMED', `${this.context}: ${what}`, at)
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
