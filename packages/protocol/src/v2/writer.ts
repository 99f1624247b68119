import type { StreamWriting, WriteFormat } from '../record/format.js'
import { RecordWriter, type WriterBatchStats } from '../record/writer.js'
import type { ByteWriter } from '../wire/byte-writer.js'
import { varintLength } from '../wire/varint.js'
import type { AdaptiveCompression } from './adaptive.js'
import { CODEC_LEVELS, getCompressor, isCompressorAvailable } from './codecs.js'
import { DEFAULT_CODEC_ORDER, VERSION } from './constants.js'
import { validateHeaderV2, writeHeaderBodyV2 } from './header.js'
import type { Compression, FrameWriterOptions, StreamHeader } from './types.js'

export type { WriterBatchStats }

const EMPTY = new Uint8Array(0)

/** The compressor a header asks for, with its level filled in (default codec: see DEFAULT_CODEC_ORDER). */
export function resolveCompression(c: Compression | undefined): Required<Compression> {
  const codec = c?.codec ?? DEFAULT_CODEC_ORDER.find(isCompressorAvailable) ?? 'deflate'
  const range = CODEC_LEVELS[codec]
  return { codec, level: c?.level ?? range?.default ?? 0 }
}

/**
 * The v2 batch payload, writer side (SPEC.md §11.5), shared by every version that has it: the header's compressor
 * (validated; its package must be installed) and the choice rule, keep the compressed frames only when
 * `varintLength(framesLength) + compressed.length < framesLength`. With `adaptive`, the header names its
 * compressor and each batch is compressed (or not) as it decides (`--compress auto`, ./adaptive.ts).
 */
export function payloadWriter(
  h: StreamHeader,
  writeHeaderBody: (w: ByteWriter, compression: Required<Compression>) => void,
  prefix = EMPTY,
  adaptive?: AdaptiveCompression,
): StreamWriting {
  const compression = adaptive ? adaptive.header : resolveCompression(h.compression)
  validateHeaderV2(h, compression)
  // Adaptive: its compressor loads on first use (start-up), and a batch it cannot compress stays plain.
  const compressor = adaptive || compression.codec === 'none' ? undefined : getCompressor(compression.codec)
  const squeeze = adaptive
    ? (frames: Uint8Array) => adaptive.compress(frames)
    : compressor &&
      ((frames: Uint8Array) =>
        compressor.compressView
          ? compressor.compressView(frames, compression.level)
          : compressor.compress(frames, compression.level))
  return {
    compression,
    writeHeaderBody: (w) => writeHeaderBody(w, compression),
    prefix,
    payloadEncoding: true,
    fixed: !adaptive,
    compress:
      squeeze &&
      ((frames) => {
        const z = squeeze(frames)
        return z !== undefined && varintLength(frames.length) + z.length < frames.length ? z : undefined
      }),
  }
}

/** Format v2 for the record layer: the compressor in the header, plain or compressed batches. */
export function v2Write(adaptive?: AdaptiveCompression): WriteFormat {
  return {
    version: VERSION,
    begin: (h) => payloadWriter(h, (w, compression) => writeHeaderBodyV2(w, h, compression), EMPTY, adaptive),
  }
}

export const V2_WRITE: WriteFormat = v2Write()

/**
 * Writes a v2 xbzrle stream: v1's frames (the same record layer writes them, so every frame layout is v1's to the
 * byte), each batch passed through the header's compressor and kept compressed only when that is smaller. Same
 * API as v1's FrameWriter; `header.compression` picks the compressor. No allocation per frame.
 */
export class FrameWriter extends RecordWriter {
  constructor(opts: FrameWriterOptions) {
    if (opts.version !== undefined && opts.version !== VERSION)
      throw new RangeError(`this writer writes format version ${VERSION}, not ${opts.version}`)
    super(opts, V2_WRITE)
  }

  /** The compressor in use (after `header()`). */
  override get compressionInUse(): Required<Compression> | undefined {
    return super.compressionInUse
  }

  /** Batches stored plain / compressed so far and their sizes. */
  get batchStats(): WriterBatchStats {
    return this.stats
  }
}
