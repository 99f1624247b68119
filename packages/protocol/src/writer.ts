import type { WriteFormat } from './record/format.js'
import { RecordWriter, type RecordWriterOptions, type WriterBatchStats } from './record/writer.js'
import { V1_WRITE } from './v1/writer.js'
import type { AdaptiveCompression } from './v2/adaptive.js'
import type * as v2 from './v2/index.js'
import { v2Write } from './v2/writer.js'
import type * as v3 from './v3/index.js'
import { v3Write } from './v3/writer.js'
import { CURRENT_VERSION } from './versions.js'

export interface FrameWriterOptions extends RecordWriterOptions {
  /** Format version to write (default: CURRENT_VERSION). Older versions stay writable for old peers. */
  version?: 1 | 2 | 3
  /** Version 3: the 16-byte stream id (deterministic tests and vectors); default 16 random bytes. */
  streamId?: Uint8Array
  /**
   * Version ≥ 2: choose plain / fast / strong per batch (`--compress auto`, v2/adaptive.ts). The header then names
   * the adaptive ladder's compressor and `header.compression` is ignored.
   */
  adaptive?: AdaptiveCompression
}

/** Every format version this library can write: the strategy for the given options. */
export const WRITE_FORMATS: Readonly<Record<number, (opts: FrameWriterOptions) => WriteFormat>> =
  Object.freeze({
    1: () => V1_WRITE,
    2: (opts) => v2Write(opts.adaptive),
    3: (opts) => v3Write(opts.streamId, opts.adaptive),
  })

/**
 * Writes an xbzrle stream in the requested format version (default CURRENT_VERSION). Frames: see
 * `@xbzrle/protocol/v1`; the second-stage compressor of v2 comes from `header.compression` (default: zstd level 1
 * if zstd-napi is installed, else lz4 if lz4-napi is, else deflate). Version 1 has no second stage: a v1 writer
 * given a compression other than `none` throws.
 */
export class FrameWriter extends RecordWriter {
  constructor(opts: FrameWriterOptions) {
    const version = opts.version ?? CURRENT_VERSION
    const format = WRITE_FORMATS[version]
    if (format === undefined) throw new RangeError(`cannot write xbzrle format version ${version}`)
    if (opts.streamId !== undefined && version !== 3)
      throw new RangeError(`format version ${version} has no stream id: write version 3 or drop streamId`)
    if (opts.adaptive !== undefined && version === 1)
      throw new RangeError('format version 1 has no compression: write version 2 or drop adaptive')
    super(opts, format(opts))
  }

  override header(h: v3.StreamHeader): void {
    if (this.version === 1 && h.compression !== undefined && h.compression.codec !== 'none')
      throw new RangeError(
        `format version 1 has no compression (header.compression is ${h.compression.codec}): write version 2 or drop it`,
      )
    super.header(h)
  }

  /** The compressor in use (version ≥ 2, after `header()`); `none` for version 1. */
  get compression(): Required<v2.Compression> {
    return this.compressionInUse ?? { codec: 'none', level: 0 }
  }

  /** The stream id (version 3, after `header()`); undefined for versions 1 and 2. */
  override get streamId(): Uint8Array | undefined {
    return super.streamId
  }

  /** Batches stored plain / compressed so far and their sizes (undefined for version 1: all plain). */
  get batchStats(): WriterBatchStats | undefined {
    return this.version === 1 ? undefined : { ...this.stats }
  }
}
