// Test helpers (excluded from the build): a reference XBZRLE codec, a model decoder and stream readers.
import { ProtocolError } from './errors.js'
import { FrameReader, type FrameReaderOptions, type ReaderItem } from './reader.js'
import { verifyBatchOutput, verifyEndTotals } from './v1/reader.js'
import type { StreamHeader } from './v3/types.js'
import { ByteWriter } from './wire/byte-writer.js'
import { crc32 } from './wire/crc32.js'
import { FrameWriter } from './writer.js'

const uleb = (n: number) => (n < 0x80 ? [n] : [(n & 0x7f) | 0x80, n >> 7])

/** Canonical QEMU XBZRLE encoding of old→new (no output limit). Empty for identical pages. */
export function xbzrleEncode(oldPage: Uint8Array, newPage: Uint8Array): Uint8Array {
  const out: number[] = []
  const n = newPage.length
  let i = 0
  while (i < n) {
    let z = 0
    while (i + z < n && oldPage[i + z] === newPage[i + z]) z++
    if (i + z === n) break
    let nz = 0
    while (i + z + nz < n && oldPage[i + z + nz] !== newPage[i + z + nz]) nz++
    out.push(...uleb(z), ...uleb(nz))
    for (let k = 0; k < nz; k++) out.push(newPage[i + z + k]!)
    i += z + nz
  }
  return Uint8Array.from(out)
}

/** Applies an XBZRLE delta onto `page` in place (throws on a malformed delta). */
export function xbzrleApply(delta: Uint8Array, page: Uint8Array): void {
  let i = 0
  let d = 0
  const read = () => {
    const b0 = delta[i++]!
    if (b0 < 0x80) return b0
    const b1 = delta[i++]!
    return (b0 & 0x7f) | (b1 << 7)
  }
  while (i < delta.length) {
    d += read()
    const nz = read()
    if (d + nz > page.length || i + nz > delta.length)
      throw new ProtocolError('MALFORMED', 'xbzrle stream: bad XBZRLE delta (model decoder)')
    page.set(delta.subarray(i, i + nz), d)
    i += nz
    d += nz
  }
}

export const concat = (parts: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/** Decodes items with an unbounded Map cache, verifying every batch's output like the real filter must. */
export class ModelDecoder {
  pageSize = 0
  cache = new Map<string, Uint8Array>()
  out: Uint8Array[] = []
  produced = 0
  ended = false

  feed(item: ReaderItem): void {
    if (item.type === 'header') this.pageSize = item.header.pageSize
    else if (item.type === 'end') {
      verifyEndTotals(item.end, this.produced)
      this.ended = true
    } else {
      const parts: Uint8Array[] = []
      for (const f of item.batch.frames()) {
        if (f.kind === 'verbatim') parts.push(f.bytes)
        else if (f.kind === 'reset') this.cache.clear()
        else if (f.kind === 'invalidate') this.cache.delete(`${f.blockId}/${f.pageIndex}`)
        else {
          const key = `${f.blockId}/${f.pageIndex}`
          parts.push(f.hdr)
          if (f.kind === 'full') {
            this.cache.set(key, f.page.slice())
            parts.push(f.page)
          } else if (f.kind === 'zero') {
            this.cache.set(key, new Uint8Array(this.pageSize).fill(f.fill))
            parts.push(Uint8Array.of(f.fill))
          } else {
            const page = this.cache.get(key)
            if (f.kind === 'foreign') {
              if (page) xbzrleApply(f.body.subarray(3), page) // a miss leaves the cache unchanged
              parts.push(f.body)
            } else {
              if (!page)
                throw new ProtocolError(
                  'OUTPUT_MISMATCH',
                  `xbzrle stream: cache miss on ${f.kind} ${key} (model)`,
                )
              if (f.kind === 'delta') xbzrleApply(f.delta, page)
              parts.push(page.slice())
            }
          }
        }
      }
      const bytes = concat(parts)
      verifyBatchOutput(item.batch, crc32(bytes), bytes.length)
      this.produced += bytes.length
      this.out.push(bytes)
    }
  }

  output(): Uint8Array {
    return concat(this.out)
  }
}

export interface ReadResult {
  items: ReaderItem[]
  error?: ProtocolError
}

/**
 * Reads a whole stream in chunks of `chunkSize` (default: all at once). Non-ProtocolError exceptions propagate.
 * Without `opts` the reader is capped at version 1: the frozen v1 suite (src/v1/*.test.ts, written when v1 was
 * the newest version) relies on these defaults; v2 tests pass their options.
 */
export function readStream(
  bytes: Uint8Array,
  chunkSize = bytes.length || 1,
  opts: FrameReaderOptions = { maxVersion: 1 },
): ReadResult {
  const r = new FrameReader(opts)
  const items: ReaderItem[] = []
  try {
    for (let o = 0; o < bytes.length; o += chunkSize) {
      r.push(bytes.subarray(o, Math.min(bytes.length, o + chunkSize)))
      for (let it = r.next(); it; it = r.next()) items.push(it)
    }
    r.finish()
    return { items }
  } catch (e) {
    if (e instanceof ProtocolError) return { items, error: e }
    throw e
  }
}

/** Reads and decodes with the model; returns the output or the error. */
export function decodeStream(
  bytes: Uint8Array,
  chunkSize?: number,
  opts?: FrameReaderOptions,
): { output?: Uint8Array; error?: ProtocolError } {
  const r = readStream(bytes, chunkSize, opts)
  if (r.error) return { error: r.error }
  const m = new ModelDecoder()
  try {
    for (const it of r.items) m.feed(it)
  } catch (e) {
    if (e instanceof ProtocolError) return { error: e }
    throw e
  }
  return { output: m.output() }
}

export const HEADER: StreamHeader = {
  pageSize: 4096,
  cache: { cacheBytes: 64 * 1024 * 1024, ways: 1, policy: 'lru' },
  mode: 'canonical',
  source: 'qemu',
}

/** Collects a writer's chunks. Version 1 by default (the frozen v1 suite relies on it; see readStream). */
export function collect(
  batchBytes?: number,
  version: 1 | 2 | 3 = 1,
  streamId?: Uint8Array,
): {
  w: FrameWriter
  chunks: Uint8Array[]
  bytes: () => Uint8Array
} {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({ onChunk: (c) => chunks.push(c), batchBytes, version, streamId })
  return { w, chunks, bytes: () => concat(chunks) }
}

/** A QEMU page-record header: be64 offset|flags, and the block name unless CONTINUE. */
export function qemuHdr(offset: number, flags: number, name?: string): Uint8Array {
  const b = new Uint8Array(8 + (name === undefined ? 0 : 1 + name.length))
  const v = BigInt(offset) | BigInt(flags | (name === undefined ? 0x20 : 0))
  new DataView(b.buffer).setBigUint64(0, v)
  if (name !== undefined) {
    b[8] = name.length
    for (let i = 0; i < name.length; i++) b[9 + i] = name.charCodeAt(i)
  }
  return b
}

/** Deterministic pseudo-random numbers in [0, 1) (xorshift32) from `seed`. */
export function rng(seed: number): () => number {
  let s = seed | 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 2 ** 32
  }
}

