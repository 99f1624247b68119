import * as v1 from './v1/index.js'
import { CURRENT_VERSION } from './versions.js'

export interface FrameWriterOptions {
  onChunk: (chunk: Uint8Array) => void
  /** Target output bytes per batch, default 1 MiB. */
  batchBytes?: number
  /** Format version to write (default: the newest). Older versions stay writable for old peers. */
  version?: 1
}

type VersionWriter = v1.FrameWriter

const WRITERS: Record<number, (opts: FrameWriterOptions) => VersionWriter> = {
  1: (opts) => new v1.FrameWriter({ ...opts, version: 1 }),
}

/** Writes an xbzrle stream in the requested format version. See `@xbzrle/protocol/v1` for the semantics. */
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
  header(h: v1.StreamHeader): void {
    this.w.header(h)
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
