import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CacheDesyncError, XbzrleDecodeError } from './errors.js'
import { tsKernel } from './kernel-ts.js'
import type { EncodeMode, KernelName } from './kernel-types.js'
import { PageDeltaDecoder, PageDeltaEncoder } from './page-delta.js'

const PS = 256
const cache = { pageSize: PS, cacheBytes: 16 * PS, ways: 4 }

describe.each([
  ['wasm', 'canonical'],
  ['ts', 'canonical'],
  ['wasm', 'compact'],
  ['ts', 'compact'],
] as [KernelName, EncodeMode][])('PageDelta %s %s', (kernel, mode) => {
  it('full on miss, same when unchanged, delta on a small change, full on overflow', () => {
    const enc = new PageDeltaEncoder({ cache, mode, kernel })
    const dec = new PageDeltaDecoder({ cache, kernel })
    // The page is a view into a bigger, oddly aligned chunk, as a filter would pass it.
    const chunk = new Uint8Array(PS * 2 + 3)
    const page = chunk.subarray(3, 3 + PS)
    page.fill(9)

    let r = enc.encodePage(1, 7, page)
    expect(r.kind).toBe('full')
    dec.full(1, 7, page)

    r = enc.encodePage(1, 7, page)
    expect(r.kind).toBe('same')
    expect(dec.same(1, 7)).toEqual(page)

    page[10] = 1
    page[200] = 2
    r = enc.encodePage(1, 7, page)
    expect(r.kind).toBe('delta')
    expect(r.delta.length).toBeLessThan(PS)
    expect(dec.delta(1, 7, r.delta)).toEqual(page)

    for (let i = 0; i < PS; i += 2) page[i] ^= 0xff
    r = enc.encodePage(1, 7, page)
    expect(r.kind).toBe('full')
    dec.full(1, 7, page)
    expect(enc.stats.overflows).toBe(1)
    expect(dec.stats).toEqual(enc.stats)
    expect(enc.cache.sameContents(dec.cache)).toBe(true)
  })

  it('a delta is never as long as the page', () => {
    const enc = new PageDeltaEncoder({ cache, mode, kernel })
    const a = new Uint8Array(PS)
    enc.encodePage(0, 0, a)
    enc.encodePage(0, 1, a)
    const b = a.slice()
    b.fill(1, 2, PS - 1) // one changed run of 253 bytes: canonical 1 + 2 + 253 = 256 → does not fit
    expect(enc.encodePage(0, 0, b).kind).toBe('full')
    const c = b.slice()
    c[2] = 0 // run of 252 → 255 bytes < 256
    expect(enc.encodePage(0, 1, c).kind).toBe(mode === 'canonical' ? 'full' : 'delta') // canonical: L+2 rule
  })

  it('decoder: CacheDesyncError for unknown keys, invalid delta leaves the cache intact', () => {
    const dec = new PageDeltaDecoder({ cache, kernel })
    expect(() => dec.same(0, 1)).toThrow(CacheDesyncError)
    expect(() => dec.delta(0, 1, Uint8Array.of(0, 1, 5))).toThrow(
      /page cache desync: delta frame for block 0 page 1/,
    )
    const page = new Uint8Array(PS).fill(4)
    dec.full(0, 1, page)
    expect(() => dec.delta(0, 1, Uint8Array.of(0x00, 0x01, 0x07, 0x05))).toThrow(XbzrleDecodeError)
    expect(dec.same(0, 1)).toEqual(page)
  })

  it('applyZero inserts or overwrites; applyForeignDelta applies, ignores or invalidates', () => {
    const enc = new PageDeltaEncoder({ cache, mode, kernel })
    enc.applyZero(2, 3, 0)
    const p = new Uint8Array(PS)
    p[5] = 1
    expect(enc.encodePage(2, 3, p).kind).toBe('delta') // small delta against the zero page
    expect(enc.applyForeignDelta(2, 99, Uint8Array.of(0, 1, 1))).toBe('not-cached')
    expect(enc.applyForeignDelta(2, 3, Uint8Array.of(0x06, 0x01, 0x02))).toBe('applied')
    p[6] = 2
    expect(enc.encodePage(2, 3, p).kind).toBe('same')
    expect(enc.applyForeignDelta(2, 3, Uint8Array.of(0x05))).toBe('invalid')
    expect(enc.cache.find(2, 3)).toBe(-1)
  })
})

