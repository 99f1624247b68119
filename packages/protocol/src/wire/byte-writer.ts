import { writeVarint } from './varint.js'

/** An uninitialised array of `n` bytes (no zero fill: every byte handed out is written first). */
export function allocRaw(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n)
  return new Uint8Array(b.buffer, b.byteOffset, n)
}

/**
 * A growable byte buffer, written front to back and reused (msgpack-javascript style): one backing
 * `Uint8Array` that doubles when full, no allocation per item. `take()` hands the written bytes out (without a
 * copy when they fill at least half the buffer) and rewinds.
 */
export class ByteWriter {
  buf: Uint8Array
  pos = 0
  private readonly capacity: number

  constructor(initialCapacity = 64 * 1024) {
    this.capacity = Math.max(16, initialCapacity)
    this.buf = allocRaw(this.capacity)
  }

  ensure(extra: number): void {
    const need = this.pos + extra
    if (need <= this.buf.length) return
    let cap = this.buf.length * 2
    while (cap < need) cap *= 2
    const next = allocRaw(cap)
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
  }

  u8(value: number): void {
    this.ensure(1)
    this.buf[this.pos++] = value
  }

  u32le(value: number): void {
    this.ensure(4)
    this.patchU32le(this.pos, value)
    this.pos += 4
  }

  patchU32le(at: number, value: number): void {
    writeU32le(this.buf, at, value)
  }

  varint(value: number): void {
    this.ensure(10)
    this.pos = writeVarint(this.buf, this.pos, value)
  }

  bytes(data: Uint8Array): void {
    this.ensure(data.length)
    this.buf.set(data, this.pos)
    this.pos += data.length
  }

  /** Reserves `n` bytes (to be patched later) and returns their position. */
  reserve(n: number): number {
    this.ensure(n)
    const at = this.pos
    this.pos += n
    return at
  }

  /** A view of written bytes; valid only until the next write. */
  view(start = 0, end = this.pos): Uint8Array {
    return this.buf.subarray(start, end)
  }

  /**
   * Everything written so far as a caller-owned array, and rewinds to 0. When the bytes fill at least half the
   * buffer, the buffer itself is handed out (a view of its written part, no copy) and a fresh one of the initial
   * capacity replaces it; a smaller part is copied out so that a small chunk does not pin a large buffer.
   */
  take(): Uint8Array {
    const n = this.pos
    const buf = this.buf
    this.pos = 0
    if (n * 2 < buf.length) return buf.slice(0, n)
    this.buf = allocRaw(this.capacity)
    return buf.subarray(0, n)
  }
}

/** Little-endian u32 write, no bounds check. */
export function writeU32le(b: Uint8Array, at: number, value: number): void {
  b[at] = value & 0xff
  b[at + 1] = (value >>> 8) & 0xff
  b[at + 2] = (value >>> 16) & 0xff
  b[at + 3] = (value >>> 24) & 0xff
}

/** Little-endian u32 read, no bounds check. */
export function readU32le(buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0
}
