import * as v1 from './v1/index.js'
import * as v2 from './v2/index.js'
import { CURRENT_VERSION } from './versions.js'

export interface FrameWriterOptions {
  onChunk: (chunk: Uint8Array) => void
  /** Target output bytes per batch, default 1 MiB. */
  batchBytes?: number
  /** Format version to write (default: the newest). Older versions stay writable for old peers. */
  version?: 1 | 2
}

type VersionWriter = v1.FrameWriter | v2.FrameWriter

const WRITERS: Record<number, (opts: FrameWriterOptions) => VersionWriter> = {
  1: (opts) => new v1.FrameWriter({ ...opts, version: 1 }),
  2: (opts) => new v2.FrameWriter({ ...opts, version: 2 }),
}

/**
 * Writes an xbzrle stream in the requested format version (default 2). Frames: see `@xbzrle/protocol/v1`;
 * the second-stage compressor of v2 comes from `header.compression` (default: zstd level 1 if zstd-napi is
 * installed, else lz4 if lz4-napi is, else deflate). Version 1 has no second stage: a v1 writer given a compression other than `none` throws.
 */
export class FrameWriter {
  private readonly w: VersionWriter
  readonly version: number

  constructor(opts: FrameWriterOptions) {
    const version = opts.version ?? CURRENT_VERSION
    const make = WRITERS[version]
    if (make === undefined) throw new RangeError(`cannot write xbzrle format version ${version}`)
    this.w = make(opts)
    this.version = version
  }

  get bytesWritten(): number {
    return this.w.bytesWritten
  }
  header(h: v2.StreamHeader): void {
    if (this.version === 1 && h.compression !== undefined && h.compression.codec !== 'none')
      throw new RangeError(
        `format version 1 has no compression (header.compression is ${h.compression.codec}): write version 2 or drop it`,
      )
    this.w.header(h)
  }

  /** The compressor in use (version 2, after `header()`); `none` for version 1. */
  get compression(): Required<v2.Compression> {
    return this.w instanceof v2.FrameWriter
      ? (this.w.compressionInUse ?? { codec: 'none', level: 0 })
      : { codec: 'none', level: 0 }
  }

  /** Batches stored plain / compressed so far and their sizes (version 1: all plain). */
  get batchStats(): v2.WriterBatchStats | undefined {
    return this.w instanceof v2.FrameWriter ? { ...this.w.batchStats } : undefined
  }
  verbatim(bytes: Uint8Array): void {
    this.w.verbatim(bytes)
  }
  pageFull(blockId: number, pageIndex: number, hdr: Uint8Array, page: Uint8Array): void {
    this.w.pageFull(blockId, pageIndex, hdr, page)
  }
  pageDelta(
    blockId: number,
    pageIndex: number,
    hdr: Uint8Array,
    delta: Uint8Array,
    newPage: Uint8Array,
  ): void {
    this.w.pageDelta(blockId, pageIndex, hdr, delta, newPage)
  }
  pageSame(blockId: number, pageIndex: number, hdr: Uint8Array, page: Uint8Array): void {
    this.w.pageSame(blockId, pageIndex, hdr, page)
  }
  pageZero(blockId: number, pageIndex: number, hdr: Uint8Array, fill: number): void {
    this.w.pageZero(blockId, pageIndex, hdr, fill)
  }
  pageForeign(blockId: number, pageIndex: number, hdr: Uint8Array, body: Uint8Array): void {
    this.w.pageForeign(blockId, pageIndex, hdr, body)
  }
  invalidate(blockId: number, pageIndex: number): void {
    this.w.invalidate(blockId, pageIndex)
  }
  reset(): void {
    this.w.reset()
  }
  flush(): void {
    this.w.flush()
  }
  end(stats?: v1.EndStats): void {
    this.w.end(stats)
  }
}
