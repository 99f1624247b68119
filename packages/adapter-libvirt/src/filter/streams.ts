import { Transform, type TransformCallback } from 'node:stream'
import { type DecoderOptions, XbzrleDecoder } from './decoder.js'
import { type EncoderOptions, XbzrleEncoder } from './encoder.js'

/** Read/write size for files and pipes: big I/O is most of the speed of a filter. */
export const IO_CHUNK = 1 << 20

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e))
}

/**
 * A Transform that encodes a QEMU migration stream. After every input chunk it closes the current batch, so a
 * live migration is never held back waiting for a full batch; backpressure is the Transform's own.
 */
export class EncodeStream extends Transform {
  readonly encoder: XbzrleEncoder

  constructor(options: EncoderOptions = {}) {
    super({ readableHighWaterMark: IO_CHUNK, writableHighWaterMark: IO_CHUNK })
    this.encoder = new XbzrleEncoder((c) => this.push(c), options)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.encoder.push(chunk)
      this.encoder.flush()
      cb()
    } catch (e) {
      cb(toError(e))
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.encoder.finish()
      cb()
    } catch (e) {
      cb(toError(e))
    }
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
