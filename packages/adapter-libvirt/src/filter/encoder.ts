import { type CacheStats, cacheParameters, PageDeltaEncoder, sameCacheParameters } from '@xbzrle/codec'
import {
  AdaptiveCompression,
  baseRequirementExtension,
  type Compression,
  CompressPool,
  CURRENT_VERSION,
  DEFAULT_BATCH_BYTES,
  FrameWriter,
  type FrameWriterOptions,
  isCompressorAvailable,
  type Mode,
  type SourceKind,
  type StreamHeader,
} from '@xbzrle/protocol/stream'
import type { EncoderBase } from '../base/base-image.js'
import {
  parseSaveImageHeader,
  SAVE_HEADER_SIZE,
  type SaveImageHeader,
  sniffSaveImage,
} from '../libvirt/save-image.js'
import { DEFAULT_TARGET_PAGE_SIZE } from '../qemu/format.js'
import { type PageRecord, QemuStreamReader, type QemuStreamStats } from '../qemu/stream-reader.js'
import { BypassMeter, type BypassOptions } from './bypass.js'
import {
  type PassCounters,
  PassDetector,
  type PassListener,
  PassRecorder,
  type PassStats,
} from './pass-stats.js'

export interface EncoderOptions {
  /** Cache budget in bytes. Default: the guest's RAM (from the stream's block list), rounded up to a power of two,
   *  capped at `maxAutoCacheBytes`. */
  cacheBytes?: number
  /** Cap of the automatic cache size (default 1 GiB). */
  maxAutoCacheBytes?: number
  ways?: number
  mode?: Mode
  /** Target original bytes per batch (default 1 MiB). */
  batchBytes?: number
  /** Format version to write (default: the newest). */
  formatVersion?: number
  /**
   * Second-stage compressor of format v2 batches (default: the best one installed; ignored by v1). `auto`: chosen
   * per batch from the measured drain rate (protocol v2/adaptive.ts; the stream feeds it, see streams.ts).
   */
  compression?: Compression | 'auto'
  targetPageSize?: number
  /** Informational header field; `libvirt-save` is set by the save-image wrapper. */
  source?: SourceKind
  encoderName?: string
  /** Told when a QEMU pass (the pages between two dirty-bitmap syncs) starts and ends; see pass-stats.ts. */
  passListener?: PassListener
  /**
   * Encode against a base image (issue #15): its seeded cache (prepareEncoderBase) replaces the empty one, pages
   * are keyed by the base's RAM block ids (matched by name), and the header names the base (format v3 only).
   */
  base?: EncoderBase
  /**
   * Hand `onChunk` a view into the frame writer's buffer, valid only until `onChunk` returns, instead of a copy
   * the caller owns: for a caller that writes each chunk out at once (a synchronous write to a file), it saves a
   * copy of every output byte into fresh memory.
   */
  chunkView?: boolean
  /**
   * Worker threads that compress batches while this thread encodes (issue #13): format v2 or later with a fixed
   * zstd second stage (not `auto`). 0 or unset: everything on this thread. Records still come out in order and
   * byte-identical; the caller must await `settled()` after `finish()` (and should await `paced()` between pushes).
   */
  threads?: number
  /**
   * false: copy the input into verbatim frames without parsing it into pages, so neither end does any page or cache
   * work; the second stage still compresses every batch. For a stream in which no page is sent twice, such as the
   * save of a paused guest (libvirt's helper): XBZRLE has nothing to work on there, and the per-page path cost a
   * third of the encoder's time. Not with a base image. Default true.
   */
  pages?: boolean
  /**
   * Send pages as QEMU's own records, past the cache, while the encoder rather than the link is the bottleneck
   * (bypass.ts; issue #14). Default: on with `compression: 'auto'` (pipes and networks) unless there is a base;
   * false: never. The decoder needs nothing new (VERBATIM and INVALIDATE frames).
   */
  bypass?: BypassOptions | false
}

export const DEFAULT_MAX_AUTO_CACHE = 1 << 30
/** The smallest cache: used for input that is not a QEMU stream (nothing to cache). */
const MIN_CACHE_BYTES = 1 << 20
/** Verbatim bytes held back while waiting for the RAM block list that sizes the cache. */
const MAX_EARLY_BYTES = 1 << 20

export interface EncoderStats {
  bytesIn: number
  bytesOut: number
  /** `bypass`: pages sent as QEMU's records past the cache (bypass.ts); `compress`: records we do not model. */
  pages: {
    full: number
    delta: number
    same: number
    zero: number
    foreign: number
    compress: number
    bypass: number
  }
  cache: CacheStats | undefined
  cacheBytes: number
  qemu: QemuStreamStats
  /** The pass in progress (1-based) and the number of finished passes. */
  pass: number
}

