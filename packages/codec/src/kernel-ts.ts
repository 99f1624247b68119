/**
 * Portable TypeScript XBZRLE kernel: the fallback when WebAssembly is unavailable, and the readable twin of
 * assembly/xbzrle.ts. Scanning goes 32 bits at a time through a Uint32Array over the whole ArrayBuffer
 * (DataView measured slower); the exact byte inside a word comes from count-trailing-zeros, which is why the word
 * path is only used on little-endian hosts.
 */
import { decodeErrorFromCode } from './errors.js'
import { type EncodeMode, FOLD_MAX, MAX_RUN, type XbzrleKernel } from './kernel-types.js'

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

/** Index of the lowest set bit (x != 0). */
function ctz32(x: number): number {
  return 31 - Math.clz32(x & -x)
}

// Two-entry cache of whole-buffer word views, so a call costs no allocation when pages live in one big buffer
// (the page cache's wasm memory). Keyed by ArrayBuffer identity.
let cacheBufA: ArrayBufferLike | null = null
let cacheWordsA: Uint32Array | null = null
let cacheBufB: ArrayBufferLike | null = null
let cacheWordsB: Uint32Array | null = null

function wordsOf(a: Uint8Array): Uint32Array | null {
  if (!LITTLE_ENDIAN || (a.byteOffset & 3) !== 0) return null
  const buf = a.buffer
  if (buf === cacheBufA) return cacheWordsA
  if (buf === cacheBufB) {
    // Move to front: the most recent buffer is checked first.
    const w = cacheWordsB
    cacheBufB = cacheBufA
    cacheWordsB = cacheWordsA
    cacheBufA = buf
    cacheWordsA = w
    return w
  }
  const w = new Uint32Array(buf, 0, buf.byteLength >>> 2)
  cacheBufB = cacheBufA
  cacheWordsB = cacheWordsA
  cacheBufA = buf
  cacheWordsA = w
  return w
}

/**
 * Scanner over one (old, new) pair. An object with fixed shape and monomorphic fields keeps V8's hot loops
 * fast (module-level `let`s measured ~2x slower). One instance is reused, so calls allocate nothing.
 */
class Scanner {
  o: Uint8Array = EMPTY
  n: Uint8Array = EMPTY
  ow: Uint32Array = EMPTY_W
  nw: Uint32Array = EMPTY_W
  words = false
  oBase = 0 // word index of o[0] in ow
  nBase = 0

  /** First index >= i where old and new differ, or len. */
  eqEnd(i: number, len: number): number {
    const o = this.o
    const n = this.n
    if (this.words) {
      while (i < len && (i & 3) !== 0) {
        if (o[i] !== n[i]) return i
        i++
      }
      const ow = this.ow
      const nw = this.nw
      const d = this.nBase - this.oBase
      const wEnd = this.oBase + (len >>> 2)
      for (let w = this.oBase + (i >>> 2); w < wEnd; w++) {
        const x = ow[w]! ^ nw[w + d]!
        if (x !== 0) return ((w - this.oBase) << 2) + (ctz32(x) >>> 3)
      }
      return len
    }
    while (i < len && o[i] === n[i]) i++
    return i
  }

  /** First index >= i where old and new are equal, or len. */
  neEnd(i: number, len: number): number {
    const o = this.o
    const n = this.n
    if (this.words) {
      while (i < len && (i & 3) !== 0) {
        if (o[i] === n[i]) return i
        i++
      }
      const ow = this.ow
      const nw = this.nw
      const d = this.nBase - this.oBase
      const wEnd = this.oBase + (len >>> 2)
      for (let w = this.oBase + (i >>> 2); w < wEnd; w++) {
        const x = ow[w]! ^ nw[w + d]!
        // Has-zero-byte: the lowest flagged byte is exactly the first equal byte (no borrow reaches below it).
        const t = (x - 0x01010101) & ~x & 0x80808080
        if (t !== 0) return ((w - this.oBase) << 2) + (ctz32(t) >>> 3)
      }
      return len
    }
    while (i < len && o[i] !== n[i]) i++
    return i
  }
}

