import { allocRaw } from './byte-writer.js'

/**
 * FIFO of pushed chunks with cheap contiguous views: a record that lies inside one chunk is returned as a
 * subarray of that chunk (no copy); one that spans chunks is assembled once into a new array.
 */
export class ChunkQueue {
  private chunks: Uint8Array[] = []
  private head = 0
  private headOff = 0
  /** Bytes available. */
  length = 0
  /** Absolute stream offset of the first available byte. */
  offset = 0

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.length += chunk.length
  }

  /** Byte at index `i` (< length) from the front. */
  byteAt(i: number): number {
    let idx = this.head
    let off = this.headOff + i
    for (;;) {
      const c = this.chunks[idx]!
      if (off < c.length) return c[off]!
      off -= c.length
      idx++
    }
  }

  /** The first `n` (≤ length) bytes as one contiguous array. */
  view(n: number): Uint8Array {
    const first = this.chunks[this.head]
    if (n === 0 || first === undefined) return new Uint8Array(0)
    if (first.length - this.headOff >= n) return first.subarray(this.headOff, this.headOff + n)
    // Every byte is filled below: no zero fill (a batch spanning two 1 MiB input chunks is most batches).
    const out = allocRaw(n)
    let filled = 0
    let idx = this.head
    let off = this.headOff
    while (filled < n) {
      const c = this.chunks[idx]!
      const take = Math.min(c.length - off, n - filled)
      out.set(c.subarray(off, off + take), filled)
      filled += take
      idx++
      off = 0
    }
    return out
  }

  consume(n: number): void {
    this.length -= n
    this.offset += n
    let left = n
    while (left > 0) {
      const c = this.chunks[this.head]!
      const avail = c.length - this.headOff
      if (left < avail) {
        this.headOff += left
        break
      }
      left -= avail
      this.chunks[this.head] = EMPTY
      this.head++
      this.headOff = 0
    }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }
}

const EMPTY = new Uint8Array(0)