type Op =
  | { t: 'page'; b: number; p: number; edits: [number, number][] }
  | { t: 'zero'; b: number; p: number; fill: number }
  | { t: 'foreign'; b: number; p: number; edits: [number, number][]; junk?: boolean }
  | { t: 'invalidate'; b: number; p: number }
  | { t: 'reset' }

const key = { b: fc.nat(1), p: fc.nat(40) }
const edits = fc.array(fc.tuple(fc.nat(PS - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 40 })
const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ t: fc.constant('page' as const), ...key, edits }) },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('zero' as const), ...key, fill: fc.constantFrom(0, 0xff) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('foreign' as const), ...key, edits, junk: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('invalidate' as const), ...key }) },
  { weight: 1, arbitrary: fc.constant({ t: 'reset' as const }) },
)

/**
 * Drives an encoder (kernel `ek`, `mode`) and a decoder (kernel `dk`) of the same cache geometry with `ops`, keeping
 * the truth (what each page holds; page p starts as bytes p). Checks that the decoder gives back every page the
 * encoder encoded, that both take the same foreign deltas, that their caches mirror each other after every op
 * (lazy fill slots included) and, at the end, that every cached page is the truth.
 */
function checkMirror(ops: readonly Op[], ek: KernelName, dk: KernelName, mode: EncodeMode): void {
  const enc = new PageDeltaEncoder({ cache, mode, kernel: ek })
  const dec = new PageDeltaDecoder({ cache, kernel: dk })
  const truth = new Map<number, Uint8Array>()
  const get = (b: number, p: number) => {
    let v = truth.get(b * 1000 + p)
    if (!v) {
      v = new Uint8Array(PS).fill(p)
      truth.set(b * 1000 + p, v)
    }
    return v
  }
  for (const op of ops) {
    if (op.t === 'page') {
      const page = get(op.b, op.p)
      for (const [i, v] of op.edits) page[i] = v
      const r = enc.encodePage(op.b, op.p, page)
      if (r.kind === 'full') dec.full(op.b, op.p, page)
      else if (r.kind === 'same') expect(dec.same(op.b, op.p)).toEqual(page)
      else expect(dec.delta(op.b, op.p, r.delta)).toEqual(page)
    } else if (op.t === 'zero') {
      get(op.b, op.p).fill(op.fill)
      enc.applyZero(op.b, op.p, op.fill)
      dec.applyZero(op.b, op.p, op.fill)
    } else if (op.t === 'foreign') {
      const old = get(op.b, op.p)
      const cur = old.slice()
      for (const [i, v] of op.edits) cur[i] = v
      const d = new Uint8Array(2 * PS)
      const n = tsKernel.encode(old, cur, d)
      const delta = op.junk ? Uint8Array.of(0x00, 0x01, 0x07, 0x05) : d.subarray(0, Math.max(n, 0))
      const outcome = enc.applyForeignDelta(op.b, op.p, delta)
      expect(dec.applyForeignDelta(op.b, op.p, delta)).toBe(outcome)
      if (outcome === 'applied') old.set(cur)
    } else if (op.t === 'invalidate') {
      enc.invalidate(op.b, op.p)
      dec.invalidate(op.b, op.p)
    } else {
      enc.reset()
      dec.reset()
    }
    expect(enc.cache.lazyFillCount).toBe(dec.cache.lazyFillCount)
  }
  expect(enc.cache.sameContents(dec.cache)).toBe(true)
  expect(dec.stats).toEqual(enc.stats)
  for (const [slot, b, p] of enc.cache.entries()) expect(enc.cache.pageView(slot)).toEqual(get(b, p))
  for (const [slot, b, p] of dec.cache.entries()) expect(dec.cache.pageView(slot)).toEqual(get(b, p))
}

