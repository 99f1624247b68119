import { ProtocolError, streamError } from '../errors.js'
import { readU32le } from '../wire/byte-writer.js'
import { ChunkQueue } from '../wire/chunk-queue.js'
import { crc32, hex32 } from '../wire/crc32.js'
import { Cursor } from '../wire/cursor.js'
import { readPrelude, unsupportedVersion } from '../wire/prelude.js'
import {
  CACHE_STAT_NAME,
  DERIVED_HDR_BYTES,
  FrameKind,
  HDR_RAW,
  LIMITS,
  type Limits,
  MAX_BLOCK_ID,
  MAX_CACHE_STATS,
  MAX_PAGE_INDEX,
  RecordTag,
  VERSION,
} from './constants.js'
import { readHeaderBody } from './header.js'
import { derivableFlags, unzigzag, writeDerivedHdr } from './page-key.js'
import type { Batch, EndFrame, Frame, FrameReaderOptions, PageCounts, ReaderItem } from './types.js'
import { foreignBodyProblem } from './writer.js'

/** Record envelope: tag u8 + length u32le … crc u32le. */
const ENVELOPE_HEAD = 5
const ENVELOPE_TAIL = 4
/** Largest block of reconstructed (derived) page-record headers allocated at once. */
const MAX_HDR_ARENA = 64 * 1024
const EMPTY = new Uint8Array(0)

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

