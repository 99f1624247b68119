import { ProtocolError, streamError } from '../errors.js'
import { type Limits, RecordTag } from '../v1/constants.js'
import { type ParsedFrames, parseEnd, parseFrames, resolveLimits } from '../v1/reader.js'
import type { Frame, PageCounts } from '../v1/types.js'
import { readU32le } from '../wire/byte-writer.js'
import { ChunkQueue } from '../wire/chunk-queue.js'
import { crc32 } from '../wire/crc32.js'
import { Cursor } from '../wire/cursor.js'
import { MAGIC_LENGTH } from '../wire/magic.js'
import { readPrelude, unsupportedVersion } from '../wire/prelude.js'
import { CODEC_PACKAGES, type Compressor, findCompressor } from './codecs.js'
import { PayloadEncoding, VERSION } from './constants.js'
import { readHeaderBodyV2 } from './header.js'
import type { Batch, FrameReaderOptions, ReaderItem } from './types.js'

const ENVELOPE_HEAD = 5
const ENVELOPE_TAIL = 4

class BatchV2 implements Batch {
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
 * Reads a v2 xbzrle stream from chunks split anywhere; same pull API as v1's reader. This reader checks the v2
 * records (limits, CRC as stored, sequence, payload encoding, declared sizes) and decompresses each batch within
 * the declared, limit-checked size; the frames are then parsed by v1's frame parser (`parseFrames`, the one v1's
 * reader uses) straight from the record or the decompressed bytes, so the v1 frame rules apply to the byte, with
 * no copy and no second CRC. END is checked by v1's `parseEnd`. Byte fields of frames are views into the
 * batch's (decompressed) frame bytes.
 */
export class FrameReader {
  private readonly q = new ChunkQueue()
  private readonly limits: Limits
  private readonly maxVersion: number
  private state: 'prelude' | 'records' | 'done' = 'prelude'
  private error: ProtocolError | undefined
  private pageSize = 0
  private totalOut = 0
  private readonly pages: PageCounts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 }
  private compressor: Compressor | undefined
  private codecName = 'none'
  private seq = 0
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
      if (e instanceof ProtocolError) {
        this.error = e
        throw e
      }
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
        // The stored body is the v1 body plus the payload-encoding byte (a compressed one is never longer).
        if (len > this.limits.maxBatchWireBytes + 1)
          throw streamError(
            'LIMIT',
            `batch ${this.seq} is ${len} bytes (max ${this.limits.maxBatchWireBytes + 1})`,
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
    if (readU32le(rec, bodyEnd) !== crc32(rec.subarray(0, bodyEnd))) {
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
    const max = Math.min(this.maxVersion, VERSION)
    if (pre.version < 1 || pre.version > max) throw unsupportedVersion(pre.version, max)
    if (pre.version !== VERSION)
      throw streamError(
        'UNSUPPORTED_VERSION',
        `format version ${pre.version} given to the version ${VERSION} reader (FrameReader of @xbzrle/protocol reads every version)`,
        MAGIC_LENGTH,
        'use the version-dispatching reader',
      )
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
    const header = readHeaderBodyV2(new Cursor(rec, bodyStart, bodyEnd, q.offset, 'header'))
    const codec = header.compression!.codec
    if (codec !== 'none') {
      this.compressor = findCompressor(codec)
      if (this.compressor === undefined) {
        const pkg = CODEC_PACKAGES[codec]!
        throw streamError(
          'COMPRESSOR_UNAVAILABLE',
          `compressed with ${codec} but ${pkg} is not installed`,
          -1,
          `npm install ${pkg}`,
        )
      }
    }
    this.codecName = codec
    this.pageSize = header.pageSize
    q.consume(total)
    this.state = 'records'
    return { type: 'header', version: VERSION, header }
  }

  private readBatch(rec: Uint8Array, bodyEnd: number, offset: number): ReaderItem {
    const lim = this.limits
    const ctx = `batch ${this.seq}`
    const c: Cursor = new Cursor(rec, ENVELOPE_HEAD, bodyEnd, offset, ctx)
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
    const headEnd = c.pos // seq, outputLength, outputCrc: the head of the v1 body
    const encAt = c.offset
    const enc = c.u8('payload encoding')
    let frames: Uint8Array | undefined // the decompressed frames (compressed batches)
    if (enc === PayloadEncoding.PLAIN) {
      // parsed in place below
    } else if (enc === PayloadEncoding.COMPRESSED) {
      if (this.compressor === undefined)
        c.fail('compressed batch in a stream whose header declares no compressor', encAt)
      const lenAt = c.offset
      const framesLength = c.varint('decompressed frames length')
      // The bomb rule: the declared size is bounded by the batch limit before a byte is decompressed.
      const max = lim.maxBatchWireBytes - (headEnd - ENVELOPE_HEAD)
      if (framesLength > max)
        throw streamError(
          'LIMIT',
          `${ctx}: declared decompressed frames of ${framesLength} bytes (max ${max})`,
          lenAt,
        )
      const payloadAt = c.offset
      try {
        const d = this.compressor.decompress(rec.subarray(c.pos, bodyEnd), framesLength)
        // Frames are plain Uint8Array views (a Buffer's slice() would not copy), as v1's reader gives.
        frames = new Uint8Array(d.buffer, d.byteOffset, d.length)
      } catch (e) {
        throw streamError(
          'MALFORMED',
          `${ctx}: ${this.codecName} payload does not decompress to the declared ${framesLength} bytes (${e instanceof Error ? e.message : String(e)})`,
          payloadAt,
        )
      }
    } else {
      c.fail(`unknown payload encoding ${enc}`, encAt)
    }
    const compressed = enc === PayloadEncoding.COMPRESSED
    let parsed: ParsedFrames
    if (!compressed) {
      // Plain: the frames are parsed in place, at their stream offsets, as plain Uint8Array views even when the
      // input chunks are Buffers (whose slice() would not copy), as this reader always gave.
      const buf =
        Object.getPrototypeOf(rec) === Uint8Array.prototype
          ? rec
          : new Uint8Array(rec.buffer, rec.byteOffset, rec.length)
      parsed = parseFrames(new Cursor(buf, c.pos, bodyEnd, offset, ctx), this.pageSize, lim, ctx)
    } else {
      // Errors inside decompressed frames are reported at the payload encoding byte with the frame position.
      try {
        parsed = parseFrames(new Cursor(frames!, 0, frames!.length, 0, ctx), this.pageSize, lim, ctx)
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e
        const m = /^xbzrle stream: ([\s\S]*) at offset (\d+) \(([\s\S]*)\)$/.exec(e.message)
        if (m === null) throw e
        throw streamError(e.code, `${m[1]!} (byte ${e.offset} of the decompressed frames)`, encAt, m[3])
      }
    }
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
    return {
      type: 'batch',
      batch: new BatchV2(seq, outputLength, outputCrc, offset, compressed, parsed.frames),
    }
  }

  private readEnd(rec: Uint8Array, bodyEnd: number, offset: number): ReaderItem {
    // END has the same layout and rules in v1 and v2: v1's parser checks it and the totals.
    const end = parseEnd(rec, bodyEnd, offset, this.totalOut, this.seq, this.pages)
    this.state = 'done'
    return { type: 'end', end }
  }
}
