import { Transform, type TransformCallback } from 'node:stream'
import { type DecoderOptions, XbzrleDecoder } from './decoder.js'
import { type EncoderOptions, XbzrleEncoder } from './encoder.js'

/** Read/write size for files and pipes: big I/O is most of the speed of a filter. */
export const IO_CHUNK = 1 << 20

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e))
}

/** How long the input may pause before the open batch is closed and sent (see EncodeStream). */
export const IDLE_FLUSH_MS = 2

/**
 * A Transform that encodes a QEMU migration stream; backpressure is the Transform's own. Batches fill up to
 * their target size while input keeps coming (big batches compress better and cost less per byte), and the
 * open batch is closed as soon as the input pauses for IDLE_FLUSH_MS, so a live migration is never held back.
 */
export class EncodeStream extends Transform {
  readonly encoder: XbzrleEncoder
  private idle: NodeJS.Timeout | undefined

  constructor(options: EncoderOptions = {}) {
    super({ readableHighWaterMark: IO_CHUNK, writableHighWaterMark: IO_CHUNK })
    this.encoder = new XbzrleEncoder((c) => this.push(c), options)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.encoder.push(chunk)
      this.armIdleFlush()
      cb()
    } catch (e) {
      cb(toError(e))
    }
  }

  private armIdleFlush(): void {
    if (this.idle) this.idle.refresh()
    else {
      this.idle = setTimeout(() => {
        this.idle = undefined
        try {
          this.encoder.flush()
        } catch (e) {
          this.destroy(toError(e))
        }
      }, IDLE_FLUSH_MS)
    }
  }

  private disarm(): void {
    if (this.idle) clearTimeout(this.idle)
    this.idle = undefined
  }

  override _flush(cb: TransformCallback): void {
    this.disarm()
    try {
      this.encoder.finish()
      cb()
    } catch (e) {
      cb(toError(e))
    }
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.disarm()
    cb(err)
  }
}

/**
 * A Transform that decodes an xbzrle stream back into the original bytes, verified batch by batch, with
 * backpressure inside an input chunk: it decodes one batch, pushes it, and when the readable side is full it
 * waits for the consumer to read before decoding the next one (the Transform callback is held meanwhile, so no
 * more input is taken either). A chunk of 4-byte 'same' frames expands a thousandfold; memory stays at the cache
 * plus about two batches (≤ 4 MiB each) plus the readable buffer, whatever the amplification.
 */
export class DecodeStream extends Transform {
  readonly decoder: XbzrleDecoder
  /** Set while waiting for the consumer: continues decoding the current chunk. */
  private pending: (() => void) | undefined
  /** A verified batch decoded ahead, waiting for room on the readable side. */
  private held: Uint8Array | undefined

  constructor(options: DecoderOptions = {}) {
    super({ readableHighWaterMark: IO_CHUNK, writableHighWaterMark: IO_CHUNK })
    this.decoder = new XbzrleDecoder(undefined, options)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.decoder.push(chunk)
    } catch (e) {
      cb(toError(e))
      return
    }
    this.pump(cb, () => cb())
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.decoder.end()
    } catch (e) {
      cb(toError(e))
      return
    }
    this.pump(cb, () => {
      try {
        this.decoder.finish()
        cb()
      } catch (e) {
        cb(toError(e))
      }
    })
  }

  /**
   * Decodes and pushes batches until the input is used up (then `done`), pausing while the consumer is behind.
   * When the readable side is full it decodes one batch ahead and holds it: if there is none, the chunk is done
   * and the Transform's own backpressure takes over; if there is one, `_read` pushes it when the consumer asks.
   */
  private pump(cb: TransformCallback, done: () => void): void {
    for (;;) {
      if (this.destroyed) return
      let out: Uint8Array | undefined
      try {
        out = this.held ?? this.decoder.nextOutput()
        this.held = undefined
      } catch (e) {
        cb(toError(e))
        return
      }
      if (out === undefined) {
        done()
        return
      }
      if (!this.push(out)) {
        try {
          this.held = this.decoder.nextOutput()
        } catch (e) {
          cb(toError(e))
          return
        }
        if (this.held === undefined) {
          done()
          return
        }
        this.pending = () => this.pump(cb, done)
        return
      }
    }
  }

  override _read(size: number): void {
    const r = this.pending
    if (r) {
      this.pending = undefined
      r()
    } else super._read(size)
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.pending = undefined
    this.held = undefined
    cb(err)
  }
}
