import { streamError } from '../errors.js'
import type { ReadFormat, StreamReading } from '../record/format.js'
import { onlyVersion, RecordReader } from '../record/reader.js'
import { Cursor } from '../wire/cursor.js'
import { CODEC_PACKAGES, type Compressor, findCompressor } from './codecs.js'
import { PayloadEncoding, VERSION } from './constants.js'
import { readHeaderBodyV2 } from './header.js'
import type { Compression, FrameReaderOptions, ReaderItem } from './types.js'

/**
 * The v2 batch payload (SPEC.md §11.1, §11.4), shared by every version that has it: `enc:u8`, then the frames
 * (enc 0) or `framesLength:varint` and the frames compressed with the header's codec (enc 1). The compressor is
 * looked up now: a stream that names a codec whose package is missing is refused at the header. With `reuse`,
 * every batch is decompressed into one buffer (grown to the largest batch; bounded by the batch limit), so the
 * frames of a batch are valid only until the next batch is read.
 */
export function payloadReader(compression: Compression, reuse = false): StreamReading['readPayload'] {
  const codec = compression.codec
  let compressor: Compressor | undefined
  if (codec !== 'none') {
    compressor = findCompressor(codec)
    if (compressor === undefined) {
      const pkg = CODEC_PACKAGES[codec]!
      throw streamError(
        'COMPRESSOR_UNAVAILABLE',
        `compressed with ${codec} but ${pkg} is not installed`,
        -1,
        `npm install ${pkg}`,
      )
    }
  }
  let scratch: Uint8Array | undefined
  const into = (size: number): Uint8Array | undefined => {
    if (!reuse || compressor?.decompressInto === undefined) return undefined
    if (scratch === undefined || scratch.length < size) scratch = new Uint8Array(size)
    return scratch
  }
  return (c, headLen, lim, ctx) => {
    const encAt = c.offset
    const enc = c.u8('payload encoding')
    if (enc === PayloadEncoding.PLAIN) return { frames: c, compressed: false }
    if (enc !== PayloadEncoding.COMPRESSED) c.fail(`unknown payload encoding ${enc}`, encAt)
    if (compressor === undefined)
      return c.fail('compressed batch in a stream whose header declares no compressor', encAt)
    const lenAt = c.offset
    const framesLength = c.varint('decompressed frames length')
    // The bomb rule: the declared size is bounded by the batch limit before a byte is decompressed.
    const max = lim.maxBatchWireBytes - headLen
    if (framesLength > max)
      throw streamError(
        'LIMIT',
        `${ctx}: declared decompressed frames of ${framesLength} bytes (max ${max})`,
        lenAt,
      )
    const payloadAt = c.offset
    let frames: Uint8Array
    try {
      const data = c.buf.subarray(c.pos, c.end)
      const dst = into(framesLength)
      const d = dst
        ? compressor.decompressInto!(data, dst, framesLength)
        : compressor.decompress(data, framesLength)
      // Frames are plain Uint8Array views (a Buffer's slice() would not copy), as in plain batches.
      frames = new Uint8Array(d.buffer, d.byteOffset, d.length)
    } catch (e) {
      throw streamError(
        'MALFORMED',
        `${ctx}: ${codec} payload does not decompress to the declared ${framesLength} bytes (${e instanceof Error ? e.message : String(e)})`,
        payloadAt,
      )
    }
    // Errors inside the decompressed frames are reported at the payload encoding byte with the frame position.
    return { frames: new Cursor(frames, 0, frames.length, 0, ctx, encAt), compressed: true }
  }
}

/** Format v2 for the record layer: compressor in the header, payload encoding per batch (SPEC.md §11). */
export const V2_READ: ReadFormat = {
  version: VERSION,
  batchExtra: 1, // the payload-encoding byte (a compressed payload is never longer than the plain one)
  endExtra: 0,
  readHeader(c, _acceptCritical, reuseBatchBuffer) {
    const header = readHeaderBodyV2(c)
    return { header, readPayload: payloadReader(header.compression!, reuseBatchBuffer) }
  },
}

/**
 * Reads a v2 xbzrle stream from chunks split anywhere; same pull API as v1's reader (the same record layer). Each
 * batch is decompressed within its declared, limit-checked size, then parsed with v1's frame rules. Byte fields of
 * frames are views into the batch's (decompressed) frame bytes.
 */
export class FrameReader extends RecordReader<ReaderItem> {
  constructor(opts: FrameReaderOptions = {}) {
    super(opts, onlyVersion(opts, V2_READ))
  }
}
