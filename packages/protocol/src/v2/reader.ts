import { ProtocolError, streamError } from '../errors.js'
import { type Limits, RecordTag } from '../v1/constants.js'
import { resolveLimits, FrameReader as V1FrameReader } from '../v1/reader.js'
import type { EndFrame, Frame, Batch as V1Batch } from '../v1/types.js'
import { FrameWriter as V1FrameWriter } from '../v1/writer.js'
import { readU32le } from '../wire/byte-writer.js'
import { ChunkQueue } from '../wire/chunk-queue.js'
import { crc32 } from '../wire/crc32.js'
import { Cursor } from '../wire/cursor.js'
import { MAGIC_LENGTH } from '../wire/magic.js'
import { readPrelude, unsupportedVersion } from '../wire/prelude.js'
import { CODEC_PACKAGES, type Compressor, findCompressor } from './codecs.js'
import { PayloadEncoding, VERSION } from './constants.js'
import { readHeaderBodyV2 } from './header.js'
import type { Batch, FrameReaderOptions, ReaderItem, StreamHeader } from './types.js'

const ENVELOPE_HEAD = 5
const ENVELOPE_TAIL = 4

class BatchV2 implements Batch {
  constructor(
    private readonly inner: V1Batch,
    readonly offset: number,
    readonly compressed: boolean,
  ) {}
  get seq(): number {
    return this.inner.seq
  }
  get outputLength(): number {
    return this.inner.outputLength
  }
  get outputCrc(): number {
    return this.inner.outputCrc
  }
  get frameCount(): number {
    return this.inner.frameCount
  }
  frames(): Iterable<Frame> {
    return this.inner.frames()
  }
}

/**
 * Where the bytes the inner v1 reader is working on came from, to report its errors at stream offsets:
 * `[synthStart, synthStart + split)` ↦ `realStart + …`; beyond `split`, plain: shifted by `shift`, compressed:
 * inside the decompressed frames (reported at the payload with the position in the frames).
 */
interface Origin {
  synthStart: number
  realStart: number
  split: number
  shift: number
  compressed: boolean
}

/**
 * Reads a v2 xbzrle stream from chunks split anywhere; same pull API as v1's reader. This reader checks the v2
 * records (limits, CRC as stored, sequence, payload encoding, declared sizes) and decompresses each batch within
 * the declared, limit-checked size; the frames are then parsed by v1's reader, fed the batch in v1 form, so the
 * v1 frame rules apply to the byte. Byte fields of frames are views into the batch's (decompressed) frame bytes.
 */
export class FrameReader {
  private readonly q = new ChunkQueue()
  private readonly limits: Limits
  private readonly maxVersion: number
  private state: 'prelude' | 'records' | 'done' = 'prelude'
  private error: ProtocolError | undefined
  private inner: V1FrameReader | undefined
  /** Bytes pushed into the inner reader so far (its stream offset). */
  private synth = 0
  private origin: Origin | undefined
  private compressor: Compressor | undefined
  private codecName = 'none'
  private seq = 0
  private pendingTag = -1
  private pendingLen = 0

  constructor(private readonly opts: FrameReaderOptions = {}) {
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
    const item = tag === RecordTag.BATCH ? this.readBatch(rec, bodyEnd, offset) : this.readEnd(rec, offset)
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
    this.startInner(header)
    q.consume(total)
    this.state = 'records'
    return { type: 'header', version: VERSION, header }
  }

  /** The inner v1 reader gets a v1 prelude and header with the same parameters (written by v1's writer). */
  private startInner(header: StreamHeader): void {
    const inner = new V1FrameReader({ limits: this.opts.limits })
    const { compression: _, ...v1Header } = header
    new V1FrameWriter({ onChunk: (c) => this.feed(inner, c) }).header(v1Header)
    const item = inner.next()
    if (item?.type !== 'header') throw new Error('xbzrle v2 reader: inner v1 reader rejected the header')
    this.inner = inner
  }

