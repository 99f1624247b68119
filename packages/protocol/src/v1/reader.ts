import type { ReadFormat } from '../record/format.js'
import { onlyVersion, RecordReader } from '../record/reader.js'
import { VERSION } from './constants.js'
import { readHeaderBody } from './header.js'
import type { FrameReaderOptions, ReaderItem } from './types.js'

export { checkMaxVersion, resolveLimits, verifyBatchOutput, verifyEndTotals } from '../record/reader.js'

/** Format v1 for the record layer: the v1 header body; a batch's frames follow outputCrc as they are. */
export const V1_READ: ReadFormat = {
  version: VERSION,
  batchExtra: 0,
  endExtra: 0,
  readHeader: (c) => ({
    header: readHeaderBody(c),
    readPayload: (frames) => ({ frames, compressed: false }),
  }),
}

/**
 * Reads a v1 xbzrle stream from chunks split anywhere. Pull API: `push()` bytes, then call `next()` until it
 * returns undefined; at EOF call `finish()`. Every problem is a ProtocolError; after one, every call rethrows it.
 * Memory: the reader keeps only the bytes of the record in progress (plus what the caller pushed ahead).
 */
export class FrameReader extends RecordReader<ReaderItem> {
  constructor(opts: FrameReaderOptions = {}) {
    super(opts, onlyVersion(opts, V1_READ))
  }
}
