// Shared helpers of the golden-vector definitions (vectors-v1.ts, vectors-v2.ts, vectors-v3.ts): byte helpers, a
// stream builder that records the bytes each frame stands for, and the record surgery of the malformed vectors.
import { FrameWriter, type ProtocolErrorCode, type StreamHeader } from '../src/index.js'
import { concat, HEADER, qemuHdr, record } from '../src/test-util.js'
import { ByteWriter, readU32le } from '../src/wire/byte-writer.js'
import { crc32 } from '../src/wire/crc32.js'

/** One golden vector: `orig` for a valid one (what it decodes to), `expect` for a malformed one. */
export interface Vector {
  name: string
  description: string
  xbz: Uint8Array
  orig?: Uint8Array
  expect?: ProtocolErrorCode
}

/** A list of vectors and the two ways to add one. */
export function vectorList() {
  const vectors: Vector[] = []
  return {
    vectors,
    valid: (name: string, description: string, r: { xbz: Uint8Array; orig: Uint8Array }) =>
      void vectors.push({ name, description, xbz: r.xbz, orig: r.orig }),
    bad: (name: string, description: string, xbz: Uint8Array, expect: ProtocolErrorCode) =>
      void vectors.push({ name, description, xbz, expect }),
  }
}

// ---- bytes ----

export const cat = (...parts: Uint8Array[]): Uint8Array => concat(parts)
export const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0))
export const hex = (s: string) =>
  Uint8Array.from(s.split(/\s+/).filter(Boolean), (h) => Number.parseInt(h, 16))

/** A bare be64 value (no CONTINUE flag added), for header look-alikes. */
export function be64(value: number | bigint): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(value))
  return b
}
/** The varint encoding of `n`. */
export function varint(n: number): Uint8Array {
  const w = new ByteWriter()
  w.varint(n)
  return w.take()
}
/** Deterministic pseudo-random bytes (xorshift32): incompressible. */
export function noise(n: number, seed: number): Uint8Array {
  let s = seed | 1
  return Uint8Array.from({ length: n }, () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return s & 0xff
  })
}

/** A copy of `b` with the bits of `mask` flipped in byte `at`. */
export function flipped(b: Uint8Array, at: number, mask: number): Uint8Array {
  const c = b.slice()
  c[at] = c[at]! ^ mask
  return c
}

// ---- QEMU pages ----

export const PAGE = 4096
/** QEMU RAM record flags (reference §5): a full page, a zero page, an XBZRLE page. */
export const PAGE_F = 0x08
export const ZERO_F = 0x02
export const XBZRLE_F = 0x40

/** QEMU page-record header: be64 (offset | flags [| CONTINUE 0x20 when no name]) [u8 len, name]. */
export const qhdr = qemuHdr
/** A page whose byte i is f(i). */
export const page = (f: (i: number) => number) => Uint8Array.from({ length: PAGE }, (_, i) => f(i))
export const zeros = () => new Uint8Array(PAGE)
/** A copy of `base` with the bytes at the given offsets set. */
export const withBytes = (base: Uint8Array, set: Record<number, number>) => {
  const p = base.slice()
  for (const [k, v] of Object.entries(set)) p[Number(k)] = v
  return p
}

// ---- streams ----

/** The first 8 bytes of a QEMU migration stream: magic QEVM, version 3. */
export const QEVM = ascii('QEVM\0\0\0\x03')

/** The header most vectors use: 4 KiB pages, a 64 MiB direct-mapped LRU cache, canonical mode, QEMU source. */
export const BASE_HEADER: StreamHeader = HEADER

/**
 * The frame calls of FrameWriter, each also recording the bytes the frame stands for in the original stream
 * (the page-record header, then the page, the fill byte or QEMU's XBZRLE body), so that a vector's `orig` is
 * built from the same plain inputs as its frames and never by decoding.
 */
