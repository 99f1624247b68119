import { ProtocolError, streamError } from '../errors.js'
import { CACHE_STAT_NAME, LIMITS, type Limits, MAX_CACHE_STATS, RecordTag } from '../v1/constants.js'
import type { EndFrame, Frame, FrameReaderOptions, PageCounts } from '../v1/types.js'
import type { Batch, ReaderItem } from '../v2/types.js'
import { readU32le } from '../wire/byte-writer.js'
import { ChunkQueue } from '../wire/chunk-queue.js'
import { crc32, hex32 } from '../wire/crc32.js'
import { Cursor } from '../wire/cursor.js'
import { MAGIC_LENGTH } from '../wire/magic.js'
import { readPrelude, unsupportedVersion } from '../wire/prelude.js'
import type { ReadFormat, StreamReading } from './format.js'
import { parseFrames } from './frames.js'

/** Record envelope: tag u8 + length u32le … crc u32le. */
const ENVELOPE_HEAD = 5
const ENVELOPE_TAIL = 4

export function resolveLimits(given: Partial<Limits> | undefined): Limits {
  const out: Limits = { ...LIMITS }
  if (given === undefined) return out
  for (const key of Object.keys(LIMITS) as (keyof Limits)[]) {
    const v = given[key]
    if (v === undefined) continue
    if (!Number.isInteger(v) || v < 0 || v > LIMITS[key])
      throw new RangeError(
        `limits.${key} must be an integer in 0..${LIMITS[key]} (the spec maximum), got ${v}`,
      )
    out[key] = v
  }
  return out
}

/** `maxVersion` as given, checked: a positive integer (default `fallback`). */
export function checkMaxVersion(opts: FrameReaderOptions, fallback: number): number {
  const max = opts.maxVersion ?? fallback
  if (!Number.isInteger(max) || max < 1)
    throw new RangeError(`maxVersion must be a positive integer, got ${opts.maxVersion}`)
  return max
}

/**
 * The `select` of a reader of one version only (the `/v1`, `/v2`, `/v3` modules): newer versions and older ones are
 * both refused with UNSUPPORTED_VERSION (an older one names the version-dispatching reader).
 */
export function onlyVersion(opts: FrameReaderOptions, format: ReadFormat): (version: number) => ReadFormat {
  const max = Math.min(checkMaxVersion(opts, format.version), format.version)
  return (version) => {
    if (version < 1 || version > max) throw unsupportedVersion(version, max)
    if (version !== format.version)
      throw streamError(
        'UNSUPPORTED_VERSION',
        `format version ${version} given to the version ${format.version} reader (FrameReader of @xbzrle/protocol reads every version)`,
        MAGIC_LENGTH,
        'use the version-dispatching reader',
      )
    return format
  }
}

class BatchImpl implements Batch {
  constructor(
    readonly seq: number,
    readonly outputLength: number,
    readonly outputCrc: number,
    readonly offset: number,
    readonly compressed: boolean,
    private readonly list: readonly Frame[],
  ) {}
  get frameCount(): number {
    return this.list.length
  }
  frames(): Iterable<Frame> {
    return this.list
  }
}

/**
 * The one reader of every format version (SPEC.md §1–§8, §11, §12): prelude, header envelope and CRC, the record
 * loop (tag, length limit, CRC, sequence), frames and END, with the version's strategy (`ReadFormat`) for its
 * header body, its BATCH/END prefix and its batch payload. `select(version)` picks the strategy from the prelude
 * (or throws UNSUPPORTED_VERSION).
 *
 * Pull API: `push()` bytes split anywhere, `next()` until it returns undefined, `finish()` at EOF. Every problem is a
 * ProtocolError; after one, every call rethrows it. Memory: only the bytes of the record in progress (plus what
 * the caller pushed ahead). Frames are plain Uint8Array views into the input (or the decompressed frames).
 */
