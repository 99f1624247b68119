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
  | { t: 'foreign'; b: number; p: number; edits: [number, number][]; junk: boolean }
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

describe('encoder and decoder caches mirror each other', () => {
  it.each([
    ['wasm', 'wasm', 'canonical'],
    ['ts', 'wasm', 'compact'],
    ['wasm', 'ts', 'compact'],
    ['ts', 'ts', 'canonical'],
  ] as [KernelName, KernelName, EncodeMode][])('enc %s / dec %s / %s', (ek, dk, mode) => {
    fc.assert(
      fc.property(fc.array(arbOp, { maxLength: 300 }), (ops) => {
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
            expect(enc.applyForeignDelta(op.b, op.p, delta)).toBe(dec.applyForeignDelta(op.b, op.p, delta))
          } else if (op.t === 'invalidate') {
            enc.invalidate(op.b, op.p)
            dec.invalidate(op.b, op.p)
          } else {
            enc.reset()
            dec.reset()
          }
        }
        expect(enc.cache.sameContents(dec.cache)).toBe(true)
        expect(dec.stats).toEqual(enc.stats)
      }),
      { numRuns: 150 },
    )
  })
})