class BatchImpl implements Batch {
  constructor(
    readonly seq: number,
    readonly outputLength: number,
    readonly outputCrc: number,
    readonly offset: number,
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
 * Reads a v1 xbzrle stream from chunks split anywhere. Pull API: `push()` bytes, then call `next()` until it
 * returns undefined; at EOF call `finish()`. Every problem is a ProtocolError; after one, every call rethrows it.
 * Memory: the reader keeps only the bytes of the record in progress (plus what the caller pushed ahead).
 */
export class FrameReader {
  private readonly q = new ChunkQueue()
  private readonly limits: Limits
  private readonly maxVersion: number
  private state: 'prelude' | 'records' | 'done' = 'prelude'
  private error: ProtocolError | undefined
  private pageSize = 0
  private seq = 0
  private totalOut = 0
  private readonly pages: PageCounts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 }
  /** Tag and body length of the record at the head of the queue, once validated. */
  private pendingTag = -1
  private pendingLen = 0

  constructor(opts: FrameReaderOptions = {}) {
    this.limits = resolveLimits(opts.limits)
    this.maxVersion = opts.maxVersion ?? VERSION
    if (!Number.isInteger(this.maxVersion) || this.maxVersion < 1)
      throw new RangeError(`maxVersion must be a positive integer, got ${opts.maxVersion}`)
  }

  push(chunk: Uint8Array): void {
    if (this.error) throw this.error
    if (chunk.length === 0) return
    if (this.state === 'done')
      this.fail(streamError('TRAILING_DATA', 'data after the END record', this.q.offset + this.q.length))
    this.q.push(chunk)
    if (this.state === 'prelude') this.guard(() => readPrelude(this.q, false))
  }

  next(): ReaderItem | undefined {
    if (this.error) throw this.error
    return this.guard(() => this.step())
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
    if (this.pendingTag < 0) {
      if (q.length < ENVELOPE_HEAD) return undefined
      const head = q.view(ENVELOPE_HEAD)
      const tag = head[0]!
      const len = readU32le(head, 1)
      if (tag === RecordTag.BATCH) {
        if (len > this.limits.maxBatchWireBytes)
          throw streamError(
            'LIMIT',
            `batch ${this.seq} is ${len} bytes (max ${this.limits.maxBatchWireBytes})`,
            q.offset,
          )
      } else if (tag === RecordTag.END) {
        if (len > this.limits.maxEndBytes)
          throw streamError('LIMIT', `END record is ${len} bytes (max ${this.limits.maxEndBytes})`, q.offset)
      } else {
        throw streamError('MALFORMED', `unknown record tag 0x${tag.toString(16).padStart(2, '0')}`, q.offset)
      }
      this.pendingTag = tag
      this.pendingLen = len
    }
    const total = ENVELOPE_HEAD + this.pendingLen + ENVELOPE_TAIL
    if (q.length < total) return undefined
    const rec = q.view(total)
    const offset = q.offset
    const tag = this.pendingTag
    const bodyEnd = ENVELOPE_HEAD + this.pendingLen
    const stored = readU32le(rec, bodyEnd)
    const actual = crc32(rec.subarray(0, bodyEnd))
    if (stored !== actual) {
      const what = tag === RecordTag.BATCH ? `batch ${this.seq}` : 'END record'
      throw streamError('CHECKSUM', `${what} checksum mismatch`, offset)
    }
    const item =
      tag === RecordTag.BATCH ? this.readBatch(rec, bodyEnd, offset) : this.readEnd(rec, bodyEnd, offset)
    q.consume(total)
    this.pendingTag = -1
    return item
  }

  private readHeader(): ReaderItem | undefined {
    const q = this.q
    const pre = readPrelude(q, false)
    if (pre === undefined) return undefined
    if (pre.version < 1 || pre.version > Math.min(this.maxVersion, VERSION))
      throw unsupportedVersion(pre.version, Math.min(this.maxVersion, VERSION))
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
    const header = readHeaderBody(new Cursor(rec, bodyStart, bodyEnd, q.offset, 'header'))
    this.pageSize = header.pageSize
    q.consume(total)
    this.state = 'records'
    return { type: 'header', version: VERSION, header }
  }

  private readBatch(rec: Uint8Array, bodyEnd: number, offset: number): ReaderItem {
    const lim = this.limits
    const ctx = `batch ${this.seq}`
    const c = new Cursor(rec, ENVELOPE_HEAD, bodyEnd, offset, ctx)
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
    const { frames, counts, out } = parseFrames(c, this.pageSize, lim, ctx)
    if (out !== outputLength)
      c.fail(`frames decode to ${out} bytes but the batch declares ${outputLength}`, outAt)
    const p = this.pages
    p.full += counts.full
    p.delta += counts.delta
    p.same += counts.same
    p.zero += counts.zero
    p.foreign += counts.foreign
    this.totalOut += outputLength
    this.seq++
    return { type: 'batch', batch: new BatchImpl(seq, outputLength, outputCrc, offset, frames) }
  }

  private readEnd(rec: Uint8Array, bodyEnd: number, offset: number): ReaderItem {
    const end = parseEnd(rec, bodyEnd, offset, this.totalOut, this.seq, this.pages)
    this.state = 'done'
    return { type: 'end', end }
  }
}

/**
 * Parses and checks an END record `rec[0 .. bodyEnd)` (its CRC already verified) against what was read:
 * `readOut` original bytes in `readBatches` batches with `readPages` page frames (SPEC.md §6).
 */
export function parseEnd(
  rec: Uint8Array,
  bodyEnd: number,
  offset: number,
  readOut: number,
  readBatches: number,
  readPages: PageCounts,
): EndFrame {
  const c = new Cursor(rec, ENVELOPE_HEAD, bodyEnd, offset, 'END record')
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

/** The frames of a batch body and what they add up to (SPEC.md §5.2, §5.3). */
export interface ParsedFrames {
  frames: Frame[]
  counts: PageCounts
  /** Sum of the frames' output lengths. */
  out: number
}

/**
 * Parses the frames from `c` to its end (a v1 batch body after outputCrc; also a v2 batch's decoded frames),
 * with every v1 frame rule and error. Byte fields are views into `c.buf` (derived headers: into scratch).
 */
export function parseFrames(c: Cursor, pageSize: number, lim: Limits, ctx: string): ParsedFrames {
  const frames: Frame[] = []
  const counts: PageCounts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 }
  let out = 0
  let prev = -1 // pageIndex of the previous keyed frame of this batch (SPEC.md §5.2)
  // Derived headers are rebuilt into blocks owned by this batch: every frame gets its own 8 bytes, so a
  // frame's hdr stays valid however long the caller keeps it (frames are all parsed before the batch is out).
  let arena = EMPTY
  let arenaPos = 0
  while (c.remaining > 0) {
    const frameAt = c.offset
    const kind = c.u8('frame kind')
    if (kind === FrameKind.VERBATIM) {
      const lenAt = c.offset
      const n = c.varint('verbatim length')
      if (n > lim.maxVerbatimBytes)
        throw streamError(
          'LIMIT',
          `${ctx}: verbatim frame of ${n} bytes (max ${lim.maxVerbatimBytes})`,
          lenAt,
        )
      frames.push({ kind: 'verbatim', bytes: c.bytes(n, 'verbatim bytes') })
      out += n
      continue
    }
    if (kind === FrameKind.RESET) {
      frames.push({ kind: 'reset' })
      continue
    }
    if (kind < FrameKind.PAGE_FULL || kind > FrameKind.INVALIDATE)
      c.fail(`unknown frame kind 0x${kind.toString(16).padStart(2, '0')}`, frameAt)
    const keyAt = c.offset
    const blockId = c.varint('blockId')
    const indexAt = c.offset
    const delta = unzigzag(c.varint('pageIndex delta'))
    const pageIndex = prev + 1 + delta
    if (blockId > MAX_BLOCK_ID)
      throw streamError('LIMIT', `${ctx}: page key (${blockId}, ${pageIndex}) out of range`, keyAt)
    if (pageIndex < 0) c.fail(`pageIndex delta ${delta} from ${prev + 1} goes below 0`, indexAt)
    if (pageIndex > MAX_PAGE_INDEX)
      throw streamError('LIMIT', `${ctx}: page key (${blockId}, ${pageIndex}) out of range`, keyAt)
    prev = pageIndex
    if (kind === FrameKind.INVALIDATE) {
      frames.push({ kind: 'invalidate', blockId, pageIndex })
      continue
    }
    const formAt = c.offset
    const form = c.varint('hdr form')
    let hdr: Uint8Array
    if (form === HDR_RAW) {
      const lenAt = c.offset
      const len = c.varint('hdr length')
      if (len > lim.maxHdrBytes)
        throw streamError(
          'LIMIT',
          `${ctx}: page record header of ${len} bytes (max ${lim.maxHdrBytes})`,
          lenAt,
        )
      hdr = c.bytes(len, 'hdr')
      const flags = derivableFlags(hdr, pageIndex, pageSize)
      if (flags >= 0)
        c.fail(`raw page record header has the derived form (must be written as h = ${flags + 1})`, formAt)
    } else {
      const flags = form - 1
      if (flags >= pageSize) c.fail(`derived header flags ${flags} not below pageSize ${pageSize}`, formAt)
      if (arenaPos + DERIVED_HDR_BYTES > arena.length) {
        // At most one derived header per 4 remaining wire bytes (kind, blockId, pageIndex, h).
        arena = new Uint8Array(Math.min(MAX_HDR_ARENA, DERIVED_HDR_BYTES * (1 + (c.remaining >> 2))))
        arenaPos = 0
      }
      writeDerivedHdr(arena, arenaPos, pageIndex, pageSize, flags)
      hdr = arena.subarray(arenaPos, arenaPos + DERIVED_HDR_BYTES)
      arenaPos += DERIVED_HDR_BYTES
    }
    const hdrLen = hdr.length
    switch (kind) {
      case FrameKind.PAGE_FULL:
        frames.push({ kind: 'full', blockId, pageIndex, hdr, page: c.bytes(pageSize, 'page') })
        out += hdrLen + pageSize
        counts.full++
        break
      case FrameKind.PAGE_DELTA: {
        const lenAt = c.offset
        const n = c.varint('delta length')
        if (n > pageSize)
          throw streamError('LIMIT', `${ctx}: delta of ${n} bytes (max pageSize ${pageSize})`, lenAt)
        frames.push({ kind: 'delta', blockId, pageIndex, hdr, delta: c.bytes(n, 'delta') })
        out += hdrLen + pageSize
        counts.delta++
        break
      }
      case FrameKind.PAGE_SAME:
        frames.push({ kind: 'same', blockId, pageIndex, hdr })
        out += hdrLen + pageSize
        counts.same++
        break
      case FrameKind.PAGE_ZERO:
        frames.push({ kind: 'zero', blockId, pageIndex, hdr, fill: c.u8('fill') })
        out += hdrLen + 1
        counts.zero++
        break
      default: {
        // PAGE_FOREIGN
        const lenAt = c.offset
        const n = c.varint('foreign body length')
        if (n > pageSize + 3)
          throw streamError('LIMIT', `${ctx}: foreign body of ${n} bytes (max pageSize + 3)`, lenAt)
        const body = c.bytes(n, 'foreign body')
        const why = foreignBodyProblem(body, pageSize)
        if (why !== undefined) c.fail(`foreign XBZRLE body: ${why}`, lenAt)
        frames.push({ kind: 'foreign', blockId, pageIndex, hdr, body })
        out += hdrLen + n
        counts.foreign++
      }
    }
  }
  return { frames, counts, out }
}

/**
 * The consumer's check of a batch's output, before releasing it: `crcOfProduced`/`lengthProduced` describe the
 * bytes it decoded. Throws ProtocolError('OUTPUT_MISMATCH').
 */
export function verifyBatchOutput(batch: Batch, crcOfProduced: number, lengthProduced: number): void {
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
