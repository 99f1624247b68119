import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { directMappedHitRate, makeTrace, setAssociativeHitRate } from './cache-model.testutil.js'
import { cacheParameters, hashKey, PageCache } from './page-cache.js'

type Op = ['lookup' | 'insert' | 'invalidate', number, number] | ['reset']

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.tuple(fc.constantFrom('lookup' as const, 'insert' as const), fc.nat(3), fc.nat(200)),
  },
  { weight: 2, arbitrary: fc.tuple(fc.constant('invalidate' as const), fc.nat(3), fc.nat(200)) },
  { weight: 1, arbitrary: fc.constant(['reset'] as Op) },
)

function run(c: PageCache, ops: Op[]): void {
  for (const op of ops) {
    if (op[0] === 'reset') c.reset()
    else if (op[0] === 'lookup') c.lookup(op[1], op[2])
    else if (op[0] === 'invalidate') c.invalidate(op[1], op[2])
    else {
      const s = c.insert(op[1], op[2])
      c.pageView(s).fill((op[1] * 31 + op[2]) & 0xff)
    }
  }
}

describe('PageCache', () => {
  it('derives power-of-two slots from the byte budget and exposes its parameters', () => {
    const c = new PageCache({ cacheBytes: 100 * 4096 })
    expect(c.slots).toBe(64)
    expect(c.sets).toBe(8)
    expect(c.slots * c.pageSize).toBeLessThanOrEqual(100 * 4096)
    expect(c.parameters).toEqual({ pageSize: 4096, cacheBytes: 100 * 4096, ways: 8, policy: 'lru-age-v1' })
    // The memory is sized once: slots + spare frame + delta scratch.
    expect(c.memory.buffer.byteLength).toBeGreaterThanOrEqual(65 * 4096 + 2 * 4096)
    expect(() => new PageCache({ cacheBytes: 4096 * 4, ways: 8 })).toThrow(RangeError)
    expect(() => cacheParameters({ cacheBytes: 1 << 20, ways: 6 })).toThrow(RangeError)
    expect(() => cacheParameters({ cacheBytes: 1 << 20, pageSize: 100 })).toThrow(RangeError)
  })

  it('hash is fixed (format promise)', () => {
    expect([hashKey(0, 0), hashKey(0, 1), hashKey(1, 0), hashKey(3, 123456)]).toMatchInlineSnapshot(`
      [
        301794027,
        2980047484,
        3140136926,
        3684991003,
      ]
    `)
  })

  it('lookup counts hits and misses; insert returns a fillable slot', () => {
    const c = new PageCache({ cacheBytes: 64 * 4096 })
    expect(c.lookup(0, 5)).toBe(-1)
    const s = c.insert(0, 5)
    c.pageView(s).fill(7)
    expect(c.lookup(0, 5)).toBe(s)
    expect(c.pageView(c.lookup(0, 5))[100]).toBe(7)
    expect(c.stats).toMatchObject({ hits: 2, misses: 1, evictions: 0 })
    expect(c.insert(0, 5)).toBe(s)
    expect(c.invalidate(0, 5)).toBe(true)
    expect(c.invalidate(0, 5)).toBe(false)
    expect(c.find(0, 5)).toBe(-1)
  })

  it('never holds more pages than its slots and evicts within a set only', () => {
    const c = new PageCache({ cacheBytes: 64 * 4096, ways: 8 })
    for (let p = 0; p < 5000; p++) if (c.lookup(0, p) < 0) c.insert(0, p)
    expect(c.size).toBe(64)
    expect(c.stats.evictions + c.stats.refused).toBe(5000 - 64)
    for (const [slot, b, p] of c.entries()) {
      expect(Math.floor(slot / 8)).toBe(hashKey(b, p) & 7)
    }
  })

  it('age rule: refuses to replace recently used pages, then evicts the least recently used', () => {
    const c = new PageCache({ cacheBytes: 8 * 4096, ways: 8 }) // one set, protect window 64 lookups
    expect(c.protectTicks).toBe(64)
    for (let p = 0; p < 8; p++) c.insert(0, p)
    for (let p = 0; p < 8; p++) if (p !== 5) c.lookup(0, p)
    expect(c.lookup(0, 100)).toBe(-1)
    expect(c.insert(0, 100)).toBe(-1) // everything used within the window
    expect(c.stats.refused).toBe(1)
    for (let i = 0; i < 64; i++) c.lookup(1, 1) // time passes (misses)
    expect(c.insert(0, 100)).toBeGreaterThanOrEqual(0)
    expect(c.find(0, 5)).toBe(-1) // page 5 was the least recently used
    expect(c.stats.evictions).toBe(1)
  })

  it('hot pages re-sent every round survive a sweep through the rest of the set', () => {
    const c = new PageCache({ cacheBytes: 8 * 4096, ways: 8 })
    let next = 1000
    for (let round = 0; round < 25; round++) {
      for (let p = 0; p < 4; p++) if (c.lookup(0, p) < 0) c.insert(0, p)
      for (let i = 0; i < 20; i++) if (c.lookup(0, next) < 0) c.insert(0, next++)
    }
    expect(c.stats.hits).toBe(4 * 24) // only the first round's hot pages miss
  })

  it('is deterministic: equal operation sequences give equal contents', () => {
    fc.assert(
      fc.property(fc.array(arbOp, { maxLength: 400 }), (ops) => {
        const a = new PageCache({ cacheBytes: 32 * 4096, ways: 4 })
        const b = new PageCache({ cacheBytes: 32 * 4096, ways: 4 })
        run(a, ops)
        run(b, ops)
        expect(a.sameContents(b)).toBe(true)
        expect([...a.entries()]).toEqual([...b.entries()])
        expect(a.stats).toEqual(b.stats)
      }),
      { numRuns: 200 },
    )
  })

  it('reset empties the cache', () => {
    const c = new PageCache({ cacheBytes: 16 * 4096, ways: 4 })
    for (let p = 0; p < 10; p++) c.insert(1, p)
    c.reset()
    expect(c.size).toBe(0)
    expect(c.lookup(1, 3)).toBe(-1)
  })

  it('rejects keys outside the documented ranges', () => {
    const c = new PageCache({ cacheBytes: 16 * 4096, ways: 4 })
    expect(() => c.lookup(-1, 0)).toThrow(RangeError)
    expect(() => c.lookup(0, 2 ** 32)).toThrow(RangeError)
    expect(() => c.insert(0x10000, 0)).toThrow(RangeError)
  })

  it('hit rate on a recorded trace is at least QEMU direct-mapped at the same memory', () => {
    const trace = makeTrace({})
    for (const mib of [4, 8, 16, 32]) {
      const cacheBytes = mib << 20
      const dm = directMappedHitRate(trace, cacheBytes / 4096)
      for (const ways of [8, 16]) {
        const sa = setAssociativeHitRate(trace, cacheBytes, ways)
        expect(sa.hits + sa.misses).toBe(dm.hits + dm.misses)
        expect(sa.rate).toBeGreaterThanOrEqual(dm.rate)
      }
    }
  })
})