export class RecordReader<Item extends object = ReaderItem> {
  private readonly q = new ChunkQueue()
  private readonly limits: Limits
  private state: 'prelude' | 'records' | 'done' = 'prelude'
  private error: ProtocolError | undefined
  private format: ReadFormat | undefined
  private stream: StreamReading | undefined
  private pageSize = 0
  private seq = 0
  private totalOut = 0
  private readonly pages: PageCounts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 }
  /** Tag and body length of the record at the head of the queue, once validated. */
  private pendingTag = -1
  private pendingLen = 0
  /** The format version of the stream, once its prelude was read. */
  version: number | undefined
  private readonly acceptCritical: readonly number[] | undefined
  private readonly reuseBatchBuffer: boolean

  constructor(
    opts: FrameReaderOptions,
    private readonly select: (version: number) => ReadFormat,
  ) {
    this.limits = resolveLimits(opts.limits)
    this.acceptCritical = opts.acceptCritical
    this.reuseBatchBuffer = opts.reuseBatchBuffer === true
  }

  push(chunk: Uint8Array): void {
    if (this.error) throw this.error
    if (chunk.length === 0) return
    if (this.state === 'done')
      this.fail(streamError('TRAILING_DATA', 'data after the END record', this.q.offset + this.q.length))
    this.q.push(chunk)
    if (this.state === 'prelude') this.guard(() => readPrelude(this.q, false))
  }

  next(): Item | undefined {
    if (this.error) throw this.error
    return this.guard(() => this.step()) as Item | undefined
  }

  finish(): void {
    if (this.error) throw this.error
    this.guard(() => {
      if (this.state === 'done') {
        if (this.q.length > 0) throw streamError('TRAILING_DATA', 'data after the END record', this.q.offset)
        return
      }
      if (this.step() !== undefined)
        throw new Error('FrameReader.finish() called before next() returned undefined')
      const q = this.q
      if (this.state === 'prelude') {
        if (q.length === 0) throw streamError('TRUNCATED', 'empty input', 0)
        readPrelude(q, true)
        throw streamError('TRUNCATED', 'input ends inside the stream header', q.offset + q.length)
      }
      if (q.length === 0) throw streamError('TRUNCATED', 'input ends without an END record', q.offset)
      const what = this.pendingTag === RecordTag.BATCH ? `batch ${this.seq}` : 'record'
      throw streamError(
        'TRUNCATED',
        `input ends inside ${what} (${q.length} bytes present)`,
        q.offset + q.length,
      )
    })
  }

  private guard<T>(fn: () => T): T {
    try {
      return fn()
    } catch (e) {
      if (e instanceof ProtocolError) this.fail(e)
      throw e
    }
  }

  private fail(e: ProtocolError): never {
    this.error = e
    throw e
  }

  private step(): ReaderItem | undefined {
    const q = this.q
    if (this.state === 'done') {
      if (q.length > 0) throw streamError('TRAILING_DATA', 'data after the END record', q.offset)
      return undefined
    }
    if (this.state === 'prelude') return this.readHeader()
    const fmt = this.format!
    if (this.pendingTag < 0) {
      if (q.length < ENVELOPE_HEAD) return undefined
      const head = q.view(ENVELOPE_HEAD)
      const tag = head[0]!
      const len = readU32le(head, 1)
      if (tag === RecordTag.BATCH) {
        const max = this.limits.maxBatchWireBytes + fmt.batchExtra
        if (len > max) throw streamError('LIMIT', `batch ${this.seq} is ${len} bytes (max ${max})`, q.offset)
      } else if (tag === RecordTag.END) {
        const max = this.limits.maxEndBytes + fmt.endExtra
        if (len > max) throw streamError('LIMIT', `END record is ${len} bytes (max ${max})`, q.offset)
      } else {
        throw streamError('MALFORMED', `unknown record tag 0x${tag.toString(16).padStart(2, '0')}`, q.offset)
      }
      this.pendingTag = tag
      this.pendingLen = len
    }
    const total = ENVELOPE_HEAD + this.pendingLen + ENVELOPE_TAIL
    if (q.length < total) return undefined
    const rec = plain(q.view(total))
    const offset = q.offset
    const tag = this.pendingTag
    const bodyEnd = ENVELOPE_HEAD + this.pendingLen
    const what = tag === RecordTag.BATCH ? `batch ${this.seq}` : 'END record'
    if (readU32le(rec, bodyEnd) !== crc32(rec.subarray(0, bodyEnd)))
      throw streamError('CHECKSUM', `${what} checksum mismatch`, offset)
    const c = new Cursor(rec, ENVELOPE_HEAD, bodyEnd, offset, what)
    this.stream!.readPrefix?.(c, what)
    const item: ReaderItem =
      tag === RecordTag.BATCH ? { type: 'batch', batch: this.readBatch(c, offset) } : this.readEnd(c, offset)
    q.consume(total)
    this.pendingTag = -1
    return item
  }

  private readHeader(): ReaderItem | undefined {
    const q = this.q
    const pre = readPrelude(q, false)
    if (pre === undefined) return undefined
    if (this.format === undefined) {
      this.format = this.select(pre.version)
      this.version = pre.version
    }
    const headAt = pre.length
    if (q.length < headAt + ENVELOPE_HEAD) return undefined
    const head = q.view(headAt + ENVELOPE_HEAD)
    if (head[headAt] !== RecordTag.HEADER)
      throw streamError(
        'MALFORMED',
        `expected the header record (tag 0x48), found 0x${head[headAt]!.toString(16)}`,
        headAt,
      )
    const len = readU32le(head, headAt + 1)
    if (len > this.limits.maxHeaderBytes)
      throw streamError('LIMIT', `header record is ${len} bytes (max ${this.limits.maxHeaderBytes})`, headAt)
    const bodyStart = headAt + ENVELOPE_HEAD
    const total = bodyStart + len + ENVELOPE_TAIL
    if (q.length < total) return undefined
    const rec = q.view(total)
    const bodyEnd = bodyStart + len
    if (readU32le(rec, bodyEnd) !== crc32(rec.subarray(0, bodyEnd)))
      throw streamError('CHECKSUM', 'header checksum mismatch', headAt)
    const stream = this.format.readHeader(
      new Cursor(rec, bodyStart, bodyEnd, q.offset, 'header'),
      this.acceptCritical,
      this.reuseBatchBuffer,
    )
    this.stream = stream
    this.pageSize = stream.header.pageSize
    q.consume(total)
    this.state = 'records'
    return { type: 'header', version: this.format.version, header: stream.header }
  }

  private readBatch(c: Cursor, offset: number): Batch {
    const lim = this.limits
    const ctx = c.context
    const seqAt = c.offset
    const seq = c.varint('sequence number')
    if (seq !== this.seq) {
      const why = seq < this.seq ? 'replayed or reordered' : 'missing batches or reordered'
      throw streamError(
        'SEQUENCE',
        `expected batch ${this.seq}, found batch ${seq} (${why})`,
        seqAt,
        'batches lost, reordered or replayed',
      )
    }
    const outAt = c.offset
    const outputLength = c.u32le('output length')
    const outputCrc = c.u32le('output CRC')
    if (outputLength > lim.maxBatchOutputBytes)
      throw streamError(
        'LIMIT',
        `${ctx} decodes to ${outputLength} bytes (max ${lim.maxBatchOutputBytes})`,
        outAt,
      )
    const stored = this.stream!.readPayload(c, c.offset - seqAt, lim, ctx)
    const parsed = parseFrames(stored.frames, this.pageSize, lim, ctx)
    if (parsed.out !== outputLength)
      c.fail(`frames decode to ${parsed.out} bytes but the batch declares ${outputLength}`, outAt)
    const p = this.pages
    const n = parsed.counts
    p.full += n.full
    p.delta += n.delta
    p.same += n.same
    p.zero += n.zero
    p.foreign += n.foreign
    this.totalOut += outputLength
    this.seq++
    return new BatchImpl(seq, outputLength, outputCrc, offset, stored.compressed, parsed.frames)
  }

  private readEnd(c: Cursor, offset: number): ReaderItem {
    const end = parseEnd(c, offset, this.totalOut, this.seq, this.pages)
    this.state = 'done'
    return { type: 'end', end }
  }
}

