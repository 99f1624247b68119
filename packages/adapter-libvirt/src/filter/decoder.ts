import {
  CACHE_POLICIES,
  type CacheParameters,
  isCachePolicy,
  PageDeltaDecoder,
  sameCacheParameters,
} from '@xbzrle/codec'
import {
  BASE_IMAGE_EXTENSION,
  type Batch,
  baseFingerprint,
  baseRequirementOf,
  crc32,
  describeNotXbzrle,
  type EndFrame,
  FrameReader,
  ProtocolError,
  type StreamHeader,
  verifyBatchOutput,
  verifyEndTotals,
} from '@xbzrle/protocol/stream'
import type { DecoderBase } from '../base/base-image.js'
import { baseError, missingBaseError, needsBase } from '../base/errors.js'
import {
  type PassCounters,
  PassDetector,
  type PassListener,
  PassRecorder,
  type PassStats,
} from './pass-stats.js'

export interface DecoderOptions {
  /** Refuse streams whose header asks for a bigger cache than this (default 4 GiB). */
  maxCacheBytes?: number
  /**
   * Told when a pass starts and ends, as the encoder's (see pass-stats.ts). The decoder finds the passes its
   * page keys prove (a page repeated within a pass): see docs/observability.md for how they compare with
   * the encoder's.
   */
  passListener?: PassListener
  /**
   * The seeded cache of the base image the stream was encoded against (prepareDecoderBase, issue #15). A stream
   * that names a base is refused without it; it must be the one prepared from this stream's header.
   */
  base?: DecoderBase
  /**
   * Rebuild the batches in buffers the decoder keeps instead of a fresh one per batch (a fresh buffer costs its
   * page faults on every output byte). Callback mode: one buffer, and `onOutput` gets a view of it that is valid
   * only until it returns (for a caller that writes it out synchronously). Pull mode: two buffers in turn, so the
   * output `nextOutput()` returned stays valid until the call after next (for a caller that writes one batch
   * out while the next is decoded: write-behind).
   */
  reuseOutput?: boolean
}

export interface DecoderStats {
  bytesIn: number
  bytesOut: number
  header?: StreamHeader
  version?: number
  end?: EndFrame
  /** The pass in progress (1-based); the last pass once the stream ended. */
  pass: number
}

/**
 * Pass detection tracks at least this many pages (4 bytes of stamps each: 16 MiB), more when the stream's
 * cache is bigger (one stamp per cache page): a bound on what a stream's page keys can make the decoder allocate.
 */
const MIN_TRACKED_PAGES = 1 << 22

export const DEFAULT_MAX_DECODER_CACHE = 4 * 2 ** 30

/** Cache policies this decoder can mirror (the codec's). Any other is a newer xbzrle's. */

/** An uninitialised array (no zero fill). */
function rawBytes(n: number): Uint8Array {
  const raw = Buffer.allocUnsafeSlow(n)
  return new Uint8Array(raw.buffer, raw.byteOffset, n)
}

