import type { ReadFormat } from './record/format.js'
import { RecordReader } from './record/reader.js'
import { checkMaxVersion, V1_READ } from './v1/reader.js'
import { V2_READ } from './v2/reader.js'
import type * as v3 from './v3/index.js'
import { V3_READ } from './v3/reader.js'
import { SUPPORTED_VERSIONS } from './versions.js'
import { unsupportedVersion } from './wire/prelude.js'

/**
 * What the reader yields, for every version: v3's item types (a v1 stream yields batches with
 * `compressed: false` and a header without `compression`; v1 and v2 headers have no `streamId`).
 */
export type ReaderItem = v3.ReaderItem
export type FrameReaderOptions = v3.FrameReaderOptions

/** Every format version this library can read, keyed by the version in the prelude. */
export const READ_FORMATS: Readonly<Record<number, ReadFormat>> = Object.freeze({
  1: V1_READ,
  2: V2_READ,
  3: V3_READ,
})
const NEWEST = Math.max(...Object.keys(READ_FORMATS).map(Number))

/**
 * Reads an xbzrle stream of any version ≤ `maxVersion` (default: the newest of SUPPORTED_VERSIONS). Reads the
 * 8-byte magic and the version, then the stream with that version's strategy on the one record layer. Same pull
 * API as the per-version readers: `push()`, `next()` until undefined, `finish()` at EOF.
 */
export class FrameReader extends RecordReader<ReaderItem> {
  constructor(opts: FrameReaderOptions = {}) {
    const max = Math.min(checkMaxVersion(opts, Math.max(...SUPPORTED_VERSIONS)), NEWEST)
    super(opts, (version) => {
      const format = version <= max ? READ_FORMATS[version] : undefined
      if (format === undefined) throw unsupportedVersion(version, max)
      return format
    })
  }
}
