import { Transform, type TransformCallback } from 'node:stream'
import { baseRequirementOf, FrameReader, type StreamHeader } from '@xbzrle/protocol'
import type { XbzrleDecoder } from '../filter/decoder.js'
import type { DecoderBase } from './base-image.js'
import { ACCEPTED_CRITICAL } from './stream-header.js'

/** The header record is at most 64 KiB: past this much input without one, the decoder reports the stream. */
const HEADER_LIMIT = 1 << 20

/**
 * Sits before a DecodeStream whose base is known only once the stream's header arrived (a receiver that holds
 * a base image): holds the input until the header is read; if the header names a base, `resolve(header)` seeds
 * and verifies it (prepareDecoderBase) and the decoder gets it (`setBase`) before the first byte passes. A
 * stream without a base, or input that is not a valid header (the decoder reports it), passes unchanged.
 */
export class BaseGate extends Transform {
  private readonly reader = new FrameReader({ acceptCritical: ACCEPTED_CRITICAL })
  private held: Buffer[] = []
  private heldBytes = 0
  private open = false

  constructor(
    private readonly decoder: XbzrleDecoder,
    private readonly resolve: (header: StreamHeader) => Promise<DecoderBase>,
  ) {
    super()
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.open) {
      cb(null, chunk)
      return
    }
    this.held.push(chunk)
    this.heldBytes += chunk.length
    let header: StreamHeader | undefined
    try {
      this.reader.push(chunk)
      const item = this.reader.next()
      if (item?.type === 'header') header = item.header
      else if (this.heldBytes <= HEADER_LIMIT) {
        cb()
        return
      }
    } catch {
      // not a valid header: the decoder says what is wrong with its own message
    }
    if (!header || !baseRequirementOf(header)) {
      this.release(cb)
      return
    }
    this.resolve(header).then(
      (base) => {
        this.decoder.setBase(base)
        this.release(cb)
      },
      (e: Error) => cb(e),
    )
  }

  override _flush(cb: TransformCallback): void {
    this.release(cb)
  }

  private release(cb: TransformCallback): void {
    this.open = true
    for (const c of this.held.splice(0)) this.push(c)
    this.heldBytes = 0
    cb()
  }
}