describe('encoder and decoder caches mirror each other', () => {
  it.each([
    ['wasm', 'wasm', 'canonical'],
    ['ts', 'wasm', 'compact'],
    ['wasm', 'ts', 'compact'],
    ['ts', 'ts', 'canonical'],
  ] as [KernelName, KernelName, EncodeMode][])('enc %s / dec %s / %s', (ek, dk, mode) => {
    fc.assert(
      fc.property(fc.array(arbOp, { maxLength: 300 }), (ops) => checkMirror(ops, ek, dk, mode)),
      { numRuns: 150 },
    )
  })
})

describe.each([
  ['wasm', 'canonical'],
  ['ts', 'compact'],
] as [KernelName, EncodeMode][])('lazy fill slots (ZERO records) %s %s', (kernel, mode) => {
  it('applyZero writes no page bytes; the logical page is the fill', () => {
    const enc = new PageDeltaEncoder({ cache, mode, kernel })
    const c = enc.cache
    const page = new Uint8Array(PS).fill(0x33)
    enc.encodePage(0, 1, page)
    const slot = c.find(0, 1)
    enc.applyZero(0, 1, 0)
    expect(c.fillOf(slot)).toBe(0)
    expect(c.rawPageView(slot)[0]).toBe(0x33) // frame untouched (stale)
    expect(c.pageView(slot)).toEqual(new Uint8Array(PS)) // materialised on demand
    expect(c.fillOf(slot)).toBe(-1)
    enc.applyZero(0, 2, 0x1ff) // fill & 0xff, like Uint8Array.fill
    expect(c.fillOf(c.find(0, 2))).toBe(0xff)
  })

  it('delta against a lazy fill slot, both sides', () => {
    for (const fill of [0, 0xff, 7]) {
      const enc = new PageDeltaEncoder({ cache, mode, kernel })
      const dec = new PageDeltaDecoder({ cache, kernel })
      // A page cached with other contents first, so a stale frame would show.
      const junk = new Uint8Array(PS).fill(0x5a)
      enc.encodePage(3, 9, junk)
      dec.full(3, 9, junk)
      enc.applyZero(3, 9, fill)
      dec.applyZero(3, 9, fill)
      expect(enc.cache.sameContents(dec.cache)).toBe(true)
      const page = new Uint8Array(PS).fill(fill)
      page[17] = fill ^ 1
      page[200] = fill ^ 2
      const r = enc.encodePage(3, 9, page)
      expect(r.kind).toBe('delta')
      expect(r.delta.length).toBeLessThan(10)
      expect(enc.cache.fillOf(enc.cache.find(3, 9))).toBe(-1)
      expect(dec.delta(3, 9, r.delta)).toEqual(page)
      expect(dec.cache.fillOf(dec.cache.find(3, 9))).toBe(-1)
      expect(enc.cache.pageView(enc.cache.find(3, 9))).toEqual(page)
      expect(enc.cache.sameContents(dec.cache)).toBe(true)
      expect(dec.stats).toEqual(enc.stats)
    }
  })

  it('SAME on a lazy fill slot stays lazy on both sides; overflow replaces it', () => {
    const enc = new PageDeltaEncoder({ cache, mode, kernel })
    const dec = new PageDeltaDecoder({ cache, kernel })
    enc.applyZero(1, 4, 0xff)
    dec.applyZero(1, 4, 0xff)
    enc.applyZero(1, 5, 0)
    dec.applyZero(1, 5, 0)
    expect(enc.encodePage(1, 4, new Uint8Array(PS).fill(0xff)).kind).toBe('same')
    expect(dec.same(1, 4)).toEqual(new Uint8Array(PS).fill(0xff))
    expect(enc.encodePage(1, 5, new Uint8Array(PS)).kind).toBe('same')
    expect(dec.same(1, 5)).toEqual(new Uint8Array(PS))
    expect(enc.encodePage(1, 4, new Uint8Array(PS).fill(0xff)).kind).toBe('same')
    expect(dec.same(1, 4)).toEqual(new Uint8Array(PS).fill(0xff)) // the fill frame switches back
    for (const side of [enc.cache, dec.cache]) {
      expect(side.fillOf(side.find(1, 4))).toBe(0xff)
      expect(side.fillOf(side.find(1, 5))).toBe(0)
      expect(side.lazyFillCount).toBe(2)
    }
    const random = new Uint8Array(PS)
    for (let i = 0; i < PS; i++) random[i] = (i * 37 + 11) & 0xff
    expect(enc.encodePage(1, 5, random).kind).toBe('full')
    dec.full(1, 5, random)
    expect(enc.stats.overflows).toBe(1)
    expect(dec.cache.pageView(dec.cache.find(1, 5))).toEqual(random)
    expect(enc.cache.lazyFillCount).toBe(1)
    expect(enc.cache.sameContents(dec.cache)).toBe(true)
    expect(dec.stats).toEqual(enc.stats)
  })

  it('a lazy fill slot is evicted like any page; its successor holds its own bytes', () => {
    // One set of 4 ways, protect window 8 * 4 = 32 lookups.
    const small = { pageSize: PS, cacheBytes: 4 * PS, ways: 4 }
    const enc = new PageDeltaEncoder({ cache: small, mode, kernel })
    const dec = new PageDeltaDecoder({ cache: small, kernel })
    for (let p = 0; p < 4; p++) {
      enc.applyZero(0, p, 0)
      dec.applyZero(0, p, 0)
    }
    expect(enc.cache.lazyFillCount).toBe(4)
    for (let i = 0; i < 31; i++) {
      // time passes: misses refused by the age rule (31 lookups < 32), nothing evicted yet
      enc.encodePage(2, 1000 + i, new Uint8Array(PS).fill(i))
      dec.full(2, 1000 + i, new Uint8Array(PS).fill(i))
    }
    const page = new Uint8Array(PS).fill(0x42)
    expect(enc.encodePage(1, 1, page).kind).toBe('full')
    dec.full(1, 1, page)
    expect(enc.stats.refused).toBe(31)
    expect(enc.stats.evictions).toBe(1)
    expect(enc.cache.lazyFillCount).toBe(3)
    expect(enc.cache.find(0, 0)).toBe(-1) // all stamped 0: the lowest way goes
    const slot = enc.cache.find(1, 1)
    expect(slot).toBeGreaterThanOrEqual(0)
    expect(enc.cache.fillOf(slot)).toBe(-1)
    expect(enc.cache.pageView(slot)).toEqual(page)
    expect(dec.cache.pageView(dec.cache.find(1, 1))).toEqual(page)
    expect(enc.cache.sameContents(dec.cache)).toBe(true)
    expect(dec.stats).toEqual(enc.stats)
  })

  it('applyForeignDelta on a lazy fill slot applies to the fill page', () => {
    const enc = new PageDeltaEncoder({ cache, mode, kernel })
    enc.applyZero(2, 3, 0xff)
    expect(enc.applyForeignDelta(2, 3, Uint8Array.of(0x06, 0x01, 0x02))).toBe('applied')
    const want = new Uint8Array(PS).fill(0xff)
    want[6] = 2
    expect(enc.encodePage(2, 3, want).kind).toBe('same')
    enc.applyZero(2, 3, 0)
    expect(enc.applyForeignDelta(2, 3, Uint8Array.of(0x05))).toBe('invalid')
    expect(enc.cache.find(2, 3)).toBe(-1)
  })
})

describe('mirroring with many ZERO records mixed in', () => {
  const zkey = { b: fc.nat(1), p: fc.nat(60) }
  const arbZ: fc.Arbitrary<Op> = fc.oneof(
    { weight: 8, arbitrary: fc.record({ t: fc.constant('page' as const), ...zkey, edits }) },
    {
      weight: 8,
      arbitrary: fc.record({
        t: fc.constant('zero' as const),
        ...zkey,
        fill: fc.constantFrom(0, 0, 0, 0xff, 7),
      }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('foreign' as const), ...zkey, edits }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('invalidate' as const), ...zkey }) },
  )
  it.each([
    ['wasm', 'wasm', 'canonical'],
    ['ts', 'wasm', 'compact'],
    ['wasm', 'ts', 'canonical'],
  ] as [KernelName, KernelName, EncodeMode][])('enc %s / dec %s / %s', (ek, dk, mode) => {
    fc.assert(
      fc.property(fc.array(arbZ, { maxLength: 400 }), (ops) => checkMirror(ops, ek, dk, mode)),
      { numRuns: 150 },
    )
  })
})