/** One step of a random frame sequence (see writeOps). Pages and VERBATIM spans are made from `seed`. */
export type StreamOp<V extends { t: 'verbatim'; seed: number }, P extends PageOp> =
  | V
  | P
  | { t: 'reset' }
  | { t: 'flush' }
export interface PageOp {
  t: 'full' | 'delta' | 'same' | 'zero' | 'foreign' | 'invalidate'
  block: number
  index: number
  seed: number
}

/** How writeOps makes the bytes of a test's ops; each gets the op's random source. */
export interface OpBytes<V, P> {
  pageSize: number
  verbatim: (op: V, r: () => number) => Uint8Array
  /** The page-record header of a page op (called before the page is made). */
  hdr: (op: P, r: () => number) => Uint8Array
  /** The fill byte of a PAGE_ZERO. */
  zeroFill: (r: () => number) => number
}

/**
 * Writes `ops` with `w` (after its header, before its END), keeping a model of the cache: a DELTA, SAME or FOREIGN
 * of a page that is not cached becomes a FULL; pages change in up to 8 random bytes. Returns the original bytes the
 * frames stand for, built from the same inputs, never by decoding.
 */
export function writeOps<V extends { t: 'verbatim'; seed: number }, P extends PageOp>(
  w: FrameWriter,
  ops: readonly StreamOp<V, P>[],
  bytes: OpBytes<V, P>,
): Uint8Array {
  const PAGE = bytes.pageSize
  const cache = new Map<string, Uint8Array>()
  const orig: Uint8Array[] = []
  for (const op of ops) {
    if (op.t === 'flush') w.flush()
    else if (op.t === 'reset') {
      w.reset()
      cache.clear()
    } else if (op.t === 'verbatim') {
      const b = bytes.verbatim(op as V, rng(op.seed))
      w.verbatim(b)
      orig.push(b)
    } else {
      const pop = op as P
      const key = `${pop.block}/${pop.index}`
      const r = rng(pop.seed)
      const hdr = bytes.hdr(pop, r)
      const cached = cache.get(key)
      let t = pop.t
      if ((t === 'delta' || t === 'same' || t === 'foreign') && !cached) t = 'full'
      const mutate = (base: Uint8Array) => {
        const p = base.slice()
        for (let i = 0, n = (r() * 8) | 0; i < n; i++) p[(r() * PAGE) | 0] = (r() * 256) | 0
        return p
      }
      if (t === 'invalidate') {
        w.invalidate(pop.block, pop.index)
        cache.delete(key)
      } else if (t === 'full') {
        const p = mutate(cached ?? new Uint8Array(PAGE))
        w.pageFull(pop.block, pop.index, hdr, p)
        cache.set(key, p)
        orig.push(hdr, p)
      } else if (t === 'same') {
        w.pageSame(pop.block, pop.index, hdr, cached!)
        orig.push(hdr, cached!)
      } else if (t === 'zero') {
        const fill = bytes.zeroFill(r)
        w.pageZero(pop.block, pop.index, hdr, fill)
        cache.set(key, new Uint8Array(PAGE).fill(fill))
        orig.push(hdr, Uint8Array.of(fill))
      } else {
        const p = mutate(cached!)
        const d = xbzrleEncode(cached!, p)
        if (t === 'delta') {
          w.pageDelta(pop.block, pop.index, hdr, d, p)
          orig.push(hdr, p)
        } else {
          const body = concat([Uint8Array.of(1, d.length >> 8, d.length & 0xff), d])
          w.pageForeign(pop.block, pop.index, hdr, body)
          orig.push(hdr, body)
        }
        cache.set(key, p) // a new array: the pages pushed to orig are never changed afterwards
      }
    }
  }
  return concat(orig)
}

/** A record as every version frames it: tag, u32le body length, body, CRC-32 of all that (for hand-made streams). */
export function record(tag: number, body: Uint8Array): Uint8Array {
  const w = new ByteWriter()
  w.u8(tag)
  w.u32le(body.length)
  w.bytes(body)
  w.u32le(crc32(w.view()))
  return w.take()
}

/** Fast byte equality (vitest's toEqual walks typed arrays element by element). */
export function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && Buffer.compare(a, b) === 0
}