  private feed(inner: V1FrameReader, chunk: Uint8Array): void {
    inner.push(chunk)
    this.synth += chunk.length
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
    c.u32le('output CRC')
    if (outputLength > lim.maxBatchOutputBytes)
      throw streamError(
        'LIMIT',
        `${ctx} decodes to ${outputLength} bytes (max ${lim.maxBatchOutputBytes})`,
        outAt,
      )
    const headEnd = c.pos // seq, outputLength, outputCrc: the head of the v1 body
    const encAt = c.offset
    const enc = c.u8('payload encoding')
    let frames: Uint8Array
    if (enc === PayloadEncoding.PLAIN) {
      frames = rec.subarray(c.pos, bodyEnd)
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
        frames = this.compressor.decompress(rec.subarray(c.pos, bodyEnd), framesLength)
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
    // The batch in v1 form: 42 len seq outputLength outputCrc frames crc, for v1's frame parser.
    const headLen = headEnd - ENVELOPE_HEAD
    const v1Len = headLen + frames.length
    const synth = new Uint8Array(ENVELOPE_HEAD + v1Len + ENVELOPE_TAIL)
    synth[0] = RecordTag.BATCH
    writeU32le(synth, 1, v1Len)
    synth.set(rec.subarray(ENVELOPE_HEAD, headEnd), ENVELOPE_HEAD)
    synth.set(frames, headEnd)
    writeU32le(synth, ENVELOPE_HEAD + v1Len, crc32(synth.subarray(0, ENVELOPE_HEAD + v1Len)))
    const compressed = enc === PayloadEncoding.COMPRESSED
    const shift = compressed ? 0 : 1
    const item = this.inner1(synth, { realStart: offset, split: headEnd, shift, compressed })
    if (item?.type !== 'batch') throw new Error('xbzrle v2 reader: inner v1 reader returned no batch')
    this.seq++
    return { type: 'batch', batch: new BatchV2(item.batch, offset, compressed) }
  }

  private readEnd(rec: Uint8Array, offset: number): ReaderItem {
    // END has the same layout and CRC rule in v1 and v2: v1's reader checks it (and the totals) as it is.
    const item = this.inner1(rec, { realStart: offset, split: rec.length, shift: 0, compressed: false })
    if (item?.type !== 'end') throw new Error('xbzrle v2 reader: inner v1 reader returned no END')
    this.state = 'done'
    const end: EndFrame = { ...item.end, offset }
    return { type: 'end', end }
  }

  /** Feeds one whole v1 record to the inner reader and returns its item, errors mapped to stream offsets. */
  private inner1(record: Uint8Array, o: Omit<Origin, 'synthStart'>): ReturnType<V1FrameReader['next']> {
    const inner = this.inner!
    this.origin = { ...o, synthStart: this.synth }
    try {
      this.feed(inner, record)
      return inner.next()
    } catch (e) {
      if (e instanceof ProtocolError) throw this.mapError(e)
      throw e
    }
  }

  private mapError(e: ProtocolError): ProtocolError {
    const o = this.origin!
    const m = /^xbzrle stream: ([\s\S]*) at offset (\d+) \(([\s\S]*)\)$/.exec(e.message)
    if (m === null || e.offset < o.synthStart) return e
    const rel = e.offset - o.synthStart
    let what = m[1]!
    let at: number
    if (rel < o.split) at = o.realStart + rel
    else if (!o.compressed) at = o.realStart + rel + o.shift
    else {
      what = `${what} (byte ${rel - o.split} of the decompressed frames)`
      at = o.realStart + o.split // the payload encoding byte of the batch
    }
    return streamError(e.code, what, at, m[3])
  }
}

function writeU32le(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff
  b[at + 1] = (v >>> 8) & 0xff
  b[at + 2] = (v >>> 16) & 0xff
  b[at + 3] = (v >>> 24) & 0xff
}
