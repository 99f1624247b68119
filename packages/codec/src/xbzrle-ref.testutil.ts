/**
 * Test-only models written straight from the reference (qemu-migration-stream.md §5.2/§5.3) as plain byte loops,
 * with QEMU's checks in QEMU's order. Kernels are compared against these, byte for byte.
 */
import fc from 'fast-check'

function ulebBytes(n: number): number[] {
  return n < 0x80 ? [n] : [(n & 0x7f) | 0x80, n >> 7]
}

/** QEMU scalar `xbzrle_encode_buffer`: bytes, 0 (unchanged) or -1 (overflow). */
export function refEncode(old: Uint8Array, cur: Uint8Array, dlen: number): Uint8Array | 0 | -1 {
  const len = cur.length
  const out: number[] = []
  let i = 0
  while (i < len) {
    if (out.length + 2 > dlen) return -1
    let z = 0
    while (i < len && old[i] === cur[i]) {
      z++
      i++
    }
    if (z === len) return 0
    if (i === len) return Uint8Array.from(out)
    if (z > 0x3fff) return -1
    out.push(...ulebBytes(z))
    if (out.length + 2 > dlen) return -1
    const s = i
    while (i < len && old[i] !== cur[i]) i++
    const nz = i - s
    if (nz > 0x3fff) return -1
    out.push(...ulebBytes(nz))
    if (out.length + nz > dlen) return -1
    for (let k = s; k < i; k++) out.push(cur[k]!)
  }
  return Uint8Array.from(out)
}

/** Maximal runs as [zrunLen, nzStart, nzEnd] triples (trailing zrun dropped). */
function runs(old: Uint8Array, cur: Uint8Array): [number, number, number][] {
  const out: [number, number, number][] = []
  let i = 0
  while (i < cur.length) {
    const zs = i
    while (i < cur.length && old[i] === cur[i]) i++
    if (i === cur.length) break
    const s = i
    while (i < cur.length && old[i] !== cur[i]) i++
    out.push([s - zs, s, i])
  }
  return out
}

/** Compact mode model: fold a 1–2 byte zrun when the merged pair is strictly smaller (greedy, left to right). */
export function refEncodeCompact(old: Uint8Array, cur: Uint8Array, dlen: number): Uint8Array | 0 | -1 {
  const rs = runs(old, cur)
  if (rs.length === 0) return 0
  const ul = (n: number) => (n < 0x80 ? 1 : 2)
  const groups: [number, number, number][] = []
  let [pz, ps, pe] = rs[0]!
  for (let r = 1; r < rs.length; r++) {
    const [k, s, e] = rs[r]!
    const m = e - ps
    if (k <= 2 && m <= 0x3fff && m + ul(m) < pe - ps + ul(pe - ps) + ul(k) + ul(e - s) + (e - s)) {
      pe = e
      continue
    }
    groups.push([pz, ps, pe])
    ;[pz, ps, pe] = [k, s, e]
  }
  groups.push([pz, ps, pe])
  const out: number[] = []
  for (const [z, s, e] of groups) {
    if (z > 0x3fff || e - s > 0x3fff) return -1
    out.push(...ulebBytes(z), ...ulebBytes(e - s))
    for (let k = s; k < e; k++) out.push(cur[k]!)
  }
  return out.length > dlen ? -1 : Uint8Array.from(out)
}

/** QEMU `xbzrle_decode_buffer` on a copy: the new page and the end offset, or -1. */
export function refDecode(src: Uint8Array, page: Uint8Array): { end: number; page: Uint8Array } | -1 {
  const dst = page.slice()
  const slen = src.length
  const dlen = dst.length
  const uleb = (at: number): [number, number] | null => {
    const b0 = src[at]!
    if (!(b0 & 0x80)) return [b0, 1]
    const b1 = src[at + 1]!
    if (b1 & 0x80) return null
    return [(b0 & 0x7f) | (b1 << 7), 2]
  }
  let i = 0
  let d = 0
  while (i < slen) {
    if (slen - i < 2) return -1
    const z = uleb(i)
    if (z === null || (i !== 0 && z[0] === 0)) return -1
    i += z[1]
    d += z[0]
    if (d > dlen) return -1
    if (slen - i < 2) return -1
    const n = uleb(i)
    if (n === null || n[0] === 0) return -1
    i += n[1]
    if (d + n[0] > dlen || i + n[0] > slen) return -1
    for (let k = 0; k < n[0]; k++) dst[d + k] = src[i + k]!
    d += n[0]
    i += n[0]
  }
  return { end: d, page: dst }
}

export interface PagePair {
  old: Uint8Array
  cur: Uint8Array
}

/** Builds a pair from alternating run lengths: even entries unchanged, odd entries changed. */
export function pairFromRuns(len: number, runLens: number[], seed: number, startChanged: boolean): PagePair {
  const old = new Uint8Array(len)
  let x = seed | 1
  for (let i = 0; i < len; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    old[i] = x & 0xff
  }
  const cur = old.slice()
  let pos = 0
  let changed = startChanged
  for (const r of runLens) {
    if (pos >= len) break
    const end = Math.min(len, pos + r)
    if (changed) for (let i = pos; i < end; i++) cur[i] = old[i]! ^ (((i * 7) & 0xff) | 1)
    pos = end
    changed = !changed
  }
  return { old, cur }
}

/** Adversarial pairs: short alternating runs (1–3 bytes are where folding and word edges matter), edges. */
export const arbPagePair: fc.Arbitrary<PagePair> = fc
  .record({
    words: fc.oneof(fc.integer({ min: 1, max: 80 }), fc.constant(512)),
    runLens: fc.array(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 300 })), {
      maxLength: 200,
    }),
    seed: fc.integer(),
    startChanged: fc.boolean(),
  })
  .map(({ words, runLens, seed, startChanged }) => pairFromRuns(words * 8, runLens, seed, startChanged))

/** Fully random pairs of random length (multiple of 8); new is old with random bytes overwritten. */
export const arbRandomPair: fc.Arbitrary<PagePair> = fc
  .integer({ min: 1, max: 80 })
  .chain((w) =>
    fc.record({
      old: fc.uint8Array({ minLength: w * 8, maxLength: w * 8 }),
      edits: fc.array(fc.tuple(fc.nat(w * 8 - 1), fc.integer({ min: 0, max: 255 })), { maxLength: w * 8 }),
    }),
  )
  .map(({ old, edits }) => {
    const cur = old.slice()
    for (const [i, v] of edits) cur[i] = v
    return { old, cur }
  })
