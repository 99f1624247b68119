import type { ReadFormat } from '../record/format.js'
import { RecordReader } from '../record/reader.js'
import { unsupportedVersion } from '../wire/prelude.js'
import { VERSION } from './constants.js'
import { readHeaderBody } from './header.js'
import type { FrameReaderOptions, ReaderItem } from './types.js'

export { resolveLimits, verifyBatchOutput, verifyEndTotals } from '../record/reader.js'

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

/** `maxVersion` as given, checked: a positive integer (default `fallback`). */
export function checkMaxVersion(opts: FrameReaderOptions, fallback: number): number {
  const max = opts.maxVersion ?? fallback
  if (!Number.isInteger(max) || max < 1)
    throw new RangeError(`maxVersion must be a positive integer, got ${opts.maxVersion}`)
  return max
}

/**
 * Reads a v1 xbzrle stream from chunks split anywhere. Pull API: `push()` bytes, then call `next()` until it
 * returns undefined; at EOF call `finish()`. Every problem is a ProtocolError; after one, every call rethrows it.
 * Memory: the reader keeps only the bytes of the record in progress (plus what the caller pushed ahead).
 */
export class FrameReader extends RecordReader<ReaderItem> {
  constructor(opts: FrameReaderOptions = {}) {
    const max = Math.min(checkMaxVersion(opts, VERSION), VERSION)
    super(opts, (version) => {
      if (version < 1 || version > max) throw unsupportedVersion(version, max)
      return V1_READ
    })
  }
}
