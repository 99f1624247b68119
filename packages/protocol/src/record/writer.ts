import {
  CACHE_STAT_NAME,
  DEFAULT_BATCH_BYTES,
  FrameKind,
  HDR_RAW,
  LIMITS,
  MAX_BLOCK_ID,
  MAX_CACHE_STATS,
  MAX_PAGE_INDEX,
  RecordTag,
} from '../v1/constants.js'
import { derivableFlags, pageIndexField } from '../v1/page-key.js'
import type { EndStats, PageCounts } from '../v1/types.js'
import type { BatchCompressor, PooledResult } from '../v2/compress-pool.js'
import { PayloadEncoding } from '../v2/constants.js'
import type { Compression, StreamHeader } from '../v2/types.js'
import { ByteWriter } from '../wire/byte-writer.js'
import {
  crc32,
  crc32ByteSmall,
  crc32Combine,
  crc32CombineTable,
  crc32Range,
  crc32ShiftTable,
} from '../wire/crc32.js'
import { MAGIC } from '../wire/magic.js'
import { varintLength } from '../wire/varint.js'
import type { StreamWriting, WriteFormat } from './format.js'
import { foreignBodyProblem } from './frames.js'

/** Fixed bytes of a batch body besides frames: seq varint (≤ 8) + outputLength u32 + outputCrc u32. */
const BATCH_HEAD_MAX = 8 + 4 + 4
/** Envelope, batch head and the largest page frame (kind, key, raw hdr, a 64 KiB page), rounded up. */
const BATCH_SLACK = 72 * 1024

export interface RecordWriterOptions {
  onChunk: (chunk: Uint8Array) => void
  /**
   * Hand `onChunk` a view into the writer's buffer, valid only until `onChunk` returns (the writer reuses the
   * buffer), instead of a caller-owned array. For callers that consume each chunk at once (e.g. re-encode it).
   */
  chunkView?: boolean
  /** Target output bytes per batch (1 – 4 MiB), default 1 MiB. A batch closes once it reaches this. */
  batchBytes?: number
  /**
   * Compress batches on other threads (v2 and later, a fixed compressor the pool handles): records are then
   * handed to `onChunk` later, still strictly in order; `settled()` tells when all are out. A batch closed while
   * no worker is up yet (`available()`) is compressed here, to the same bytes.
   */
  pool?: BatchCompressor
}

/** A batch whose frames the pool compressed, waiting for its turn (see closeBatchPooled). */
interface PooledBatch {
  /** The record up to its frames (envelope, prefix, seq, output length and CRC, payload encoding byte). */
  head: Uint8Array
  encAt: number
  framesLen: number
  /** The record CRC if it is stored plain. */
  plainCrc: number
  result: PooledResult
}

interface QueuedRecord {
  bytes: Uint8Array | undefined
  pooled: PooledBatch | undefined
}

export interface WriterBatchStats {
  /** Batches stored plain (payload encoding 0) and compressed (1). */
  plain: number
  compressed: number
  /** Bytes of v1 frames the batches carried, and the bytes their payloads took on the wire. */
  frameBytes: number
  payloadBytes: number
}

/**
 * The one writer of every format version: prelude, header record, batches (frames, sequence, output length and
 * CRC, record CRC) and END, with the version's strategy (`WriteFormat`) for the header body, the BATCH/END prefix
 * and the batch payload (v2: plain or compressed). Frames are appended to one reusable buffer; each closed batch
 * (or the header, or END) is handed to `onChunk` as an exactly sized array that the caller owns (copied out of the
 * buffer, which the writer keeps and reuses), or with `chunkView` as a view valid only during the call. No
 * allocation per frame; a compressed batch is written over its frames in place.
 *
 * Order: `header()` once, then any frames / `flush()`, then `end()` once. Misuse throws (Error / RangeError).
 */
