/**
 * The second-stage compressors of format v2 (SPEC.md §11.3). `deflate` is node:zlib and always available; `lz4`
 * (lz4-napi) and `zstd` (zstd-napi) are optional native dependencies loaded on first use.
 *
 * Payload formats (normative, independent of the library that produces them):
 * - lz4: one LZ4 *block* (lz4 block format, no frame header, no size prefix);
 * - zstd: exactly one Zstandard frame (RFC 8878), nothing after it;
 * - deflate: one raw DEFLATE stream (RFC 1951, no zlib/gzip wrapper), nothing after its final block.
 *
 * Decompression is always bounded: the caller passes the exact decompressed size (declared in the batch and
 * checked against the limits first); the decompressor gets an output buffer/limit of exactly that size and the
 * result length is verified.
 */
import { createRequire } from 'node:module'
import { deflateRawSync, inflateRawSync } from 'node:zlib'

export const CODEC_NAMES = ['none', 'lz4', 'zstd', 'deflate'] as const
export type CodecName = (typeof CODEC_NAMES)[number]

/** Wire ids of the compressors (the header's `codec` byte). */
export const CodecId = { none: 0, lz4: 1, zstd: 2, deflate: 3 } as const satisfies Record<CodecName, number>

/** Per-codec level range accepted by the writer, and the default level. Levels are informational on the wire. */
export const CODEC_LEVELS: Readonly<Record<CodecName, { min: number; max: number; default: number }>> = {
  none: { min: 0, max: 0, default: 0 },
  lz4: { min: 1, max: 1, default: 1 }, // lz4_flex (lz4-napi) has a single fast level
  zstd: { min: -7, max: 19, default: 1 },
  deflate: { min: 1, max: 9, default: 1 },
}

/** The npm package that provides each native codec. */
export const CODEC_PACKAGES: Readonly<Partial<Record<CodecName, string>>> = {
  lz4: 'lz4-napi',
  zstd: 'zstd-napi',
}

export interface Compressor {
  readonly name: Exclude<CodecName, 'none'>
  /** Compressed form of `data` (may be larger than `data`; the writer then stores the batch plain). */
  compress(data: Uint8Array, level: number): Uint8Array
  /**
   * The same bytes as `compress`, in a buffer the compressor reuses: valid only until its next call (for the
   * writer, which copies them out at once; a fresh output buffer per batch costs its page faults every time).
   */
  compressView?(data: Uint8Array, level: number): Uint8Array
  /**
   * Exactly `size` bytes decompressed from `data`, or an Error (corrupt input, wrong size, trailing bytes).
   * Never allocates more than `size` bytes of output (plus the codec's constant working memory).
   */
  decompress(data: Uint8Array, size: number): Uint8Array
  /**
   * `decompress` into `dst[0, size)` (dst.length >= size; the bytes after are not touched), returning that view.
   * For readers that reuse one buffer across batches (FrameReaderOptions.reuseBatchBuffer).
   */
  decompressInto?(data: Uint8Array, dst: Uint8Array, size: number): Uint8Array
}

/** Thrown when a stream or a writer needs a native compressor that is not installed. */
export class CompressorUnavailableError extends Error {
  override readonly name = 'CompressorUnavailableError'
  constructor(
    readonly codec: CodecName,
    readonly packageName: string,
  ) {
    super(`${codec} compression needs ${packageName}, which is not installed (npm install ${packageName})`)
  }
}

const require = createRequire(import.meta.url)

const deflate: Compressor = {
  name: 'deflate',
  compress: (data, level) => deflateRawSync(data, { level }),
  decompress(data, size) {
    // maxOutputLength bounds the output (ERR_BUFFER_TOO_LARGE beyond it); `info` tells how much input was used.
    const r = inflateRawSync(data, { maxOutputLength: Math.max(1, size), info: true }) as unknown as {
      buffer: Buffer
      engine: { bytesWritten: number }
    }
    if (r.engine.bytesWritten !== data.length)
      throw new Error(`${data.length - r.engine.bytesWritten} bytes after the end of the deflate stream`)
    if (r.buffer.length !== size) throw new Error(`decompressed to ${r.buffer.length} bytes`)
    return r.buffer
  },
}

interface Lz4Napi {
  compressSync(data: Uint8Array): Buffer
  uncompressSync(data: Uint8Array): Buffer
}

