import { type CacheParameters, PageDeltaDecoder } from '@xbzrle/codec'
import {
  type Batch,
  crc32,
  describeNotXbzrle,
  type EndFrame,
  FrameReader,
  ProtocolError,
  type StreamHeader,
  verifyBatchOutput,
  verifyEndTotals,
} from '@xbzrle/protocol'

export interface DecoderOptions {
  /** Refuse streams whose header asks for a bigger cache than this (default 4 GiB). */
  maxCacheBytes?: number
}

export interface DecoderStats {
  bytesIn: number
  bytesOut: number
  header?: StreamHeader
  version?: number
  end?: EndFrame
}

export const DEFAULT_MAX_DECODER_CACHE = 4 * 2 ** 30

/**
 * xbzrle stream in, original bytes out. Each batch is rebuilt into its own buffer and released to `onOutput`
 * only after its length and CRC match what the encoder recorded: a wrong byte is never written.
 */
export class XbzrleDecoder {
  private readonly reader: FrameReader
  private codec: PageDeltaDecoder | undefined
  private readonly s: DecoderStats = { bytesIn: 0, bytesOut: 0 }
  /** The first bytes, to name what a non-xbzrle input looks like. */
  private readonly head = new Uint8Array(16)
  private headLen = 0

  constructor(
    private readonly onOutput: (chunk: Uint8Array) => void,
    private readonly options: DecoderOptions = {},
  ) {
    this.reader = new FrameReader()
  }

  get stats(): DecoderStats {
    return { ...this.s }
  }

  push(chunk: Uint8Array): void {
    if (this.headLen < this.head.length) {
      const n = Math.min(chunk.length, this.head.length - this.headLen)
      this.head.set(chunk.subarray(0, n), this.headLen)
      this.headLen += n
    }
    this.s.bytesIn += chunk.length
    try {
      this.reader.push(chunk)
    } catch (e) {
      throw this.explain(e)
    }
    this.drain()
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

  /** End of input: throws if the stream was truncated. */
  finish(): void {
    try {
      this.reader.finish()
    } catch (e) {
      throw this.explain(e)
    }
    this.drain()
    if (!this.s.end) {
      throw new ProtocolError(
        'TRUNCATED',
        'xbzrle stream: input ended before the END frame (incomplete input)',
      )
    }
  }

  private drain(): void {
    for (let item = this.reader.next(); item; item = this.reader.next()) {
      if (item.type === 'header') this.begin(item.header, item.version)
      else if (item.type === 'batch') this.batch(item.batch)
      else {
        verifyEndTotals(item.end, this.s.bytesOut)
        this.s.end = item.end
      }
    }
  }

  private begin(h: StreamHeader, version: number): void {
    const max = this.options.maxCacheBytes ?? DEFAULT_MAX_DECODER_CACHE
    if (h.cache.cacheBytes > max) {
      throw new ProtocolError(
        'LIMIT',
        `xbzrle stream: needs a ${h.cache.cacheBytes}-byte cache, more than the allowed ${max} (raise --max-cache)`,
      )
    }
    const { cacheBytes, ways, policy } = h.cache
    try {
      this.codec = new PageDeltaDecoder({
        cache: { pageSize: h.pageSize, cacheBytes, ways, policy: policy as CacheParameters['policy'] },
      })
    } catch (e) {
      // The codec validates the parameters (unknown policy, impossible geometry) with a RangeError.
      throw new ProtocolError(
        'UNSUPPORTED_VERSION',
        `xbzrle stream: cannot build the cache it needs: ${(e as Error).message} (upgrade xbzrle to read this stream)`,
      )
    }
    this.s.header = h
    this.s.version = version
  }

  private batch(batch: Batch): void {
    const codec = this.codec!
    const out = new Uint8Array(batch.outputLength)
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
    for (const f of batch.frames()) {
      switch (f.kind) {
        case 'verbatim':
          put(f.bytes)
          break
        case 'full':
          codec.full(f.blockId, f.pageIndex, f.page)
          put(f.hdr)
          put(f.page)
          break
        case 'delta':
          put(f.hdr)
          put(codec.delta(f.blockId, f.pageIndex, f.delta))
          break
        case 'same':
          put(f.hdr)
          put(codec.same(f.blockId, f.pageIndex))
          break
        case 'zero':
          codec.applyZero(f.blockId, f.pageIndex, f.fill)
          put(f.hdr)
          if (n >= out.length) throw tooLong()
          out[n++] = f.fill
          break
        case 'foreign':
          codec.applyForeignDelta(f.blockId, f.pageIndex, f.body.subarray(3))
          put(f.hdr)
          put(f.body)
          break
        case 'invalidate':
          codec.invalidate(f.blockId, f.pageIndex)
          break
        case 'reset':
          codec.reset()
          break
      }
    }
    verifyBatchOutput(batch, crc32(out), n)
    this.s.bytesOut += n
    this.onOutput(out)
  }
}
