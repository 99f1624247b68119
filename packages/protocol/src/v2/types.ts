import type { StreamHeaderV2 as StreamHeader } from '../schema.js'
import type * as v1 from '../v1/index.js'

// z.infer of the schemas in ../schema.ts (the one definition).
export type { Compression, StreamHeaderV2 as StreamHeader } from '../schema.js'

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