function makeLz4(mod: Lz4Napi): Compressor {
  return {
    name: 'lz4',
    // lz4-napi (lz4_flex compress_prepend_size) prefixes the block with its u32le size: the wire carries the bare
    // block (the size is the batch's framesLength), so the prefix is dropped here and rebuilt below.
    compress: (data) => mod.compressSync(data as Buffer).subarray(4),
    decompress(data, size) {
      const framed = Buffer.allocUnsafe(4 + data.length)
      framed.writeUInt32LE(size, 0) // lz4_flex allocates exactly this and fails if the block needs more
      framed.set(data, 4)
      const out = mod.uncompressSync(framed)
      if (out.length !== size) throw new Error(`decompressed to ${out.length} bytes`)
      return out
    },
  }
}

interface ZstdBinding {
  CCtx: new () => { compress(dst: Uint8Array, src: Uint8Array, level: number): number }
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number }
  compressBound(n: number): number
  findFrameCompressedSize(src: Uint8Array): number
}

function makeZstd(b: ZstdBinding): Compressor {
  let cctx: InstanceType<ZstdBinding['CCtx']> | undefined
  let dctx: InstanceType<ZstdBinding['DCtx']> | undefined
  let scratch: Buffer | undefined
  const decompressInto = (data: Uint8Array, dst: Uint8Array, size: number): Uint8Array => {
    // Exactly one frame: ZSTD_decompressDCtx would also accept concatenated and skippable frames.
    if (b.findFrameCompressedSize(data) !== data.length) throw new Error('not exactly one zstd frame')
    dctx ??= new b.DCtx()
    // Exactly `size` bytes of room: "Destination buffer is too small" if the frame holds more.
    const out = dst.length === size ? dst : dst.subarray(0, size)
    const n = dctx.decompress(out, data)
    if (n !== size) throw new Error(`decompressed to ${n} bytes`)
    return out
  }
  return {
    name: 'zstd',
    compress(data, level) {
      cctx ??= new b.CCtx()
      const dst = Buffer.allocUnsafe(b.compressBound(data.length))
      return dst.subarray(0, cctx.compress(dst, data, level))
    },
    compressView(data, level) {
      cctx ??= new b.CCtx()
      const bound = b.compressBound(data.length)
      if (scratch === undefined || scratch.length < bound) scratch = Buffer.allocUnsafeSlow(bound)
      return scratch.subarray(0, cctx.compress(scratch, data, level))
    },
    decompress: (data, size) => decompressInto(data, Buffer.allocUnsafe(size), size),
    decompressInto,
  }
}

const cache = new Map<CodecName, Compressor | null>()

function loadNative(name: 'lz4' | 'zstd'): Compressor | null {
  if (process.env[`XBZRLE_NO_${name.toUpperCase()}`] === '1') return null // tests: simulate "not installed"
  try {
    return name === 'lz4'
      ? makeLz4(require('lz4-napi') as Lz4Napi)
      : makeZstd(require('zstd-napi/binding') as ZstdBinding)
  } catch {
    return null
  }
}

/** The compressor `name`, or undefined when its optional native package is not installed. */
export function findCompressor(name: Exclude<CodecName, 'none'>): Compressor | undefined {
  if (name === 'deflate') return deflate
  let c = cache.get(name)
  if (c === undefined) {
    c = loadNative(name)
    cache.set(name, c)
  }
  return c ?? undefined
}

/** The compressor `name`; throws CompressorUnavailableError when its package is not installed. */
export function getCompressor(name: Exclude<CodecName, 'none'>): Compressor {
  const c = findCompressor(name)
  if (c === undefined) throw new CompressorUnavailableError(name, CODEC_PACKAGES[name]!)
  return c
}

/**
 * Whether the package of `name` is installed, without loading it (start-up: a native module costs milliseconds
 * that `xbzrle -c` should not spend before its first byte). `findCompressor` still decides whether it loads.
 */
export function isCompressorInstalled(name: CodecName): boolean {
  if (name === 'none' || name === 'deflate') return true
  if (cache.has(name)) return cache.get(name) !== null
  if (process.env[`XBZRLE_NO_${name.toUpperCase()}`] === '1') return false
  try {
    require.resolve(name === 'lz4' ? 'lz4-napi' : 'zstd-napi/binding')
    return true
  } catch {
    return false
  }
}

/** Whether `name` can be used here (`none` and `deflate` always can). */
export function isCompressorAvailable(name: CodecName): boolean {
  return name === 'none' || findCompressor(name) !== undefined
}

/** Test hook: forget loaded native modules (so XBZRLE_NO_* env changes take effect). */
export function resetCompressorCache(): void {
  cache.clear()
}