function nextPow2(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)))
}

/**
 * QEMU migration stream in, xbzrle stream out: QemuStreamReader → PageDeltaEncoder → FrameWriter.
 * Push chunks of any size; `onChunk` receives the encoded stream in large chunks.
 */
export class XbzrleEncoder {
  private readonly reader: QemuStreamReader
  private readonly writer: FrameWriter
  private codec: PageDeltaEncoder | undefined
  private early: Uint8Array[] = []
  private earlyBytes = 0
  private readonly pageSize: number
  private cacheBytes = 0
  private bytesIn = 0
  private bytesOut = 0
  private finished = false
  private readonly counts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0, compress: 0, bypass: 0 }
  /** A libvirt save image starts with a header and the domain XML, kept verbatim before the QEMU stream. */
  private prefix: 'sniff' | 'save-data' | 'done' = 'sniff'
  private readonly head = new Uint8Array(SAVE_HEADER_SIZE)
  private headLen = 0
  private prefixLeft = 0
  saveImage: SaveImageHeader | undefined
  /** Bytes the reader has handed on (verbatim + page records): the stream position of the record in hand. */
  private emitted = 0
  private readonly detector = new PassDetector()
  private readonly recorder: PassRecorder
  private blocksKnown = 0
  /** The RAM END section (QEMU's completion) was seen. */
  private completed = false
  /** With a base: cache block id per reader block id (the base's id for a name it has, new ids after). */
  private readonly keyIds: number[] = []
  /** The per-batch second-stage choice, with `compression: 'auto'` and format v2 or later. */
  readonly adaptive: AdaptiveCompression | undefined
  /** Worker threads compressing batches (options.threads), or undefined: compressed on this thread. */
  private readonly pool: CompressPool | undefined
  /** Input not yet written, up to one batch: pages: false (pushUnparsed), or bypassed records (stageVerbatim). */
  private stage: Uint8Array | undefined
  private staged = 0
  /** Whether to bypass the page path, window by window (options.bypass); undefined: never. */
  readonly bypass: BypassMeter | undefined

  constructor(
    onChunk: (chunk: Uint8Array) => void,
    private readonly options: EncoderOptions = {},
  ) {
    if (options.pages === false && options.base)
      throw new RangeError('a base image needs the pages parsed (pages: false was asked for)')
    this.pageSize = options.targetPageSize ?? DEFAULT_TARGET_PAGE_SIZE
    this.recorder = new PassRecorder(options.passListener)
    const secondStage = (options.formatVersion ?? CURRENT_VERSION) >= 2
    const auto = secondStage && options.compression === 'auto'
    this.adaptive = auto ? new AdaptiveCompression() : undefined
    // A pool only for a fixed zstd second stage, asked for or the default (the adaptive choice measures its cost
    // on this thread): no worker is started that no batch could use.
    const threads = options.threads ?? 0
    const c = options.compression
    const zstd = c === undefined ? isCompressorAvailable('zstd') : c !== 'auto' && c.codec === 'zstd'
    this.pool = threads > 0 && secondStage && !auto && zstd ? new CompressPool(threads) : undefined
    const b = options.bypass
    this.bypass =
      b === false || options.pages === false || options.base || (b === undefined && !auto)
        ? undefined
        : new BypassMeter(b)
    this.writer = new FrameWriter({
      adaptive: this.adaptive,
      pool: this.pool,
      onChunk: (c) => {
        this.bytesOut += c.length
        onChunk(c)
      },
      batchBytes: options.batchBytes,
      chunkView: options.chunkView,
      version: options.formatVersion as FrameWriterOptions['version'],
    })
    this.reader = new QemuStreamReader(
      { verbatim: (b) => this.onVerbatim(b), page: (r) => this.onPage(r) },
      { targetPageSize: this.pageSize },
    )
  }

  push(chunk: Uint8Array): void {
    if (this.finished) throw new Error('XbzrleEncoder: push after finish')
    this.recorder.start()
    this.bytesIn += chunk.length
    if (this.options.pages === false) {
      this.pushUnparsed(chunk)
      return
    }
    const m = this.bypass
    const t0 = m ? this.beginWindow(m) : 0
    const rest = this.prefix === 'done' ? chunk : this.consumePrefix(chunk)
    if (rest.length > 0) this.reader.push(rest)
    m?.endPush(chunk.length, m.time() - t0)
    // Once the reader gave up on the grammar, nothing will size the cache any more.
    if (!this.codec && this.reader.stats.passthrough) this.start()
  }

  /**
   * Backpressure for the compression pool: a promise to await before pushing more while too many records wait
   * for it (two per worker), else undefined. Rejects if a pooled batch failed.
   */
  paced(): Promise<void> | undefined {
    if (!this.pool) return undefined
    const max = 2 * this.pool.threads + 1
    return this.writer.inFlight < max ? undefined : this.writer.inFlightBelow(max)
  }

  /**
   * Resolves once every record written so far is out: after finish(), the whole stream. With a pool, call it
   * after finish() (its workers stop then) and before taking the output as complete. Rejects if a pooled batch
   * failed; nothing after that batch was handed out.
   */
  async settled(): Promise<void> {
    try {
      await this.writer.settled()
    } finally {
      if (this.finished) await this.pool?.close()
    }
  }

  /**
   * Starts the compression pool's workers now rather than at the first batch (CompressPool.start). Batches closed
   * before one is up are compressed on this thread. Resolves once a worker is up (never rejects).
   */
  startThreads(): Promise<void> {
    return this.pool?.start() ?? Promise.resolve()
  }

  /** Stops the pool's workers (an encoder given up on); records still in flight are dropped. */
  close(): Promise<void> {
    return this.pool?.close() ?? Promise.resolve()
  }

  /** Closes the current batch so that everything pushed so far reaches the output (live migrations). */
  flush(): void {
    const m = this.bypass
    const t = m?.time() ?? 0
    this.flushNow()
    m?.addBusy(m.time() - t)
  }

  private flushNow(): void {
    this.flushUnparsed()
    if (this.codec) this.writer.flush()
  }

  /** Lets the bypass meter pick this window's mode; a change of mode closes the batch first. Returns the time. */
  private beginWindow(m: BypassMeter): number {
    m.beginPush(
      this.adaptive?.drainRate,
      () => this.bytesOut,
      () => this.flush(),
    )
    return m.time()
  }

  /**
   * Bytes that go out in VERBATIM frames of whole batches (the input of pages: false; bypassed records and the
   * stream bytes between them): staged up to one batch, so the frames depend on the bytes alone, not on how they
   * were cut. A whole batch's worth with nothing staged goes out from `bytes` itself, without the copy.
   */
  private stageVerbatim(bytes: Uint8Array): void {
    const size = this.options.batchBytes ?? DEFAULT_BATCH_BYTES
    this.stage ??= new Uint8Array(size)
    const stage = this.stage
    for (let off = 0; off < bytes.length; ) {
      if (this.staged === 0 && bytes.length - off >= size) {
        this.writer.verbatim(bytes.subarray(off, off + size))
        off += size
        continue
      }
      const n = Math.min(size - this.staged, bytes.length - off)
      stage.set(bytes.subarray(off, off + n), this.staged)
      this.staged += n
      off += n
      if (this.staged === size) {
        this.writer.verbatim(stage)
        this.staged = 0
      }
    }
  }

  /**
   * A page past the cache: its cached copy, if any, is dropped on both sides (an INVALIDATE frame has no output,
   * so it may go before the staged bytes), and QEMU's record goes out as it came.
   */
  private bypassPage(blockId: number, r: PageRecord): void {
    if (this.codec!.invalidate(blockId, r.pageIndex)) this.writer.invalidate(blockId, r.pageIndex)
    this.stageVerbatim(r.header)
    this.stageVerbatim(r.body)
    this.counts.bypass++
  }

  /** pages: false. The input goes out in verbatim frames of whole batches (stageVerbatim), unparsed. */
  private pushUnparsed(chunk: Uint8Array): void {
    this.start()
    this.emitted += chunk.length
    this.stageVerbatim(chunk)
  }

  /** Writes the staged bytes: input held by pages: false, or bypassed records (never both in one encoder). */
  private flushUnparsed(): void {
    if (this.staged === 0) return
    this.writer.verbatim(this.stage!.subarray(0, this.staged))
    this.staged = 0
  }

  finish(): void {
    if (this.finished) return
    if (this.prefix === 'sniff' && this.headLen > 0) {
      // Shorter than a save image header: whatever it is, it goes through the QEMU reader (which passes it on).
      this.prefix = 'done'
      this.reader.push(this.head.subarray(0, this.headLen))
    }
    this.reader.finish()
    this.start()
    this.flushUnparsed()
    if (this.reader.stats.sections.end !== 0 && !this.completed) this.onCompletion()
    this.finished = true
    const { hits, misses, evictions, overflows, bytesSaved } = this.codec!.stats
    this.writer.end({ cache: { hits, misses, evictions, overflows, bytesSaved } })
    this.recorder.finish(this.passCounters())
  }

  /** Finished passes, in order (the last one once `finish` was called). */
  get passes(): readonly PassStats[] {
    return this.recorder.passes
  }

  /** The pass in progress so far (its figures grow until the next pass begins). */
  currentPass(): PassStats {
    return this.recorder.current(this.passCounters())
  }

  /** Cumulative counters as the pass statistics see them (bytesIn is the parsed stream position). */
  passCounters(): PassCounters {
    const c = this.counts
    const cache = this.codec?.stats
    return {
      bytesIn: this.emitted,
      bytesOut: this.bytesOut,
      full: c.full,
      delta: c.delta,
      same: c.same,
      zero: c.zero,
      foreign: c.foreign,
      other: c.compress + c.bypass,
      resent: this.detector.resent,
      cacheHits: cache?.hits ?? 0,
      cacheMisses: cache?.misses ?? 0,
    }
  }

  /**
   * The RAM END section begins: QEMU completes. To decide that, it synced its dirty bitmap once more (QEMU
   * 7.2's ram_save_pending, 8.0+'s pending_exact) and found little enough dirty; completing syncs again
   * (ram_save_complete) and the END section sends what that sync found. So the pass in progress ends, an
   * empty pass follows, and the END section is the last pass: the number of passes is QEMU's
   * `dirty-sync-count`. Postcopy completes without those syncs.
   */
  private onCompletion(): void {
    this.completed = true
    if (this.reader.stats.postcopy) {
      if (this.detector.pagesInPass > 0) this.cutPass()
      return
    }
    this.cutPass()
    this.cutPass()
  }

  /** A page repeated within the pass: QEMU synced its dirty bitmap before it. Close the pass here. */
  private cutPass(): void {
    // Close the open batch so that the pass's output bytes are its own.
    this.flushNow()
    this.recorder.cut(this.passCounters())
    this.detector.next()
  }

  private learnBlocks(): void {
    const blocks = this.reader.stats.blocks
    for (let i = this.blocksKnown; i < blocks.length; i++) {
      const b = blocks[i]!
      this.detector.setBlock(b.id, Math.ceil(b.usedLength / this.pageSize))
    }
    this.blocksKnown = blocks.length
  }

  get stats(): EncoderStats {
    return {
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      pages: { ...this.counts },
      cache: this.codec?.stats,
      cacheBytes: this.cacheBytes,
      qemu: this.reader.stats,
      pass: this.recorder.currentPass,
    }
  }

  /** Splits off a libvirt save image's header and XML area (verbatim); returns what belongs to the reader. */
  private consumePrefix(chunk: Uint8Array): Uint8Array {
    let c = chunk
    if (this.prefix === 'sniff') {
      const n = Math.min(SAVE_HEADER_SIZE - this.headLen, c.length)
      this.head.set(c.subarray(0, n), this.headLen)
      this.headLen += n
      c = c.subarray(n)
      if (this.headLen < 16) return c
      const kind = sniffSaveImage(this.head.subarray(0, this.headLen))
      if (kind === undefined) {
        this.prefix = 'done'
        this.reader.push(this.head.subarray(0, this.headLen))
        return c
      }
      if (this.headLen < SAVE_HEADER_SIZE) return c
      this.saveImage = parseSaveImageHeader(this.head) // throws for partial, compressed or unknown images
      this.onVerbatim(this.head)
      this.prefixLeft = this.saveImage.dataLen
      this.prefix = 'save-data'
    }
    const n = Math.min(this.prefixLeft, c.length)
    if (n > 0) this.onVerbatim(c.subarray(0, n))
    this.prefixLeft -= n
    if (this.prefixLeft === 0) this.prefix = 'done'
    return c.subarray(n)
  }

  /**
   * Writes the stream header once the cache size is known, then the bytes held back until then. The header goes
   * out before the cache is allocated (its parameters are computed, not read back): the decoder can set up its
   * own cache while this one allocates and faults in its memory, instead of after.
   */
  private start(): void {
    if (this.codec) return
    const o = this.options
    const isQemu = this.reader.stats.passthrough?.reason !== 'not-qemu' && this.reader.stats.bytes > 0
    const ram = this.reader.ramBytes
    let cacheBytes = o.base?.target.parameters.cacheBytes ?? o.cacheBytes
    if (cacheBytes === undefined) {
      cacheBytes =
        isQemu && ram > 0
          ? Math.min(nextPow2(ram), o.maxAutoCacheBytes ?? DEFAULT_MAX_AUTO_CACHE)
          : MIN_CACHE_BYTES
    }
    const mode = o.mode ?? 'canonical'
    const cache = { pageSize: this.pageSize, cacheBytes, ways: o.ways }
    const p = o.base ? o.base.target.parameters : cacheParameters(cache)
    const header: StreamHeader = {
      pageSize: this.pageSize,
      cache: { cacheBytes: p.cacheBytes, ways: p.ways, policy: p.policy },
      mode,
      source: o.source ?? (this.saveImage ? 'libvirt-save' : isQemu ? 'qemu' : 'raw'),
      encoder: o.encoderName,
      ...(this.writer.version >= 2 && o.compression && o.compression !== 'auto'
        ? { compression: o.compression }
        : {}),
      ...(o.base ? { extensions: [baseRequirementExtension(o.base.requirement)] } : {}),
    }
    if (o.base && this.writer.version < 3)
      throw new RangeError(`a base image needs format version 3 (asked for ${this.writer.version})`)
    if (o.base && p.pageSize !== this.pageSize)
      throw new RangeError(
        `the base was seeded with ${p.pageSize}-byte pages, the stream has ${this.pageSize}`,
      )
    this.writer.header(header)
    this.codec = o.base?.target ?? new PageDeltaEncoder({ cache, mode })
    if (!sameCacheParameters(this.codec.parameters, p))
      throw new Error('XbzrleEncoder: the cache does not match the header written for it')
    this.cacheBytes = p.cacheBytes
    for (const b of this.early) this.writer.verbatim(b)
    this.early = []
    this.earlyBytes = 0
  }

  private onVerbatim(bytes: Uint8Array): void {
    if (this.reader.stats.sections.end !== 0 && !this.completed) this.onCompletion()
    this.emitted += bytes.length
    if (this.codec) {
      if (this.bypass?.bypass) this.stageVerbatim(bytes)
      else this.writer.verbatim(bytes)
      return
    }
    this.early.push(bytes.slice())
    this.earlyBytes += bytes.length
    if (this.earlyBytes > MAX_EARLY_BYTES) this.start()
  }

  /** The cache block id of a reader block: with a base, the base's id for the same RAM block name. */
  private keyId(r: PageRecord): number {
    const base = this.options.base
    if (!base) return r.blockId
    let id = this.keyIds[r.blockId]
    if (id === undefined) {
      const known = base.blockNames.indexOf(r.blockName)
      id = known >= 0 ? known : base.blockNames.length + r.blockId
      this.keyIds[r.blockId] = id
    }
    return id
  }

  private onPage(r: PageRecord): void {
    this.start()
    const codec = this.codec!
    const w = this.writer
    if (this.reader.stats.blocks.length !== this.blocksKnown) this.learnBlocks()
    const det = this.detector
    const q = this.reader.stats
    if (q.sections.end !== 0 && !this.completed) this.onCompletion()
    if (q.postcopy) det.ordered = false
    if (det.isRepeat(r.blockId, r.pageIndex)) this.cutPass()
    det.mark(r.blockId, r.pageIndex)
    this.emitted += r.header.length + r.body.length
    const blockId = this.keyId(r)
    if (this.bypass?.bypass) {
      this.bypassPage(blockId, r)
      return
    }
    switch (r.kind) {
      case 'page': {
        if (r.body.length !== this.pageSize) break
        const res = codec.encodePage(blockId, r.pageIndex, r.body)
        if (res.kind === 'delta') {
          w.pageDelta(blockId, r.pageIndex, r.header, res.delta, r.body)
          this.counts.delta++
        } else if (res.kind === 'same') {
          w.pageSame(blockId, r.pageIndex, r.header, r.body)
          this.counts.same++
        } else {
          w.pageFull(blockId, r.pageIndex, r.header, r.body)
          this.counts.full++
        }
        return
      }
      case 'zero': {
        const fill = r.body[0]!
        codec.applyZero(blockId, r.pageIndex, fill)
        w.pageZero(blockId, r.pageIndex, r.header, fill)
        this.counts.zero++
        return
      }
      case 'xbzrle': {
        // QEMU's own delta: passed through as it is; both caches apply it to their copy of the page.
        codec.applyForeignDelta(blockId, r.pageIndex, r.body.subarray(3))
        w.pageForeign(blockId, r.pageIndex, r.header, r.body)
        this.counts.foreign++
        return
      }
      case 'compress':
        break
    }
    // Anything else changes the page in a way we do not model: forget the cached copy on both sides.
    codec.invalidate(blockId, r.pageIndex)
    w.invalidate(blockId, r.pageIndex)
    w.verbatim(r.header)
    w.verbatim(r.body)
    this.counts.compress++
  }
}
