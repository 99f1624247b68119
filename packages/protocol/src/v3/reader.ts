import { streamError } from '../errors.js'
import type { ReadFormat } from '../record/format.js'
import { onlyVersion, RecordReader } from '../record/reader.js'
import { payloadReader } from '../v2/reader.js'
import { crc32, hex32 } from '../wire/crc32.js'
import { BINDING_BYTES, VERSION } from './constants.js'
import { readHeaderBodyV3 } from './header.js'
import type { FrameReaderOptions, ReaderItem } from './types.js'

/** The stream binding of a v3 stream (SPEC.md §12.3): CRC-32 of its stream id. */
export function streamBinding(streamId: Uint8Array): number {
  return crc32(streamId)
}

/**
 * Format v3 for the record layer: v2 plus stream binding. Every BATCH and END body starts with the stream's
 * binding, checked right after the record CRC: an intact record with another binding belongs to another stream.
 */
export const V3_READ: ReadFormat = {
  version: VERSION,
  batchExtra: 1 + BINDING_BYTES,
  endExtra: BINDING_BYTES,
  readHeader(c, acceptCritical, reuseBatchBuffer) {
    const header = readHeaderBodyV3(c, acceptCritical)
    const binding = streamBinding(header.streamId!)
    return {
      header,
      readPayload: payloadReader(header.compression!, reuseBatchBuffer),
      readPrefix(c, record) {
        const at = c.base
        const found = c.u32le('stream binding')
        if (found !== binding)
          throw streamError(
            'STREAM_MISMATCH',
            `${record} belongs to another stream (its stream binding is ${hex32(found)}, this stream's is ${hex32(binding)})`,
            at,
          )
      },
    }
  },
}

/**
 * Reads a v3 xbzrle stream from chunks split anywhere; same pull API as the v1 and v2 readers (the same record
 * layer). A batch or END of another stream is refused with STREAM_MISMATCH.
 */
export class FrameReader extends RecordReader<ReaderItem> {
  constructor(opts: FrameReaderOptions = {}) {
    super(opts, onlyVersion(opts, V3_READ))
  }
}