describe('PageCache lazy fill slots', () => {
  it('setFill marks without writing; pageView materialises; writes and eviction clear the mark', () => {
    const c = new PageCache({ pageSize: 64, cacheBytes: 8 * 64, ways: 8 })
    c.lookup(0, 1)
    const s = c.insert(0, 1)
    c.writePage(s, new Uint8Array(64).fill(9))
    c.setFill(s, 3)
    expect(c.fillOf(s)).toBe(3)
    expect(c.rawPageView(s)[0]).toBe(9)
    expect(c.lazyFillCount).toBe(1)
    const other = new PageCache({ pageSize: 64, cacheBytes: 8 * 64, ways: 8 })
    other.lookup(0, 1)
    other.writePage(other.insert(0, 1), new Uint8Array(64).fill(3))
    expect(c.sameContents(other)).toBe(true) // lazy vs materialised, logically equal
    expect(other.sameContents(c)).toBe(true)
    other.setFill(other.find(0, 1), 4)
    expect(c.sameContents(other)).toBe(false) // lazy vs lazy, different fill
    expect(c.pageView(s)).toEqual(new Uint8Array(64).fill(3))
    expect(c.fillOf(s)).toBe(-1)
    c.setFill(s, 5)
    expect(c.pageOffset(s)).toBe(c.rawPageOffset(s)) // materialises too
    expect(c.bytes[c.rawPageOffset(s) + 63]).toBe(5)
    c.setFill(s, 6)
    c.invalidate(0, 1)
    expect(c.lazyFillCount).toBe(0)
    c.lookup(0, 1)
    const s2 = c.insert(0, 1)
    expect(c.fillOf(s2)).toBe(-1) // a fresh insert is never lazy
    c.setFill(s2, 1)
    c.reset()
    expect(c.fillOf(s2)).toBe(-1)
  })

  it('fill frame holds one byte at a time and is outside every slot', () => {
    const c = new PageCache({ pageSize: 64, cacheBytes: 8 * 64, ways: 8 })
    const off = c.fillPageOffset(0xaa)
    expect(c.fillPageView(0xaa)).toEqual(new Uint8Array(64).fill(0xaa))
    expect(c.fillPageView(0)).toEqual(new Uint8Array(64))
    for (let s = 0; s < c.slots; s++) {
      const o = c.rawPageOffset(s)
      expect(o + 64 <= off || o >= off + 64).toBe(true)
    }
    expect(off + 64 <= c.spareOffset() || off >= c.spareOffset() + 64).toBe(true)
    expect(off).toBeGreaterThanOrEqual(c.deltaOffset + c.deltaCapacity)
  })

  it('seedSlot (base images): the age rule does not apply, the least recently seeded page of a full set goes', () => {
    const c = new PageCache({ cacheBytes: 8 * 4096, ways: 8 }) // one set of 8 ways
    for (let i = 0; i < 8; i++) c.writePage(c.seedSlot(0, i), new Uint8Array(4096).fill(i))
    // a normal insert now is refused (every way was used within the age window)…
    expect(c.lookup(0, 100)).toBe(-1)
    expect(c.insertMissing(0, 100)).toBe(-1)
    // …a seeded page replaces the oldest one (page 0), and re-seeding a cached key keeps its slot
    const s = c.seedSlot(0, 8)
    expect(c.find(0, 0)).toBe(-1)
    expect(s).toBeGreaterThanOrEqual(0)
    expect(c.seedSlot(0, 3)).toBe(c.find(0, 3))
    expect(c.seedSlot(0, 9)).toBe(c.find(0, 9))
    expect(c.find(0, 1)).toBe(-1) // page 1 was the oldest after 0; 3 was refreshed
    expect(c.find(0, 3)).toBeGreaterThanOrEqual(0)
    expect(c.stats.hits + c.stats.misses).toBe(1) // only the lookup counted
  })
})