const EMPTY = new Uint8Array(0)
const EMPTY_W = new Uint32Array(0)
const S = new Scanner()

function copyRun(dst: Uint8Array, d: number, src: Uint8Array, s: number, n: number): void {
  // subarray() allocates; for the typical few-byte run a loop is cheaper.
  if (n < 64) {
    for (let k = 0; k < n; k++) dst[d + k] = src[s + k]!
  } else {
    dst.set(src.subarray(s, s + n), d)
  }
}

function putUleb(dst: Uint8Array, d: number, v: number): number {
  if (v < 0x80) {
    dst[d] = v
    return d + 1
  }
  dst[d] = (v & 0x7f) | 0x80
  dst[d + 1] = v >>> 7
  return d + 2
}

function ul(v: number): number {
  return v < 0x80 ? 1 : 2
}

/** QEMU's scalar encoder, check for check (see reference §5.2): the top-of-loop `d + 2 > dlen` is intentional. */
function encodeCanonical(len: number, dst: Uint8Array, dlen: number): number {
  let i = 0
  let d = 0
  while (i < len) {
    if (d + 2 > dlen) return -1
    const j = S.eqEnd(i, len)
    if (j - i === len) return 0
    if (j === len) return d // trailing zrun is not encoded
    const z = j - i
    if (z > MAX_RUN) return -1 // only possible for pages > 16 KiB: unrepresentable, send the page
    d = putUleb(dst, d, z)
    if (d + 2 > dlen) return -1
    const k = S.neEnd(j, len)
    const nz = k - j
    if (nz > MAX_RUN) return -1
    d = putUleb(dst, d, nz)
    if (d + nz > dlen) return -1
    copyRun(dst, d, S.n, j, nz)
    d += nz
    i = k
  }
  return d
}

/** Writes one (zrun, nzrun) pair, or returns -1 if it does not fit or cannot be represented. */
function emitPair(dst: Uint8Array, d: number, dlen: number, z: number, s: number, e: number): number {
  const nz = e - s
  if (z > MAX_RUN || nz > MAX_RUN) return -1
  if (d + ul(z) + ul(nz) + nz > dlen) return -1
  d = putUleb(dst, d, z)
  d = putUleb(dst, d, nz)
  copyRun(dst, d, S.n, s, nz)
  return d + nz
}

/**
 * Greedy folding: keep one pending nzrun [ps, pe); when the next zrun is at most FOLD_MAX bytes and swallowing it
 * plus the following nzrun is strictly smaller than emitting a separate pair, extend the pending run. Folded bytes
 * are copied from `new`, where they equal `old`, so the strict decoder reproduces the page exactly.
 */
function encodeCompact(len: number, dst: Uint8Array, dlen: number): number {
  const j0 = S.eqEnd(0, len)
  if (j0 === len) return 0
  let pz = j0
  let ps = j0
  let pe = S.neEnd(j0, len)
  let d = 0
  while (pe < len) {
    const j = S.eqEnd(pe, len)
    if (j === len) break
    const k = j - pe
    const e = S.neEnd(j, len)
    if (k <= FOLD_MAX) {
      const merged = e - ps
      const a = pe - ps
      const b = e - j
      if (merged <= MAX_RUN && merged + ul(merged) < a + ul(a) + ul(k) + ul(b) + b) {
        pe = e
        continue
      }
    }
    d = emitPair(dst, d, dlen, pz, ps, pe)
    if (d < 0) return -1
    pz = k
    ps = j
    pe = e
  }
  return emitPair(dst, d, dlen, pz, ps, pe)
}

