import type { EndFrame, StreamHeaderV1 as StreamHeader } from '../schema.js'
import type { Limits } from './constants.js'

// The wire-format shapes are z.infer of the zod schemas in ../schema.ts (the one definition; type-only import, so
// this frozen module loads no zod at run time). Their structure is v1's exactly: the schemas are shared by all
// versions, with later versions' header fields in the later versions' schemas.
export type {
  CacheParams,
  EndFrame,
  EndStats,
  HeaderExtension,
  Mode,
  PageCounts,
  SourceKind,
  StreamHeaderV1 as StreamHeader,
} from '../schema.js'

export interface PageKey {
  blockId: number
  pageIndex: number
}

/*
 * Runtime objects of the binary reader, deliberately plain types (not schemas): a Frame is built per page on the
 * hot path and its byte fields are views into the input, a Batch has a `frames()` iterator; neither is ever
 * serialized or validated as data (the reader checks the bytes, SPEC.md), so a schema would only cost.
 */

/**
 * One frame of a batch. Byte fields (`bytes`, `page`, `delta`, `body`, and a raw `hdr`) are views into the
 * reader's input, not copies. `hdr` is the original QEMU page-record header; when the stream carried it in
 * derived form (SPEC.md §5.2: `be64(pageIndex * pageSize + flags)`), it is a view of 8 bytes the reader rebuilt
 * into a scratch block owned by the batch: valid as long as the caller keeps the frame, never rewritten by the
 * reader, but not part of the input buffer. Treat every byte field as read-only.
 */
export type Frame =
  | { kind: 'verbatim'; bytes: Uint8Array }
  | { kind: 'full'; blockId: number; pageIndex: number; hdr: Uint8Array; page: Uint8Array }
  | { kind: 'delta'; blockId: number; pageIndex: number; hdr: Uint8Array; delta: Uint8Array }
  | { kind: 'same'; blockId: number; pageIndex: number; hdr: Uint8Array }
  | { kind: 'zero'; blockId: number; pageIndex: number; hdr: Uint8Array; fill: number }
  | { kind: 'foreign'; blockId: number; pageIndex: number; hdr: Uint8Array; body: Uint8Array }
  | { kind: 'invalidate'; blockId: number; pageIndex: number }
  | { kind: 'reset' }

export type FrameKindName = Frame['kind']

export interface Batch {
  /** 0, 1, 2, … in stream order (checked by the reader). */
  seq: number
  /** Number of original bytes this batch decodes to. */
  outputLength: number
  /** CRC-32 of those original bytes; the consumer must check it before releasing them (`verifyBatchOutput`). */
  outputCrc: number
  /** Byte offset of the batch record in the stream. */
  offset: number
  frameCount: number
  /** The frames in order. Byte fields are views (see `Frame`): into the input, or (derived `hdr`) into scratch. */
  frames(): Iterable<Frame>
}

export type ReaderItem =
  | { type: 'header'; version: number; header: StreamHeader }
  | { type: 'batch'; batch: Batch }
  | { type: 'end'; end: EndFrame }

export interface FrameReaderOptions {
  /** Highest format version accepted (default and maximum: the newest this library reads). */
  maxVersion?: number
  /** Lower the spec limits (never raise them). */
  limits?: Partial<Limits>
  /**
   * Critical header extension types the caller understands (v3 streams only; e.g. the base-image extension, type
   * 2): they are returned in `header.extensions` instead of being refused with CRITICAL_EXTENSION. The caller
   * then MUST act on them before using the stream.
   */
  acceptCritical?: readonly number[]
  /**
   * Decompress every compressed batch (v2 and later) into one buffer the reader reuses, instead of a fresh one
   * per batch (each fresh MiB costs its page faults). The byte views of a batch's frames are then valid only
   * until the next call to `next()`: for callers that consume a batch before they read on (XbzrleDecoder).
   */
  reuseBatchBuffer?: boolean
}

export interface FrameWriterOptions {
  onChunk: (chunk: Uint8Array) => void
  /**
   * Hand `onChunk` a view into the writer's buffer, valid only until `onChunk` returns (the writer reuses the
   * buffer), instead of a caller-owned array. For callers that consume each chunk at once (e.g. re-encode it).
   */
  chunkView?: boolean
  /** Target output bytes per batch (1 – 4 MiB), default 1 MiB. A batch closes once it reaches this. */
  batchBytes?: number
  version?: 1
}