export class RecordWriter {
  private readonly w: ByteWriter
  private readonly onChunk: (chunk: Uint8Array) => void
  private readonly chunkView: boolean
  private readonly batchBytes: number
  private state: 'new' | 'open' | 'ended' = 'new'
  private pageSize = 0
  private stream: StreamWriting | undefined
  /** Batches stored plain / compressed so far and their sizes. */
  protected readonly stats: WriterBatchStats = { plain: 0, compressed: 0, frameBytes: 0, payloadBytes: 0 }

  private inBatch = false
  private batchStart = 0
  private bodyStart = 0
  /** Where the v1 batch body (seq …) would start: batch limits and `batchBytes` count the v1 body. */
  private v1Start = 0
  private encAt = -1
  private outAt = 0
  private outLen = 0
  private outCrc = 0
  /**
   * The record CRC is kept incrementally over the frames (the batch head is patched at close and combined in
   * then): `recCrc` = CRC-32 of the bytes `[framesStart, crcPos)`. Page and verbatim bytes, which both the record
   * CRC and the output CRC cover, go through crc32 once and are combined into both (SPEC.md CRCs unchanged).
   */
  private framesStart = 0
  private crcPos = 0
  private recCrc = 0
  /** crc32ShiftTable(pageSize): appends a page's CRC to another CRC. */
  private pageShift: Int32Array = new Int32Array(0)
  private seq = 0
  /** pageIndex of the last keyed frame of the open batch, −1 at its start (SPEC.md §5.2). */
  private prevIndex = -1