function checkEncodeArgs(old: Uint8Array, cur: Uint8Array): number {
  const len = cur.length
  if (old.length !== len)
    throw new RangeError(`xbzrle encode: old page is ${old.length} bytes, new is ${len}`)
  if (len % 8 !== 0) throw new RangeError(`xbzrle encode: page length ${len} is not a multiple of 8`)
  return len
}

export function encodeTs(
  old: Uint8Array,
  cur: Uint8Array,
  dst: Uint8Array,
  mode: EncodeMode = 'canonical',
): number {
  const len = checkEncodeArgs(old, cur)
  const ow = wordsOf(old)
  const nw = ow === null ? null : wordsOf(cur)
  S.o = old
  S.n = cur
  S.words = ow !== null && nw !== null
  S.ow = ow ?? EMPTY_W
  S.nw = nw ?? EMPTY_W
  S.oBase = old.byteOffset >>> 2
  S.nBase = cur.byteOffset >>> 2
  const r = mode === 'compact' ? encodeCompact(len, dst, dst.length) : encodeCanonical(len, dst, dst.length)
  // Drop references so a big buffer is not kept alive by the module.
  S.o = S.n = EMPTY
  S.ow = S.nw = EMPTY_W
  return r
}
/**
 * Pass 1 of the decoder: every rule of QEMU's `xbzrle_decode_buffer`, in QEMU's order, without writing.
 * Returns the end offset of the last nzrun, or a negative error code (see errors.ts).
 */
export function validateDeltaTs(src: Uint8Array, dlen: number): number {
  const slen = src.length
  let i = 0
  let d = 0
  while (i < slen) {
    if (slen - i < 2) return -(1 + 0 + 16 * i)
    const z0 = src[i]!
    let z: number
    let zl: number
    if (z0 & 0x80) {
      const b1 = src[i + 1]!
      if (b1 & 0x80) return -(1 + 1 + 16 * i)
      z = (z0 & 0x7f) | (b1 << 7)
      zl = 2
    } else {
      z = z0
      zl = 1
    }
    if (i !== 0 && z === 0) return -(1 + 2 + 16 * i)
    d += z
    if (d > dlen) return -(1 + 3 + 16 * i)
    i += zl
    if (slen - i < 2) return -(1 + 4 + 16 * i)
    const n0 = src[i]!
    let n: number
    let nl: number
    if (n0 & 0x80) {
      const b1 = src[i + 1]!
      if (b1 & 0x80) return -(1 + 5 + 16 * i)
      n = (n0 & 0x7f) | (b1 << 7)
      nl = 2
    } else {
      n = n0
      nl = 1
    }
    if (n === 0) return -(1 + 6 + 16 * i)
    if (d + n > dlen) return -(1 + 7 + 16 * i)
    if (i + nl + n > slen) return -(1 + 8 + 16 * i)
    i += nl + n
    d += n
  }
  return d
}

/** Pass 2: apply a delta already validated against a page of this length. */
function applyDeltaTs(src: Uint8Array, page: Uint8Array): void {
  const slen = src.length
  let i = 0
  let d = 0
  while (i < slen) {
    let b = src[i++]!
    d += b & 0x80 ? (b & 0x7f) | (src[i++]! << 7) : b
    b = src[i++]!
    const n = b & 0x80 ? (b & 0x7f) | (src[i++]! << 7) : b
    copyRun(page, d, src, i, n)
    i += n
    d += n
  }
}

/**
 * Validate-then-apply: an invalid delta throws before a single byte of `page` changes, so a cached page is never
 * left half-updated (QEMU writes the runs before the failing one; we must not, the cache outlives the error).
 */
export function decodeTs(delta: Uint8Array, page: Uint8Array): number {
  const r = validateDeltaTs(delta, page.length)
  if (r < 0) throw decodeErrorFromCode(r)
  applyDeltaTs(delta, page)
  return r
}

export const tsKernel: XbzrleKernel = {
  name: 'ts',
  encode: encodeTs,
  decode: decodeTs,
}
