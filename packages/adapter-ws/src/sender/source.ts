/**
 * Reads the source in message-sized pieces without copying: `take(max)` returns up to `max` bytes as parts and
 * keeps the rest of a chunk that did not fit for the next call.
 */
import type { Readable } from 'node:stream'

export class SourceReader {
  private pending: Buffer | null = null
  private ended = false
  private readonly onReadable = () => this.wake()
  private readonly onEnd = () => {
    this.ended = true
    this.wake()
  }

  /** @param wake called whenever there may be something new to read (data, end, error) */
  constructor(
    private readonly source: Readable,
    private readonly wake: () => void,
    private readonly onError: (err: Error) => void,
  ) {
    source.on('readable', this.onReadable)
    source.on('end', this.onEnd)
    source.on('error', onError)
  }

  /** Everything was read and handed out. */
  get exhausted(): boolean {
    return (this.ended && this.pending === null) || this.source.readableEnded
  }

  take(max: number): Buffer[] | null {
    const parts: Buffer[] = []
    let total = 0
    const add = (c: Buffer) => {
      if (total + c.length > max) {
        const n = max - total
        parts.push(c.subarray(0, n))
        this.pending = c.subarray(n)
        total = max
      } else {
        parts.push(c)
        total += c.length
      }
    }
    if (this.pending) {
      const p = this.pending
      this.pending = null
      add(p)
    }
    while (total < max) {
      const c: unknown = this.source.read()
      if (c === null) break
      if (typeof c === 'string') add(Buffer.from(c))
      else if (Buffer.isBuffer(c)) add(c)
      else if (c instanceof Uint8Array) add(Buffer.from(c.buffer, c.byteOffset, c.byteLength))
      else throw new TypeError('source must yield Buffers, Uint8Arrays or strings')
    }
    return total > 0 ? parts : null
  }

  close(): void {
    this.source.off('readable', this.onReadable)
    this.source.off('end', this.onEnd)
    this.source.off('error', this.onError)
  }
}
