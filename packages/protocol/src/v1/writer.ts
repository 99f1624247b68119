import type { WriteFormat } from '../record/format.js'
import { RecordWriter } from '../record/writer.js'
import { VERSION } from './constants.js'
import { validateHeader, writeHeaderBody } from './header.js'
import type { FrameWriterOptions } from './types.js'

const EMPTY = new Uint8Array(0)

/** Format v1 for the record layer: the v1 header body, frames stored as they are. */
export const V1_WRITE: WriteFormat = {
  version: VERSION,
  begin(h) {
    validateHeader(h)
    return {
      compression: { codec: 'none', level: 0 },
      writeHeaderBody: (w) => writeHeaderBody(w, h),
      prefix: EMPTY,
      payloadEncoding: false,
    }
  },
}

/**
 * Writes a v1 xbzrle stream. Frames are appended to one reusable buffer; each closed batch (or the header, or
 * END) is handed to `onChunk` as an array that the caller owns (a full batch: the buffer itself, no copy; the
 * writer continues in a fresh one), or with `chunkView` as a view valid only during the call. No allocation per
 * frame.
 *
 * Order: `header()` once, then any frames / `flush()`, then `end()` once. Misuse throws (Error / RangeError).
 */
export class FrameWriter extends RecordWriter {
  constructor(opts: FrameWriterOptions) {
    if (opts.version !== undefined && opts.version !== VERSION)
      throw new RangeError(`this writer writes format version ${VERSION}, not ${opts.version}`)
    super(opts, V1_WRITE)
  }
}
