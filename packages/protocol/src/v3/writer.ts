import type { WriteFormat } from '../record/format.js'
import { RecordWriter } from '../record/writer.js'
import type { AdaptiveCompression } from '../v2/adaptive.js'
import type { WriterBatchStats } from '../v2/writer.js'
import { payloadWriter } from '../v2/writer.js'
import { kernelRandomBytes } from '../wire/random.js'
import { BINDING_BYTES, STREAM_ID_BYTES, VERSION } from './constants.js'
import { writeHeaderBodyV3 } from './header.js'
import { streamBinding } from './reader.js'
import type { FrameWriterOptions } from './types.js'

/** Checks a `streamId` writer option: 16 bytes. Throws RangeError. */
export function checkStreamId(id: Uint8Array | undefined): void {
  if (id !== undefined && (!(id instanceof Uint8Array) || id.length !== STREAM_ID_BYTES))
    throw new RangeError(`streamId must be a Uint8Array of ${STREAM_ID_BYTES} bytes`)
}

/**
 * Format v3 for the record layer: v2 plus stream binding. `streamId` (16 bytes) is the id written in the header;
 * default: 16 random bytes (the kernel's CSPRNG, wire/random.ts), drawn when the header is written.
 */
export function v3Write(streamId?: Uint8Array, adaptive?: AdaptiveCompression): WriteFormat {
  checkStreamId(streamId)
  return {
    version: VERSION,
    begin(h) {
      const id = streamId?.slice() ?? kernelRandomBytes(STREAM_ID_BYTES)
      const prefix = new Uint8Array(BINDING_BYTES)
      new DataView(prefix.buffer).setUint32(0, streamBinding(id), true)
      return {
        ...payloadWriter(h, (w, compression) => writeHeaderBodyV3(w, h, compression, id), prefix, adaptive),
        streamId: id,
      }
    },
  }
}

/**
 * Writes a v3 xbzrle stream: v2 (frames, second-stage compressor per batch) with every batch and END bound to the
 * stream id of the header. Same API as the v2 FrameWriter, plus the `streamId` option and getter.
 */
export class FrameWriter extends RecordWriter {
  constructor(opts: FrameWriterOptions) {
    if (opts.version !== undefined && opts.version !== VERSION)
      throw new RangeError(`this writer writes format version ${VERSION}, not ${opts.version}`)
    super(opts, v3Write(opts.streamId))
  }

  /** The stream id (after `header()`). */
  override get streamId(): Uint8Array | undefined {
    return super.streamId
  }

  /** Batches stored plain / compressed so far and their sizes. */
  get batchStats(): WriterBatchStats {
    return this.stats
  }
}
