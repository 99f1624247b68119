import { LIMITS, RecordTag } from '../v1/constants.js'
import type { EndStats } from '../v1/types.js'
import { FrameWriter as V1FrameWriter } from '../v1/writer.js'
import { ByteWriter, readU32le } from '../wire/byte-writer.js'
import { crc32, crc32Combine, crc32Range } from '../wire/crc32.js'
import { MAGIC } from '../wire/magic.js'
import { readVarint, varintLength, writeVarint } from '../wire/varint.js'
import { CODEC_LEVELS, type Compressor, getCompressor, isCompressorAvailable } from './codecs.js'
import { DEFAULT_CODEC_ORDER, PayloadEncoding, VERSION } from './constants.js'
import { validateHeaderV2, writeHeaderBodyV2 } from './header.js'
import type { Compression, FrameWriterOptions, StreamHeader } from './types.js'

/** The compressor a header asks for, with its level filled in (default codec: see DEFAULT_CODEC_ORDER). */
export function resolveCompression(c: Compression | undefined): Required<Compression> {
  const codec = c?.codec ?? DEFAULT_CODEC_ORDER.find(isCompressorAvailable) ?? 'deflate'
  const range = CODEC_LEVELS[codec]
  return { codec, level: c?.level ?? range?.default ?? 0 }
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
 * Writes a v2 xbzrle stream: v1's frames (written by v1's own FrameWriter, so every frame layout is v1's to the
 * byte), batch by batch passed through the header's compressor and kept compressed only when that is smaller.
 * Same API as v1's FrameWriter; `header.compression` picks the compressor. No allocation per frame; one output
 * array (plus the compressor's) per batch.
 */
export class FrameWriter {
  private readonly inner: V1FrameWriter
  private readonly onChunk: (chunk: Uint8Array) => void
  private compression: Required<Compression> | undefined
  private compressor: Compressor | undefined
  private pending: StreamHeader | undefined
  private written = 0
  readonly batchStats: WriterBatchStats = { plain: 0, compressed: 0, frameBytes: 0, payloadBytes: 0 }

  constructor(opts: FrameWriterOptions) {
    if (opts.version !== undefined && opts.version !== VERSION)
      throw new RangeError(`this writer writes format version ${VERSION}, not ${opts.version}`)
    this.onChunk = opts.onChunk
    // The v1 records are re-encoded at once (fromV1), so the inner writer lends views instead of copies.
    this.inner = new V1FrameWriter({
      onChunk: (c) => this.fromV1(c),
      batchBytes: opts.batchBytes,
      chunkView: true,
    })
  }

  /** Wire bytes handed to `onChunk` so far. */
  get bytesWritten(): number {
    return this.written
  }

  /** The compressor in use (after `header()`). */
  get compressionInUse(): Required<Compression> | undefined {
    return this.compression
  }

  /**
   * Writes the prelude and the header. Throws RangeError on an invalid header, CompressorUnavailableError when
   * `header.compression` names a compressor whose package is not installed.
   */
  header(h: StreamHeader): void {
    const compression = resolveCompression(h.compression)
    validateHeaderV2(h, compression)
    const compressor = compression.codec === 'none' ? undefined : getCompressor(compression.codec)
    this.pending = h
    this.compression = compression
    this.compressor = compressor
    this.inner.header(h) // validates and checks the call order; its v1 header record comes back to fromV1
  }

  verbatim(bytes: Uint8Array): void {
    this.inner.verbatim(bytes)
  }
  pageFull(blockId: number, pageIndex: number, hdr: Uint8Array, page: Uint8Array): void {
    this.inner.pageFull(blockId, pageIndex, hdr, page)
  }
  /** `newPage` (the page after applying `delta`) only feeds the output CRC; it is not written. */
  pageDelta(
    blockId: number,
    pageIndex: number,
    hdr: Uint8Array,
    delta: Uint8Array,
    newPage: Uint8Array,
  ): void {
    this.inner.pageDelta(blockId, pageIndex, hdr, delta, newPage)
  }
  /** `page` (the cached page) only feeds the output CRC; it is not written. */
  pageSame(blockId: number, pageIndex: number, hdr: Uint8Array, page: Uint8Array): void {
    this.inner.pageSame(blockId, pageIndex, hdr, page)
  }
  pageZero(blockId: number, pageIndex: number, hdr: Uint8Array, fill: number): void {
    this.inner.pageZero(blockId, pageIndex, hdr, fill)
  }
  /** `body` is QEMU's XBZRLE record body: `01 | be16 n | n bytes`, n ≤ pageSize. */
  pageForeign(blockId: number, pageIndex: number, hdr: Uint8Array, body: Uint8Array): void {
    this.inner.pageForeign(blockId, pageIndex, hdr, body)
  }
  invalidate(blockId: number, pageIndex: number): void {
    this.inner.invalidate(blockId, pageIndex)
  }
  reset(): void {
    this.inner.reset()
  }
  /** Closes the current batch (if it has frames) and hands it out now. */
  flush(): void {
    this.inner.flush()
  }
  /** Flushes, writes the END record with the totals of everything written, and hands it out. */
  end(stats?: EndStats): void {
    this.inner.end(stats)
  }

  // ---- internals ----

  /** Every chunk of the inner v1 writer is exactly one record (or the prelude and header). */
  private fromV1(chunk: Uint8Array): void {
    const tag = chunk[0]
    if (tag === MAGIC[0]) this.emit(this.headerRecord())
    else if (tag === RecordTag.BATCH) this.emit(this.batchRecord(chunk))
    else this.emit(chunk.slice()) // END: the same layout and CRC rule in v1 and v2 (copied: chunk is a view)
  }

  private headerRecord(): Uint8Array {
    const w = new ByteWriter(256)
    w.bytes(MAGIC)
    w.varint(VERSION)
    w.u8(RecordTag.HEADER)
    const lenAt = w.reserve(4)
    const bodyStart = w.pos
    writeHeaderBodyV2(w, this.pending!, this.compression!)
    const bodyLen = w.pos - bodyStart
    if (bodyLen > LIMITS.maxHeaderBytes)
      throw new RangeError(`header is ${bodyLen} bytes (max ${LIMITS.maxHeaderBytes})`)
    w.patchU32le(lenAt, bodyLen)
    w.u32le(crc32(w.view(0, w.pos)))
    this.pending = undefined
    return w.take()
  }

  /**
   * v1 batch record `42 len seq outLen outCrc frames crc` → v2 `42 len' seq outLen outCrc enc payload crc'`,
   * enc = 1 (payload = framesLength:varint ‖ compressed) when that is shorter than enc = 0 (payload = frames).
   */
  private batchRecord(v1: Uint8Array): Uint8Array {
    const bodyEnd = 5 + readU32le(v1, 1)
    const seq = readVarint(v1, 5, bodyEnd)
    const headEnd = 5 + (seq.ok ? seq.length : 0) + 8 // seq, outputLength, outputCrc: copied unchanged
    const frames = v1.subarray(headEnd, bodyEnd)
    let packed: Uint8Array | undefined
    if (this.compressor !== undefined && frames.length > 0) {
      const z = this.compressor.compress(frames, this.compression!.level)
      if (varintLength(frames.length) + z.length < frames.length) packed = z
    }
    const payloadLen = packed ? varintLength(frames.length) + packed.length : frames.length
    const bodyLen = headEnd - 5 + 1 + payloadLen
    const out = new Uint8Array(5 + bodyLen + 4)
    out[0] = RecordTag.BATCH
    writeU32le(out, 1, bodyLen)
    out.set(v1.subarray(5, headEnd), 5)
    let at = headEnd
    if (packed) {
      out[at++] = PayloadEncoding.COMPRESSED
      at = writeVarint(out, at, frames.length)
      out.set(packed, at)
      this.batchStats.compressed++
    } else {
      out[at++] = PayloadEncoding.PLAIN
      out.set(frames, at)
      this.batchStats.plain++
    }
    this.batchStats.frameBytes += frames.length
    this.batchStats.payloadBytes += payloadLen
    let recordCrc: number
    if (packed) {
      recordCrc = crc32(out.subarray(0, 5 + bodyLen))
    } else {
      // Same frame bytes after a different head: CRC(h2 ‖ F) = CRC(h1 ‖ F) ^ shift(CRC(h1) ^ CRC(h2), |F|),
      // from the v1 record's CRC (just computed by v1's writer), without a second pass over the frames.
      const v1Crc = readU32le(v1, bodyEnd)
      const delta = crc32Range(v1, 0, headEnd) ^ crc32Range(out, 0, headEnd + 1)
      recordCrc = (crc32Combine(delta, 0, frames.length) ^ v1Crc) >>> 0
    }
    writeU32le(out, 5 + bodyLen, recordCrc)
    return out
  }

  private emit(chunk: Uint8Array): void {
    this.written += chunk.length
    this.onChunk(chunk)
  }
}

function writeU32le(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff
  b[at + 1] = (v >>> 8) & 0xff
  b[at + 2] = (v >>> 16) & 0xff
  b[at + 3] = (v >>> 24) & 0xff
}
