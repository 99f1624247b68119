import type { StreamHeader } from '../schema.js'
import type * as v1 from '../v1/index.js'
import type * as v2 from '../v2/index.js'

/** A v2 header plus the stream id: z.infer of `StreamHeaderSchema` in ../schema.ts (the one definition). */
export type { StreamHeader } from '../schema.js'

export type ReaderItem =
  | { type: 'header'; version: number; header: StreamHeader }
  | { type: 'batch'; batch: v2.Batch }
  | { type: 'end'; end: v1.EndFrame }

export type FrameReaderOptions = v1.FrameReaderOptions

export interface FrameWriterOptions {
  onChunk: (chunk: Uint8Array) => void
  /** Target output bytes per batch (1 – 4 MiB), default 1 MiB. A batch closes once it reaches this. */
  batchBytes?: number
  /** The 16-byte stream id to write (deterministic tests and vectors); default: 16 random bytes. */
  streamId?: Uint8Array
  version?: 3
}