  private totalOut = 0
  private readonly pages: PageCounts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 }
  private written = 0
  private readonly pool: BatchCompressor | undefined
  /** Records not handed out yet, in stream order: a pooled batch (set once compressed) or a record behind one. */
  private readonly queue: QueuedRecord[] = []
  /** Where pooled records are built when they are handed out as views. */
  private scratch: ByteWriter | undefined
  /** The first failure of a pooled batch or of `onChunk` called for one; every later call throws it. */
  private failure: Error | undefined
  /** Callers waiting until fewer than `below` records are queued (0 < below; 1 = all out). */
  private waiters: { below: number; resolve: () => void; reject: (e: Error) => void }[] = []

  constructor(
    opts: RecordWriterOptions,
    private readonly format: WriteFormat,
  ) {
    const bb = opts.batchBytes ?? DEFAULT_BATCH_BYTES
    if (!Number.isInteger(bb) || bb < 1 || bb > LIMITS.maxBatchOutputBytes)
      throw new RangeError(`batchBytes must be an integer in 1..${LIMITS.maxBatchOutputBytes}, got ${bb}`)
    this.batchBytes = bb
    this.onChunk = opts.onChunk
    this.chunkView = opts.chunkView === true
    this.pool = opts.pool
    // A batch closes once it reaches batchBytes, so it ends at most one frame beyond: with this capacity a
    // full batch fits without regrowing.
    this.w = new ByteWriter(bb + BATCH_SLACK)
  }

  /** Wire bytes handed to `onChunk` so far. */
  get bytesWritten(): number {
    return this.written
  }

  /** Records not yet handed to `onChunk` because a batch before them is still being compressed. */
  get inFlight(): number {
    return this.queue.length
  }

  /** Resolves once every record written so far was handed to `onChunk`; rejects on a pooled batch's failure. */
  settled(): Promise<void> {
    return this.inFlightBelow(1)
  }

  /** Resolves once fewer than `n` records wait (backpressure for a pool's batches); rejects on a failure. */
  inFlightBelow(n: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure)
    if (this.queue.length < n) return Promise.resolve()
    return new Promise((resolve, reject) => this.waiters.push({ below: n, resolve, reject }))
  }

  /** The format version written. */
  get version(): number {
    return this.format.version
  }

  /** The compressor in use (after `header()`; `none` in v1). */
  protected get compressionInUse(): Required<Compression> | undefined {
    return this.stream?.compression
  }

  /** The stream id written in the header (v3, after `header()`); undefined before and in v1/v2. */
  protected get streamId(): Uint8Array | undefined {
    return this.stream?.streamId
  }

  /**
   * Writes the prelude and the header. Throws RangeError on an invalid header (and, v2, CompressorUnavailableError
   * when `header.compression` names a compressor whose package is not installed).
   */
  header(h: StreamHeader): void {
    if (this.state !== 'new') throw new Error('FrameWriter.header() must be called exactly once, first')
    const stream = this.format.begin(h)
    this.stream = stream
    this.pageSize = h.pageSize
    this.pageShift = crc32ShiftTable(h.pageSize)
    const w = this.w
    w.bytes(MAGIC)
    w.varint(this.format.version)
    w.u8(RecordTag.HEADER)
    const lenAt = w.reserve(4)
    const bodyStart = w.pos
    stream.writeHeaderBody(w)
    const bodyLen = w.pos - bodyStart
    if (bodyLen > LIMITS.maxHeaderBytes)
      throw new RangeError(`header is ${bodyLen} bytes (max ${LIMITS.maxHeaderBytes})`)
    w.patchU32le(lenAt, bodyLen)
    w.u32le(crc32(w.view(0, w.pos)))
    this.state = 'open'
    this.emit()
  }

  verbatim(bytes: Uint8Array): void {
    this.checkOpen()
    const n = bytes.length
    let off = 0
    while (off < n) {
      const room = this.inBatch ? this.batchBytes - this.outLen : this.batchBytes
      const take = Math.min(n - off, LIMITS.maxVerbatimBytes, room)
      this.begin(take, 1 + varintLength(take) + take)
      const w = this.w
      w.u8(FrameKind.VERBATIM)
      w.varint(take)
      const part = bytes.subarray(off, off + take)
      this.catchUpCrc()
      w.bytes(part)
      const pc = crc32(part)
      this.recCrc = crc32Combine(this.recCrc, pc, take)
      this.crcPos = w.pos
      this.outCrc = crc32Combine(this.outCrc, pc, take)
      this.outLen += take
      off += take
      this.finishFrame()
    }
  }

  pageFull(blockId: number, pageIndex: number, hdr: Uint8Array, page: Uint8Array): void {
    this.checkPage(blockId, pageIndex, hdr)
    this.checkPageBytes(page, 'page')
    this.pageHead(FrameKind.PAGE_FULL, blockId, pageIndex, hdr, this.pageSize, this.pageSize)
    this.catchUpCrc()
    const w = this.w
    w.bytes(page)
    const pc = crc32(page)
    const shift = this.pageShift
    this.recCrc = crc32CombineTable(this.recCrc, pc, shift)
    this.crcPos = w.pos
    this.outCrc = crc32CombineTable(crc32Range(hdr, 0, hdr.length, this.outCrc), pc, shift)
    this.outLen += hdr.length + page.length
    this.pages.full++
    this.finishFrame()
  }

  /** `newPage` (the page after applying `delta`) only feeds the output CRC; it is not written. */
  pageDelta(
    blockId: number,
    pageIndex: number,
    hdr: Uint8Array,
    delta: Uint8Array,
    newPage: Uint8Array,
  ): void {
    this.checkPage(blockId, pageIndex, hdr)
    this.checkPageBytes(newPage, 'newPage')
    if (delta.length > this.pageSize)
      throw new RangeError(`delta is ${delta.length} bytes; at most pageSize (${this.pageSize})`)
    const extra = varintLength(delta.length) + delta.length
    this.pageHead(FrameKind.PAGE_DELTA, blockId, pageIndex, hdr, extra, this.pageSize)
    this.w.varint(delta.length)
    this.w.bytes(delta)
    this.outCrc = crc32(newPage, crc32Range(hdr, 0, hdr.length, this.outCrc))
    this.outLen += hdr.length + newPage.length
    this.pages.delta++
    this.finishFrame()
  }

  /** `page` (the cached page) only feeds the output CRC; it is not written. */
  pageSame(blockId: number, pageIndex: number, hdr: Uint8Array, page: Uint8Array): void {
    this.checkPage(blockId, pageIndex, hdr)
    this.checkPageBytes(page, 'page')
    this.pageHead(FrameKind.PAGE_SAME, blockId, pageIndex, hdr, 0, this.pageSize)
    this.outCrc = crc32(page, crc32Range(hdr, 0, hdr.length, this.outCrc))
    this.outLen += hdr.length + page.length
    this.pages.same++
    this.finishFrame()
  }

  pageZero(blockId: number, pageIndex: number, hdr: Uint8Array, fill: number): void {
    this.checkPage(blockId, pageIndex, hdr)
    if (!Number.isInteger(fill) || fill < 0 || fill > 255)
      throw new RangeError(`fill must be a byte, got ${fill}`)
    this.pageHead(FrameKind.PAGE_ZERO, blockId, pageIndex, hdr, 1, 1)
    this.w.u8(fill)
    this.outCrc = crc32ByteSmall(fill, crc32Range(hdr, 0, hdr.length, this.outCrc))
    this.outLen += hdr.length + 1
    this.pages.zero++
    this.finishFrame()
  }

  /** `body` is QEMU's XBZRLE record body: `01 | be16 n | n bytes`, n ≤ pageSize. */
  pageForeign(blockId: number, pageIndex: number, hdr: Uint8Array, body: Uint8Array): void {
    this.checkPage(blockId, pageIndex, hdr)
    const why = foreignBodyProblem(body, this.pageSize)
    if (why !== undefined) throw new RangeError(`foreign XBZRLE body: ${why}`)
    const extra = varintLength(body.length) + body.length
    this.pageHead(FrameKind.PAGE_FOREIGN, blockId, pageIndex, hdr, extra, body.length)
    this.w.varint(body.length)
    this.w.bytes(body)
    this.outCrc = crc32(body, crc32(hdr, this.outCrc))
    this.outLen += hdr.length + body.length
    this.pages.foreign++
    this.finishFrame()
  }

  invalidate(blockId: number, pageIndex: number): void {
    this.checkOpen()
    checkKey(blockId, pageIndex)
    this.begin(0, 1 + this.keyWireBound(blockId, pageIndex))
    this.w.u8(FrameKind.INVALIDATE)
    this.writeKey(blockId, pageIndex)
    this.finishFrame()
  }

  reset(): void {
    this.checkOpen()
    this.begin(0, 1)
    this.w.u8(FrameKind.RESET)
    this.finishFrame()
  }

  /** Closes the current batch (if it has frames) and hands it out now. */
  flush(): void {
    this.checkOpen()
    if (this.inBatch) this.closeBatch()
  }

  /** Flushes, writes the END record with the totals of everything written, and hands it out. */
  end(stats: EndStats = {}): void {
    this.checkOpen()
    const cache = stats.cache ?? {}
    const names = Object.keys(cache)
    if (names.length > MAX_CACHE_STATS) throw new RangeError(`at most ${MAX_CACHE_STATS} cache stats`)
    for (const name of names) {
      if (!CACHE_STAT_NAME.test(name))
        throw new RangeError(`cache stat name ${JSON.stringify(name)} is invalid`)
      const v = cache[name]!
      if (!Number.isSafeInteger(v) || v < 0)
        throw new RangeError(`cache stat ${name} must be a non-negative integer`)
    }
    if (this.inBatch) this.closeBatch()
    const w = this.w
    w.u8(RecordTag.END)
    const lenAt = w.reserve(4)
    const bodyStart = w.pos
    w.bytes(this.stream!.prefix)
    w.varint(this.totalOut)
    w.varint(this.seq)
    const p = this.pages
    w.varint(p.full)
    w.varint(p.delta)
    w.varint(p.same)
    w.varint(p.zero)
    w.varint(p.foreign)
    w.varint(names.length)
    for (const name of names) {
      w.varint(name.length)
      for (let i = 0; i < name.length; i++) w.u8(name.charCodeAt(i))
      w.varint(cache[name]!)
    }
    w.patchU32le(lenAt, w.pos - bodyStart)
    w.u32le(crc32(w.view(lenAt - 1, w.pos)))
    this.state = 'ended'
    this.emit()
  }

  // ---- internals ----

  private checkOpen(): void {
    if (this.failure) throw this.failure
    if (this.state !== 'open')
      throw new Error(
        this.state === 'new' ? 'FrameWriter: header() first' : 'FrameWriter: stream already ended',
      )
  }

  private checkPage(blockId: number, pageIndex: number, hdr: Uint8Array): void {
    this.checkOpen()
    checkKey(blockId, pageIndex)
    if (hdr.length > LIMITS.maxHdrBytes)
      throw new RangeError(`hdr is ${hdr.length} bytes (max ${LIMITS.maxHdrBytes})`)
  }

  private checkPageBytes(page: Uint8Array, name: string): void {
    if (page.length !== this.pageSize)
      throw new RangeError(`${name} is ${page.length} bytes, the stream's pageSize is ${this.pageSize}`)
  }

  /**
   * Writes kind, key and hdr of a page frame; `extraWire` = bytes that follow, `payloadOut` = output after hdr.
   * The header is derived (`h = flags + 1`) when it is exactly `be64(pageIndex * pageSize + flags)` with
   * `flags < pageSize`, raw (`h = 0`, len, bytes) otherwise.
   */
  private pageHead(
    kind: number,
    blockId: number,
    pageIndex: number,
    hdr: Uint8Array,
    extraWire: number,
    payloadOut: number,
  ): void {
    const flags = derivableFlags(hdr, pageIndex, this.pageSize)
    const hdrWire = flags >= 0 ? varintLength(flags + 1) : 1 + varintLength(hdr.length) + hdr.length
    this.begin(hdr.length + payloadOut, 1 + this.keyWireBound(blockId, pageIndex) + hdrWire + extraWire)
    const w = this.w
    w.u8(kind)
    this.writeKey(blockId, pageIndex)
    if (flags >= 0) {
      w.varint(flags + 1)
    } else {
      w.varint(HDR_RAW)
      w.varint(hdr.length)
      w.bytes(hdr)
    }
  }

  /**
   * Wire bytes of a key, at most: the pageIndex field depends on the batch, and `begin()` may open a new one
   * (where prev = −1), so this is the larger of both encodings.
   */
  private keyWireBound(blockId: number, pageIndex: number): number {
    const here = varintLength(pageIndexField(pageIndex, this.prevIndex))
    const fresh = varintLength(pageIndexField(pageIndex, -1))
    return varintLength(blockId) + Math.max(here, fresh)
  }

  /** blockId (absolute), then pageIndex delta-coded against the previous keyed frame of this batch. */
  private writeKey(blockId: number, pageIndex: number): void {
    this.w.varint(blockId)
    this.w.varint(pageIndexField(pageIndex, this.prevIndex))
    this.prevIndex = pageIndex
  }

  /** Makes sure a batch is open with room for a frame of `out` output and `wire` wire bytes. */
  private begin(out: number, wire: number): void {
    if (
      this.inBatch &&
      (this.outLen + out > LIMITS.maxBatchOutputBytes ||
        this.w.pos - this.v1Start + wire > LIMITS.maxBatchWireBytes)
    )
      this.closeBatch()
    if (!this.inBatch) this.openBatch()
    this.w.ensure(wire)
  }

  private finishFrame(): void {
    if (this.outLen >= this.batchBytes || this.w.pos - this.v1Start >= this.batchBytes) this.closeBatch()
  }

  private openBatch(): void {
    const w = this.w
    const stream = this.stream!
    this.batchStart = w.pos
    w.ensure(5 + stream.prefix.length + BATCH_HEAD_MAX + 1)
    w.u8(RecordTag.BATCH)
    w.reserve(4)
    this.bodyStart = w.pos
    w.bytes(stream.prefix)
    this.v1Start = w.pos
    w.varint(this.seq)
    this.outAt = w.reserve(8)
    if (stream.payloadEncoding) {
      // plain until closeBatch() finds the compressed frames smaller; the v1 body does not count this byte
      this.encAt = w.pos
      w.u8(PayloadEncoding.PLAIN)
      this.v1Start++
    }
    this.framesStart = w.pos
    this.crcPos = w.pos
    this.recCrc = 0
    this.outLen = 0
    this.outCrc = 0
    this.prevIndex = -1
    this.inBatch = true
  }

  private closeBatch(): void {
    const w = this.w
    w.patchU32le(this.outAt, this.outLen)
    w.patchU32le(this.outAt + 4, this.outCrc)
    const framesLen = w.pos - this.framesStart
    const stream = this.stream!
    if (
      this.pool &&
      framesLen > 0 &&
      stream.compress &&
      stream.fixed &&
      this.pool.handles(stream.compression) &&
      this.pool.available()
    ) {
      this.closeBatchPooled(framesLen)
      return
    }
    const packed =
      framesLen > 0 ? this.stream!.compress?.(w.buf.subarray(this.framesStart, w.pos)) : undefined
    const s = this.stats
    s.frameBytes += framesLen
    if (packed !== undefined) {
      // enc 1: framesLength ‖ compressed, written over the frames (the compressor's output is a separate array)
      w.buf[this.encAt] = PayloadEncoding.COMPRESSED
      w.pos = this.framesStart
      w.varint(framesLen)
      w.bytes(packed)
      w.patchU32le(this.batchStart + 1, w.pos - this.bodyStart)
      w.u32le(crc32Range(w.buf, this.batchStart, w.pos))
      s.compressed++
      s.payloadBytes += w.pos - 4 - this.framesStart
    } else {
      w.patchU32le(this.batchStart + 1, w.pos - this.bodyStart)
      this.catchUpCrc()
      const headCrc = crc32Range(w.buf, this.batchStart, this.framesStart)
      w.u32le(crc32Combine(headCrc, this.recCrc, framesLen))
      s.plain++
      s.payloadBytes += framesLen
    }
    this.totalOut += this.outLen
    this.seq++
    this.inBatch = false
    this.emit()
  }

  /**
   * closeBatch with the frames compressed on the pool: everything but the compression happens now, exactly as in
   * closeBatch (sequence, totals, the plain record's CRC); the record is finished and released when the pool is
   * done and every record before it is out. Same bytes as closeBatch for the same compressor output.
   */
  private closeBatchPooled(framesLen: number): void {
    const w = this.w
    this.catchUpCrc()
    w.patchU32le(this.batchStart + 1, w.pos - this.bodyStart)
    const plainCrc = crc32Combine(
      crc32Range(w.buf, this.batchStart, this.framesStart),
      this.recCrc,
      framesLen,
    )
    const head = w.buf.slice(this.batchStart, this.framesStart)
    const encAt = this.encAt - this.batchStart
    const job = this.pool!.compress(w.buf.subarray(this.framesStart, w.pos), this.stream!.compression)
    w.pos = this.batchStart
    if (w.pos > 0) this.emit() // records before this batch (none today: each is handed out when written)
    this.stats.frameBytes += framesLen
    this.totalOut += this.outLen
    this.seq++
    this.inBatch = false
    const slot: QueuedRecord = { bytes: undefined, pooled: undefined }
    this.queue.push(slot)
    job.then(
      (result) => {
        slot.pooled = { head, encAt, framesLen, plainCrc, result }
        this.release()
      },
      (e: Error) => this.poolFailed(e),
    )
  }

  /**
   * Writes the record of a pooled batch into `out` (reset first): compressed when that is smaller (the
   * payloadWriter rule), else plain with the CRC computed when the batch closed.
   */
  private pooledRecord(out: ByteWriter, p: PooledBatch): void {
    const { head, framesLen } = p
    const z = p.result.compressed
    const s = this.stats
    out.pos = 0
    const compressed = z !== undefined && varintLength(framesLen) + z.length < framesLen
    const n = head.length + (compressed ? varintLength(framesLen) + z.length : framesLen)
    out.ensure(n + 4)
    out.bytes(head)
    if (compressed) {
      out.buf[p.encAt] = PayloadEncoding.COMPRESSED
      out.varint(framesLen)
      out.bytes(z)
      out.patchU32le(1, n - 5)
      out.u32le(crc32Range(out.buf, 0, n))
      s.compressed++
    } else {
      out.bytes(p.result.frames)
      out.u32le(p.plainCrc)
      s.plain++
    }
    s.payloadBytes += n - head.length
  }

  /**
   * Hands out the finished records at the head of the queue, in order. A pooled batch's record is built here, at
   * its turn: with chunkView in one reused buffer (no fresh memory per batch), else in an array the caller owns.
   */
  private release(): void {
    const q = this.queue
    try {
      while (q.length > 0 && this.failure === undefined) {
        const head = q[0]!
        if (head.bytes === undefined && head.pooled === undefined) break
        q.shift()
        let bytes = head.bytes
        if (head.pooled) {
          this.scratch ??= new ByteWriter(this.batchBytes + BATCH_SLACK)
          const scratch = this.scratch
          try {
            this.pooledRecord(scratch, head.pooled)
          } finally {
            head.pooled.result.release()
          }
          bytes = this.chunkView ? scratch.view() : scratch.buf.slice(0, scratch.pos)
        }
        this.written += bytes!.length
        this.onChunk(bytes!)
      }
    } catch (e) {
      this.poolFailed(e instanceof Error ? e : new Error(String(e)))
      return
    }
    const waiting = this.waiters
    if (waiting.length === 0) return
    this.waiters = waiting.filter((w) => q.length >= w.below)
    for (const w of waiting) if (q.length < w.below) w.resolve()
  }

  /** A pooled batch (or handing one out) failed: nothing after it is released; waiters and later calls see it. */
  private poolFailed(e: Error): void {
    this.failure ??= e
    for (const r of this.queue) r.pooled?.result.release()
    this.queue.length = 0
    for (const w of this.waiters.splice(0)) w.reject(this.failure)
  }

  /** Extends `recCrc` over the frame bytes written since `crcPos`. */
  private catchUpCrc(): void {
    const w = this.w
    if (w.pos > this.crcPos) {
      this.recCrc = crc32Range(w.buf, this.crcPos, w.pos, this.recCrc)
      this.crcPos = w.pos
    }
  }

  private emit(): void {
    if (this.queue.length > 0) {
      // a pooled batch before this record is not out yet: this one waits behind it, as a copy
      const w = this.w
      this.queue.push({ bytes: w.buf.slice(0, w.pos), pooled: undefined })
      w.pos = 0
      return
    }
    if (this.chunkView) {
      const w = this.w
      const chunk = w.view()
      this.written += chunk.length
      try {
        this.onChunk(chunk)
      } finally {
        w.pos = 0
      }
      return
    }
    // Copied out, the buffer stays: writing frames into the same warm buffer and copying each record out once
    // measured faster (filter-path bench, v1 and v2) than handing the buffer out and writing the next batch into
    // a fresh, never-touched one (ByteWriter.take); and each chunk is exactly its record's size.
    const w = this.w
    const chunk = w.buf.slice(0, w.pos)
    w.pos = 0
    this.written += chunk.length
    this.onChunk(chunk)
  }
}

export function checkKey(blockId: number, pageIndex: number): void {
  if (!Number.isInteger(blockId) || blockId < 0 || blockId > MAX_BLOCK_ID)
    throw new RangeError(`blockId must be an integer in 0..${MAX_BLOCK_ID}, got ${blockId}`)
  if (!Number.isInteger(pageIndex) || pageIndex < 0 || pageIndex > MAX_PAGE_INDEX)
    throw new RangeError(`pageIndex must be an integer in 0..${MAX_PAGE_INDEX}, got ${pageIndex}`)
}