function formatBytes(n: number): string {
  for (const [unit, size] of [
    ['G', 2 ** 30],
    ['M', 2 ** 20],
    ['K', 2 ** 10],
  ] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}iB`
  }
  return `${n}-byte`
}

/** The smallest power-of-two size ≥ n, as a --max-cache value (e.g. 8G). */
function suggestSize(n: number): string {
  let v = 2 ** 20
  while (v < n) v *= 2
  return v >= 2 ** 30 ? `${v / 2 ** 30}G` : `${v / 2 ** 20}M`
}

/**
 * xbzrle stream in, original bytes out. Each batch is rebuilt into its own buffer and released only after its
 * length and CRC match what the encoder recorded: a wrong byte is never written.
 *
 * Two ways to use it:
 * - callback: `new XbzrleDecoder(onOutput)`, then `push(chunk)` … `finish()`; every verified batch of a chunk
 *   goes to `onOutput` before `push` returns (fine when `onOutput` consumes synchronously, e.g. a hash);
 * - pull: `new XbzrleDecoder(undefined, options)`, then after each `push(chunk)` (and after `end()`) call
 *   `nextOutput()` until it returns undefined; each call decodes at most ONE batch (≤ 4 MiB of output, SPEC §7),
 *   so the caller decides when the next batch is built. A stream of 4-byte 'same' frames expands a thousand
 *   times; pulling keeps memory at the cache plus one batch whatever the amplification. `finish()` at the end.
 */
export class XbzrleDecoder {
  private readonly reader: FrameReader
  private codec: PageDeltaDecoder | undefined
  private readonly s: Omit<DecoderStats, 'pass'> = { bytesIn: 0, bytesOut: 0 }
  /** The first bytes, to name what a non-xbzrle input looks like. */
  private readonly head = new Uint8Array(16)
  private headLen = 0
  private ended = false
  private readerFinished = false
  /** Pass detection from the page keys (made with the header, which sizes its budget). */
  private detector = new PassDetector(true, MIN_TRACKED_PAGES)
  private readonly recorder: PassRecorder
  /** Page frames by kind (cumulative); `other` = INVALIDATE frames (pages the encoder did not model). */
  private full = 0
  private deltas = 0
  private same = 0
  private zero = 0
  private foreign = 0
  private other = 0
  /** The batch being decoded had a page frame already. */
  private batchHasPage = false
  /** The seeded cache of the stream's base image (options.base, or setBase before the header). */
  private base: DecoderBase | undefined
  /** The reused output buffers of `reuseOutput` (callback mode uses the first), and the one to fill next. */
  private readonly scratch: Uint8Array[] = [new Uint8Array(0), new Uint8Array(0)]
  private nextScratch = 0

  constructor(
    private readonly onOutput?: ((chunk: Uint8Array) => void) | undefined,
    private readonly options: DecoderOptions = {},
  ) {
    // One decompression buffer for every batch: batch() is done with a batch's frames before the next is read.
    this.reader = new FrameReader({ acceptCritical: [BASE_IMAGE_EXTENSION], reuseBatchBuffer: true })
    this.recorder = new PassRecorder(options.passListener)
    this.base = options.base
  }

  /**
   * Gives the seeded base cache after construction (a pipeline that learns the stream's base only from its
   * header: BaseGate). Must come before the header reaches this decoder.
   */
  setBase(base: DecoderBase): void {
    if (this.s.header) throw new Error('XbzrleDecoder.setBase after the stream header')
    this.base = base
  }

  get stats(): DecoderStats {
    return { ...this.s, pass: this.recorder.currentPass }
  }

  /** Finished passes, in order (the last one once the END frame was read). */
  get passes(): readonly PassStats[] {
    return this.recorder.passes
  }

  /** The pass in progress so far. */
  currentPass(): PassStats {
    return this.recorder.current(this.passCounters())
  }

  /**
   * Cumulative counters as the pass statistics see them: bytesIn = xbzrle bytes read, bytesOut = QEMU bytes
   * released. Cache hits and misses are the decoder cache's, which mirrors the encoder's lookups exactly (a
   * page sent whole after its delta overflowed is a hit, as on the encoder).
   */
  passCounters(): PassCounters {
    return this.countersAt(this.s.bytesIn, this.s.bytesOut)
  }

  private countersAt(bytesIn: number, bytesOut: number): PassCounters {
    const cache = this.codec?.stats
    return {
      bytesIn,
      bytesOut,
      full: this.full,
      delta: this.deltas,
      same: this.same,
      zero: this.zero,
      foreign: this.foreign,
      other: this.other,
      resent: this.detector.resent,
      cacheHits: cache?.hits ?? 0,
      cacheMisses: cache?.misses ?? 0,
    }
  }

  /**
   * A page frame, before it is applied: a key already sent in this pass proves that QEMU synced its dirty
   * bitmap before it, so the pass ends here. The encoder closes a batch at each of its boundaries, so when this
   * is the batch's first page the pass begins with the batch, in xbzrle and in QEMU bytes (exactly the
   * encoder's boundary, section headers before the page included); later in a batch (a boundary the encoder
   * found earlier, by cursor order), its QEMU bytes begin at this page and its xbzrle bytes with the batch.
   * `out` = QEMU bytes before this frame.
   */
  private page(blockId: number, pageIndex: number, batchOffset: number, out: number): void {
    const det = this.detector
    if (det.isRepeat(blockId, pageIndex)) {
      this.recorder.cut(this.countersAt(batchOffset, this.batchHasPage ? out : this.s.bytesOut))
      det.next()
    }
    det.mark(blockId, pageIndex)
    this.batchHasPage = true
  }

  /**
   * Feeds input. Callback mode: decodes and releases every complete batch before returning. Pull mode: only
   * stores the input; call `nextOutput()` until undefined.
   */
  push(chunk: Uint8Array): void {
    if (this.ended) throw new Error('XbzrleDecoder.push after end()/finish()')
    if (this.headLen < this.head.length) {
      const n = Math.min(chunk.length, this.head.length - this.headLen)
      this.head.set(chunk.subarray(0, n), this.headLen)
      this.headLen += n
    }
    this.s.bytesIn += chunk.length
    this.recorder.start()
    try {
      this.reader.push(chunk)
    } catch (e) {
      throw this.explain(e)
    }
    if (this.onOutput) this.drainToCallback()
  }

  /** A bad magic usually means the wrong kind of file: say which kind it looks like. */
  private explain(e: unknown): unknown {
    if (e instanceof ProtocolError && e.code === 'BAD_MAGIC') {
      return new ProtocolError(
        'BAD_MAGIC',
        `xbzrle decode: ${describeNotXbzrle(this.head.subarray(0, this.headLen))}`,
        0,
      )
    }
    return e
  }

  /** No more input will come (then pull the remaining outputs and call `finish()`). Idempotent. */
  end(): void {
    this.ended = true
  }

  /**
   * The next verified batch output, decoding at most one batch; undefined when the input pushed so far holds
   * no further complete batch (or the stream is complete). Throws on a corrupt stream.
   */
  nextOutput(): Uint8Array | undefined {
    for (;;) {
      let item: ReturnType<FrameReader['next']>
      try {
        item = this.reader.next()
      } catch (e) {
        throw this.explain(e)
      }
      if (!item) {
        // At the end of input the reader is told once everything it had was taken (it may still object).
        if (!this.ended || this.readerFinished) return undefined
        this.readerFinished = true
        try {
          this.reader.finish()
        } catch (e) {
          throw this.explain(e)
        }
        continue
      }
      if (item.type === 'header') this.begin(item.header, item.version)
      else if (item.type === 'batch') {
        const out = this.batch(item.batch)
        if (out.length > 0) {
          this.nextScratch ^= 1
          return out
        }
      } else {
        verifyEndTotals(item.end, this.s.bytesOut)
        this.s.end = item.end
        this.recorder.finish(this.passCounters())
      }
    }
  }

  /**
   * End of input: throws if the stream was truncated. Callback mode: releases the last batches first. Pull mode:
   * call it after `nextOutput()` returned undefined following `end()`.
   */
  finish(): void {
    this.end()
    if (this.onOutput) this.drainToCallback()
    else if (this.nextOutput() !== undefined) {
      throw new Error(
        'XbzrleDecoder.finish: verified output left unpulled (call nextOutput() until undefined)',
      )
    }
    if (!this.s.end) {
      throw new ProtocolError(
        'TRUNCATED',
        'xbzrle stream: input ended before the END frame (incomplete input)',
      )
    }
  }

  private drainToCallback(): void {
    for (let out = this.nextOutput(); out; out = this.nextOutput()) this.onOutput!(out)
  }

  private begin(h: StreamHeader, version: number): void {
    const max = this.options.maxCacheBytes ?? DEFAULT_MAX_DECODER_CACHE
    if (h.cache.cacheBytes > max) {
      throw new ProtocolError(
        'LIMIT',
        `xbzrle stream: needs a ${formatBytes(h.cache.cacheBytes)} cache, more than this decoder's limit of ` +
          `${formatBytes(max)}; raise the limit with --max-cache (e.g. --max-cache ${suggestSize(h.cache.cacheBytes)}) ` +
          'if you trust the stream',
      )
    }
    const { cacheBytes, ways, policy } = h.cache
    if (this.useBase(h)) {
      this.s.header = h
      this.s.version = version
      this.detector = new PassDetector(true, Math.max(MIN_TRACKED_PAGES, Math.ceil(cacheBytes / h.pageSize)))
      return
    }
    if (!isCachePolicy(policy)) {
      throw new ProtocolError(
        'UNSUPPORTED_VERSION',
        `xbzrle stream: unknown cache policy ${JSON.stringify(policy)} (this xbzrle knows ${CACHE_POLICIES.join(', ')}; upgrade xbzrle to read this stream)`,
      )
    }
    try {
      this.codec = new PageDeltaDecoder({
        cache: { pageSize: h.pageSize, cacheBytes, ways, policy: policy as CacheParameters['policy'] },
      })
    } catch (e) {
      // The codec validates the geometry (page size, ways, cache size) with a RangeError.
      throw new ProtocolError(
        'MALFORMED',
        `xbzrle stream: its cache parameters are impossible: ${(e as Error).message} (corrupted or foreign input)`,
      )
    }
    this.s.header = h
    this.s.version = version
    // One stamp per cache page at least: a stream cannot make pass detection outgrow its own cache by much.
    this.detector = new PassDetector(true, Math.max(MIN_TRACKED_PAGES, Math.ceil(cacheBytes / h.pageSize)))
  }
  /**
   * A stream that names a base image decodes only with that base's seeded cache (checked by fingerprint and
   * cache parameters: the seeding already verified the base's bytes). Returns whether the base cache is used.
   */
  private useBase(h: StreamHeader): boolean {
    const req = baseRequirementOf(h)
    const base = this.base
    if (!req) return false
    if (!base) throw missingBaseError(req)
    const p = base.target.parameters
    if (
      baseFingerprint(base.requirement) !== baseFingerprint(req) ||
      !sameCacheParameters(p, { pageSize: h.pageSize, ...h.cache })
    )
      throw baseError(`the base cache given was prepared for another stream${needsBase(req)}`)
    this.codec = base.target
    return true
  }

  /**
   * The array a batch is rebuilt in. Not zero-filled: every byte is written by the frames before the batch is
   * verified (n must equal the declared length), and an unverified batch is never released.
   */
  private outputBuffer(n: number): Uint8Array {
    if (!this.options.reuseOutput) return rawBytes(n)
    // Pull mode alternates (nextOutput turns to the other buffer once it returned one): the caller may still be
    // writing the previous batch's output.
    const i = this.onOutput ? 0 : this.nextScratch
    let b = this.scratch[i]!
    if (b.length < n) {
      b = rawBytes(Math.max(n, 2 * b.length))
      this.scratch[i] = b
    }
    return b.subarray(0, n)
  }

  private batch(batch: Batch): Uint8Array {
    const codec = this.codec!
    const out = this.outputBuffer(batch.outputLength)
    let n = 0
    // Frames never write past the declared length: a lying batch fails verification instead of overflowing.
    const tooLong = () =>
      new ProtocolError(
        'OUTPUT_MISMATCH',
        `xbzrle stream: batch ${batch.seq} decodes to more than its declared ${out.length} bytes at offset ${batch.offset} (corrupted input)`,
        batch.offset,
      )
    const put = (b: Uint8Array) => {
      if (n + b.length > out.length) throw tooLong()
      out.set(b, n)
      n += b.length
    }
    const at = batch.offset
    const base = this.s.bytesOut
    this.batchHasPage = false
    for (const f of batch.frames()) {
      switch (f.kind) {
        case 'verbatim':
          put(f.bytes)
          break
        case 'full':
          this.page(f.blockId, f.pageIndex, at, base + n)
          codec.full(f.blockId, f.pageIndex, f.page)
          put(f.hdr)
          put(f.page)
          this.full++
          break
        case 'delta':
          this.page(f.blockId, f.pageIndex, at, base + n)
          put(f.hdr)
          put(codec.delta(f.blockId, f.pageIndex, f.delta))
          this.deltas++
          break
        case 'same':
          this.page(f.blockId, f.pageIndex, at, base + n)
          put(f.hdr)
          put(codec.same(f.blockId, f.pageIndex))
          this.same++
          break
        case 'zero':
          this.page(f.blockId, f.pageIndex, at, base + n)
          codec.applyZero(f.blockId, f.pageIndex, f.fill)
          put(f.hdr)
          if (n >= out.length) throw tooLong()
          out[n++] = f.fill
          this.zero++
          break
        case 'foreign':
          this.page(f.blockId, f.pageIndex, at, base + n)
          codec.applyForeignDelta(f.blockId, f.pageIndex, f.body.subarray(3))
          put(f.hdr)
          put(f.body)
          this.foreign++
          break
        case 'invalidate':
          // The encoder's page it did not model (QEMU's compressed pages): its record follows as VERBATIM.
          this.page(f.blockId, f.pageIndex, at, base + n)
          codec.invalidate(f.blockId, f.pageIndex)
          this.other++
          break
        case 'reset':
          codec.reset()
          break
      }
    }
    verifyBatchOutput(batch, crc32(out), n)
    this.s.bytesOut += n
    return out
  }
}