export class StreamBuilder {
  readonly orig: Uint8Array[] = []
  constructor(readonly w: FrameWriter) {}
  verbatim(bytes: Uint8Array): void {
    this.w.verbatim(bytes)
    this.orig.push(bytes)
  }
  pageFull(blockId: number, pageIndex: number, hdr: Uint8Array, p: Uint8Array): void {
    this.w.pageFull(blockId, pageIndex, hdr, p)
    this.orig.push(hdr, p)
  }
  /** `next`: the page after applying `delta`. */
  pageDelta(block: number, index: number, hdr: Uint8Array, delta: Uint8Array, next: Uint8Array): void {
    this.w.pageDelta(block, index, hdr, delta, next)
    this.orig.push(hdr, next)
  }
  pageSame(blockId: number, pageIndex: number, hdr: Uint8Array, p: Uint8Array): void {
    this.w.pageSame(blockId, pageIndex, hdr, p)
    this.orig.push(hdr, p)
  }
  pageZero(blockId: number, pageIndex: number, hdr: Uint8Array, fill: number): void {
    this.w.pageZero(blockId, pageIndex, hdr, fill)
    this.orig.push(hdr, Uint8Array.of(fill))
  }
  pageForeign(blockId: number, pageIndex: number, hdr: Uint8Array, body: Uint8Array): void {
    this.w.pageForeign(blockId, pageIndex, hdr, body)
    this.orig.push(hdr, body)
  }
  invalidate(blockId: number, pageIndex: number): void {
    this.w.invalidate(blockId, pageIndex)
  }
  reset(): void {
    this.w.reset()
  }
  flush(): void {
    this.w.flush()
  }
}

export type Build = (s: StreamBuilder) => void

/**
 * The start of a small QEMU stream: the magic (VERBATIM), page (0,0) of block "pc.ram" in full (a counter byte
 * every 64 bytes), then a delta (ff 1f 01 01) setting its byte 4095 to 1. Returns the page sent in full, the page
 * after the delta and the CONTINUE header of both.
 */
export function qemuStreamStart(s: StreamBuilder): { full: Uint8Array; page: Uint8Array; hdr: Uint8Array } {
  s.verbatim(QEVM)
  const p0 = Uint8Array.from({ length: PAGE }, (_, i) => (i % 64 === 0 ? i >> 6 : 0))
  s.pageFull(0, 0, qhdr(0, PAGE_F, 'pc.ram'), p0)
  const p1 = withBytes(p0, { 4095: 1 })
  const hdr = qhdr(0, PAGE_F)
  s.pageDelta(0, 0, hdr, hex('ff 1f 01 01'), p1)
  return { full: p0, page: p1, hdr }
}

/** VERBATIM frames of `parts`, one each. */
export const verb =
  (...parts: Uint8Array[]): Build =>
  (s) => {
    for (const b of parts) s.verbatim(b)
  }

export interface WriteOptions {
  version: 1 | 2 | 3
  batchBytes?: number
  /** Version 3 only. */
  streamId?: Uint8Array
}

/** A whole stream: header, the frames of `build`, END (cache stats zero). `chunks` are its records in order. */
export function writeStream(header: StreamHeader, build: Build, opts: WriteOptions) {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({
    onChunk: (c) => chunks.push(c),
    batchBytes: opts.batchBytes,
    version: opts.version,
    ...(opts.streamId ? { streamId: opts.streamId } : {}),
  })
  const s = new StreamBuilder(w)
  w.header(header)
  build(s)
  w.end({ cache: { hits: 0, misses: 0 } })
  return { chunks, xbz: cat(...chunks), orig: cat(...s.orig), stats: w.batchStats }
}

// ---- record surgery (malformed vectors) ----

/** A record: tag, u32le body length, body, CRC-32 of all that. */
export { record }

/** A copy of the record `rec` with its CRC resealed after `edit` changed its bytes. */
export function reseal(rec: Uint8Array, edit: (r: Uint8Array) => Uint8Array = (r) => r): Uint8Array {
  const r = edit(rec.slice())
  const bodyEnd = r.length - 4
  new DataView(r.buffer, r.byteOffset).setUint32(bodyEnd, crc32(r.subarray(0, bodyEnd)), true)
  return r
}
/**
 * Reseals, in place, the header CRC of a stream (or of its header record) that starts with the header: prelude
 * (9 bytes), then the u32le body length at offset 10, the body from offset 14 and the CRC right after it.
 */
export function resealHeader(stream: Uint8Array): Uint8Array {
  const bodyEnd = 14 + readU32le(stream, 10)
  new DataView(stream.buffer, stream.byteOffset).setUint32(bodyEnd, crc32(stream.subarray(0, bodyEnd)), true)
  return stream
}
