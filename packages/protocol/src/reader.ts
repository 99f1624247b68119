import { ProtocolError } from './errors.js'
import * as v1 from './v1/index.js'
import { resolveLimits } from './v1/reader.js'
import * as v2 from './v2/index.js'
import { CURRENT_VERSION } from './versions.js'
import { ChunkQueue } from './wire/chunk-queue.js'
import { readPrelude, unsupportedVersion } from './wire/prelude.js'

/** What every per-version reader provides. */
interface VersionReader {
  push(chunk: Uint8Array): void
  next(): ReaderItem | undefined
  finish(): void
}

/**
 * What the reader yields, for every version: v2's item types (a v1 stream yields batches with
 * `compressed: false` and a header without `compression`).
 */
export type ReaderItem = v2.ReaderItem
export type FrameReaderOptions = v1.FrameReaderOptions

/** v1 items in the shape of the current ones. */
class V1Reader implements VersionReader {
  private readonly r: v1.FrameReader
  constructor(opts: FrameReaderOptions) {
    this.r = new v1.FrameReader(opts)
  }
  push(chunk: Uint8Array): void {
    this.r.push(chunk)
  }
  next(): ReaderItem | undefined {
    const item = this.r.next()
    if (item?.type !== 'batch') return item
    const b = item.batch
    return {
      type: 'batch',
      batch: {
        seq: b.seq,
        outputLength: b.outputLength,
        outputCrc: b.outputCrc,
        offset: b.offset,
        frameCount: b.frameCount,
        frames: () => b.frames(),
        compressed: false,
      },
    }
  }
  finish(): void {
    this.r.finish()
  }
}

/** Per-version readers, keyed by the format version in the prelude. */
const READERS: Record<number, (opts: FrameReaderOptions) => VersionReader> = {
  1: (opts) => new V1Reader(opts),
  2: (opts) => new v2.FrameReader(opts),
}

/**
 * Reads an xbzrle stream of any version ≤ `maxVersion` (default: the newest this library knows). Reads the
 * 8-byte magic and the version, then hands the whole stream to that version's reader. Same pull API as the
 * per-version readers: `push()`, `next()` until undefined, `finish()` at EOF.
 */
export class FrameReader {
  private inner: VersionReader | undefined
  private readonly prefix = new ChunkQueue()
  private readonly maxVersion: number
  private error: ProtocolError | undefined

  constructor(private readonly opts: FrameReaderOptions = {}) {
    const max = opts.maxVersion ?? CURRENT_VERSION
    if (!Number.isInteger(max) || max < 1)
      throw new RangeError(`maxVersion must be a positive integer, got ${max}`)
    this.maxVersion = Math.min(max, CURRENT_VERSION)
    resolveLimits(opts.limits) // validate early
  }

  /** The format version of the stream, once known. */
  version: number | undefined

  push(chunk: Uint8Array): void {
    if (this.error) throw this.error
    if (this.inner) {
      this.inner.push(chunk)
      return
    }
    this.prefix.push(chunk)
    this.dispatch(false)
  }

  next(): ReaderItem | undefined {
    if (this.error) throw this.error
    if (!this.inner) this.dispatch(false)
    return this.inner?.next()
  }

  finish(): void {
    if (this.error) throw this.error
    if (!this.inner) this.dispatch(true)
    this.inner!.finish()
  }

  private dispatch(eof: boolean): void {
    const q = this.prefix
    let version: number
    try {
      const pre = readPrelude(q, false)
      if (pre === undefined) {
        if (!eof) return
        version = 1 // let the oldest reader report the truncated prelude
      } else {
        version = pre.version
        if (version < 1 || version > this.maxVersion || READERS[version] === undefined)
          throw unsupportedVersion(version, this.maxVersion)
      }
    } catch (e) {
      if (e instanceof ProtocolError) this.error = e
      throw e
    }
    const inner = READERS[version]!({ ...this.opts, maxVersion: this.maxVersion })
    this.inner = inner
    this.version = version
    if (q.length > 0) inner.push(q.view(q.length))
  }
}
