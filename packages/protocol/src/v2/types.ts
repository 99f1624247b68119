import type * as v1 from '../v1/index.js'
import type { CodecName } from './codecs.js'

export interface Compression {
  /** `none` | `lz4` | `zstd` | `deflate` (SPEC.md §11.3). */
  codec: CodecName
  /** Compressor level (informational on the wire; the codec's default when absent). */
  level?: number
}

/** A v1 header plus the second-stage compressor. */
export interface StreamHeader extends v1.StreamHeader {
  /**
   * Writer: the compressor to use (default: zstd level 1 if zstd-napi is installed, else lz4 if lz4-napi is, else deflate; `{ codec: 'none' }`
   * turns the second stage off). Reader (v2 streams): always set, as declared by the stream. Absent in v1 streams.
   */
  compression?: Compression
}

/** A v1 batch plus how it was stored. */
export interface Batch extends v1.Batch {
  /** Whether the frames were stored compressed (payload encoding 1) in this batch. Always false in v1. */
  readonly compressed: boolean
}

export type ReaderItem =
  | { type: 'header'; version: number; header: StreamHeader }
  | { type: 'batch'; batch: Batch }
  | { type: 'end'; end: v1.EndFrame }

export type FrameReaderOptions = v1.FrameReaderOptions

export interface FrameWriterOptions {
  onChunk: (chunk: Uint8Array) => void
  /** Target output bytes per batch (1 – 4 MiB), default 1 MiB. A batch closes once it reaches this. */
  batchBytes?: number
  version?: 2
}
