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

/** A Transform that decodes an xbzrle stream back into the original bytes, verified batch by batch. */
export class DecodeStream extends Transform {
  readonly decoder: XbzrleDecoder

  constructor(options: DecoderOptions = {}) {
    super({ readableHighWaterMark: IO_CHUNK, writableHighWaterMark: IO_CHUNK })
    this.decoder = new XbzrleDecoder((c) => this.push(c), options)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.decoder.push(chunk)
      cb()
    } catch (e) {
      cb(toError(e))
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.decoder.finish()
      cb()
    } catch (e) {
      cb(toError(e))
    }
  }
}
