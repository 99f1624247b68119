import type { Limits } from './constants.js'

export type Mode = 'canonical' | 'compact'
export type SourceKind = 'qemu' | 'raw' | 'libvirt-save'

export interface CacheParams {
  /** Total cache size in bytes (the decoder mirrors it exactly). */
  cacheBytes: number
  /** Associativity (1 = direct mapped). */
  ways: number
  /** Replacement policy name, e.g. "lru" (printable ASCII, 1–64 bytes). */
  policy: string
}

export interface HeaderExtension {
  /** 2–65535 (1 is ENCODER, carried as `StreamHeader.encoder`). */
  type: number
  /** A reader that does not know `type` must refuse the stream if set, skip the extension otherwise. */
  critical: boolean
  data: Uint8Array
}

export interface StreamHeader {
  /** Target page size in bytes: a power of two, 512–65536 (4096 on x86). */
  pageSize: number
  cache: CacheParams
  mode: Mode
  /** Informational: what the original bytes were. */
  source: SourceKind
  /** Informational encoder identification (extension 1), e.g. "xbzrle/0.1.0". */
  encoder?: string
  /** Other extensions: written as given; on read, the unknown ignorable ones that were skipped. */
  extensions?: readonly HeaderExtension[]
}

export interface PageCounts {
  full: number
  delta: number
  same: number
  zero: number
  foreign: number
}

/** What the caller gives `FrameWriter.end()`: the writer computes the totals itself. */
export interface EndStats {
  /** The encoder's cache statistics (informational): names match /^[a-z][A-Za-z0-9]{0,31}$/, ≤ 32 entries. */
  cache?: Readonly<Record<string, number>>
}

export interface EndFrame {
  /** Total original bytes the stream decodes to. */
  totalBytes: number
  batches: number
  pages: PageCounts
  cache: Record<string, number>
  /** Byte offset of the END record. */
  offset: number
}

export interface PageKey {
  blockId: number
  pageIndex: number
}

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