/** A Buffer's subarray/slice would not be a plain view: frames are plain Uint8Array views in every version. */
function plain(b: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(b) === Uint8Array.prototype
    ? b
    : new Uint8Array(b.buffer, b.byteOffset, b.length)
}

/**
 * Parses and checks the v1 fields of an END record from `c` to its end (its CRC already verified) against what
 * was read: `readOut` original bytes in `readBatches` batches with `readPages` page frames (SPEC.md §6).
 */
function parseEnd(
  c: Cursor,
  offset: number,
  readOut: number,
  readBatches: number,
  readPages: PageCounts,
): EndFrame {
  const totalBytes = c.varint('totalBytes')
  const batches = c.varint('batch count')
  const pages: PageCounts = {
    full: c.varint('full count'),
    delta: c.varint('delta count'),
    same: c.varint('same count'),
    zero: c.varint('zero count'),
    foreign: c.varint('foreign count'),
  }
  const nAt = c.offset
  const n = c.varint('cache stat count')
  if (n > MAX_CACHE_STATS) c.fail(`${n} cache stats (max ${MAX_CACHE_STATS})`, nAt)
  const cache: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const at = c.offset
    const len = c.varint('cache stat name length')
    const raw = c.bytes(len, 'cache stat name')
    const name = len <= 32 ? String.fromCharCode(...raw) : ''
    if (!CACHE_STAT_NAME.test(name) || Object.hasOwn(cache, name))
      c.fail('invalid or duplicate cache stat name', at)
    cache[name] = c.varint(`cache stat ${name}`)
  }
  if (c.remaining !== 0) c.fail(`${c.remaining} unexpected bytes after the END fields`)
  const mismatch: string[] = []
  if (totalBytes !== readOut) mismatch.push(`totalBytes ${totalBytes} declared, ${readOut} in batches`)
  if (batches !== readBatches) mismatch.push(`batches ${batches} declared, ${readBatches} read`)
  for (const k of ['full', 'delta', 'same', 'zero', 'foreign'] as const)
    if (pages[k] !== readPages[k]) mismatch.push(`${k} pages ${pages[k]} declared, ${readPages[k]} read`)
  if (mismatch.length > 0)
    throw streamError('TOTALS', `END totals disagree with the stream: ${mismatch.join('; ')}`, offset)
  return { totalBytes, batches, pages, cache, offset }
}

/**
 * The consumer's check of a batch's output, before releasing it: `crcOfProduced`/`lengthProduced` describe the
 * bytes it decoded. Throws ProtocolError('OUTPUT_MISMATCH').
 */
export function verifyBatchOutput(
  batch: { seq: number; outputLength: number; outputCrc: number; offset: number },
  crcOfProduced: number,
  lengthProduced: number,
): void {
  if (lengthProduced === batch.outputLength && crcOfProduced >>> 0 === batch.outputCrc) return
  throw streamError(
    'OUTPUT_MISMATCH',
    `batch ${batch.seq} decoded to ${lengthProduced} bytes with CRC ${hex32(crcOfProduced)}, expected ${batch.outputLength} bytes with CRC ${hex32(batch.outputCrc)}`,
    batch.offset,
  )
}

/** The consumer's final check: the total bytes it produced equal END's total. Throws ProtocolError('TOTALS'). */
export function verifyEndTotals(end: EndFrame, producedBytes: number): void {
  if (producedBytes === end.totalBytes) return
  throw streamError('TOTALS', `produced ${producedBytes} bytes, END declares ${end.totalBytes}`, end.offset)
}
