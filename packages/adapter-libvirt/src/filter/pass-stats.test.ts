import { Buffer } from 'node:buffer'
import { describe, expect, it } from 'vitest'
import { SimulatedGuest } from '../simulate/simulated-guest.js'
import { XbzrleDecoder } from './decoder.js'
import { XbzrleEncoder } from './encoder.js'
import { PassDetector, PassRecorder, type PassStats, sumPasses, zeroCounters } from './pass-stats.js'

describe('PassDetector', () => {
  it('starts a pass at the first page repeated within the pass, counts re-sends from earlier passes', () => {
    const d = new PassDetector()
    d.setBlock(0, 8)
    const seq = [0, 1, 2, 3, 1, 2, 5, 2, 7]
    const passOfPage: number[] = []
    for (const p of seq) {
      if (d.isRepeat(0, p)) d.next()
      d.mark(0, p)
      passOfPage.push(d.pass)
    }
    expect(passOfPage).toEqual([1, 1, 1, 1, 2, 2, 2, 3, 3])
    // 1, 2 (pass 2) and 2 (pass 3) had been sent before
    expect(d.resent).toBe(3)
  })

  it("follows QEMU's search cursor: a second wrap or a page past the pass's start after the wrap is a new pass", () => {
    const run = (seq: Array<[number, number]>, ordered = true) => {
      const d = new PassDetector()
      d.setBlock(0, 8)
      d.setBlock(1, 8) // positions 8..15
      d.ordered = ordered
      return seq.map(([b, p]) => {
        if (d.isRepeat(b, p)) d.next()
        d.mark(b, p)
        return d.pass
      })
    }
    // start at block 1 page 2 (position 10), run to the end, wrap to block 0, stay below 10: one pass
    expect(
      run([
        [1, 2],
        [1, 5],
        [0, 1],
        [0, 7],
        [1, 1],
      ]),
    ).toEqual([1, 1, 1, 1, 1])
    // after the wrap, position 10 again (a different page would do too) needs a sync
    expect(
      run([
        [1, 2],
        [1, 5],
        [0, 1],
        [1, 3],
      ]),
    ).toEqual([1, 1, 1, 2])
    // a second wrap needs a sync
    expect(
      run([
        [1, 2],
        [0, 1],
        [0, 6],
        [0, 3],
      ]),
    ).toEqual([1, 1, 1, 2])
    // without the order rule (postcopy), only repeats count
    expect(
      run(
        [
          [1, 2],
          [0, 1],
          [0, 6],
          [0, 3],
        ],
        false,
      ),
    ).toEqual([1, 1, 1, 1])
  })

  it('growing (decoder side, no block list): tracks any key, repeats only', () => {
    const d = new PassDetector(true)
    const passes = [
      [3, 5000],
      [0, 1],
      [3, 7],
      [3, 5000],
      [0, 2],
      [0, 1],
    ].map(([b, p]) => {
      if (d.isRepeat(b!, p!)) d.next()
      d.mark(b!, p!)
      return d.pass
    })
    expect(passes).toEqual([1, 1, 1, 2, 2, 2])
    expect(d.resent).toBe(2)
  })

  it('ignores pages of unknown blocks and beyond a block', () => {
    const d = new PassDetector()
    d.setBlock(0, 2)
    for (const [b, p] of [
      [1, 0],
      [1, 0],
      [0, 5],
      [0, 5],
    ] as const) {
      expect(d.isRepeat(b, p)).toBe(false)
      d.mark(b, p)
    }
    expect(d.pass).toBe(1)
    expect(d.resent).toBe(0)
  })
})

describe('PassRecorder', () => {
  it('splits cumulative counters into per-pass figures and tells the listener', () => {
    let t = 0
    const events: string[] = []
    const r = new PassRecorder(
      {
        passStart: (n) => events.push(`start ${n}`),
        passEnd: (p) => events.push(`end ${p.pass}`),
      },
      () => t,
    )
    const c = zeroCounters()
    r.start()
    t = 10
    Object.assign(c, { bytesIn: 100, bytesOut: 40, full: 3, zero: 1, cacheMisses: 3 })
    const p1 = r.cut(c)
    t = 15
    Object.assign(c, {
      bytesIn: 150,
      bytesOut: 50,
      full: 3,
      delta: 2,
      zero: 1,
      resent: 2,
      cacheHits: 2,
      cacheMisses: 3,
    })
    const p2 = r.finish(c)!
    expect(events).toEqual(['start 1', 'end 1', 'start 2', 'end 2'])
    expect(p1).toMatchObject({ pass: 1, wallMs: 10, bytesIn: 100, bytesOut: 40, ratio: 0.4, final: false })
    expect(p1.pages).toEqual({ full: 3, delta: 0, same: 0, zero: 1, foreign: 0, other: 0, total: 4 })
    expect(p1.hitRate).toBe(0)
    expect(p2).toMatchObject({ pass: 2, startMs: 10, wallMs: 5, bytesIn: 50, bytesOut: 10, final: true })
    expect(p2.resentShare).toBe(1)
    expect(p2.hitRate).toBe(1)
    expect(sumPasses(r.passes)).toEqual(c)
    expect(r.finish(c)).toBe(p2) // idempotent
    expect(r.passes).toHaveLength(2)
  })
})

describe('XbzrleEncoder passes', () => {
  it.each([1, 5])(
    'a simulated guest with %i dirty passes: one pass each, an empty one before the END section, summing to the totals',
    (n) => {
      const guest = new SimulatedGuest({ memMiB: 8, passes: n, seed: 3, pagesPerSection: 300 })
      const out: Uint8Array[] = []
      const ends: PassStats[] = []
      const starts: number[] = []
      const enc = new XbzrleEncoder((c) => out.push(c), {
        passListener: { passStart: (p) => starts.push(p), passEnd: (p) => ends.push(p) },
      })
      const input: Uint8Array[] = []
      for (const c of guest.stream()) {
        input.push(c.slice())
        enc.push(c)
      }
      enc.finish()
      const passes = enc.passes
      // n + 1 passes of pages, the last in the END section, and QEMU's pre-completion sync (empty) before it
      expect(passes).toHaveLength(n + 2)
      expect(passes.at(-2)!.pages.total).toBe(0)
      expect(passes.at(-2)!.bytesIn).toBe(0)
      expect(ends).toEqual(passes)
      expect(starts).toEqual(passes.map((p) => p.pass))
      expect(passes.map((p) => p.pass)).toEqual(passes.map((_, i) => i + 1))
      expect(passes.at(-1)!.final).toBe(true)
      const s = enc.stats
      const sum = sumPasses(passes)
      expect(sum.bytesIn).toBe(s.bytesIn)
      expect(sum.bytesOut).toBe(s.bytesOut)
      expect(sum.full).toBe(s.pages.full)
      expect(sum.delta + sum.same).toBe(s.pages.delta + s.pages.same)
      expect(sum.cacheHits).toBe(s.cache!.hits)
      // Pass 1 sends every page once; every later page is a re-send.
      const ramPages = s.qemu.blocks.reduce((a, b) => a + b.usedLength / 4096, 0)
      expect(passes[0]!.pages.total).toBe(ramPages)
      expect(passes[0]!.resentPages).toBe(0)
      for (const p of [...passes.slice(1, -2), passes.at(-1)!]) {
        expect(p.pages.total).toBeGreaterThan(0)
        expect(p.resentShare).toBe(1)
      }
      expect(sum.resent).toBe(s.qemu.resentPages)
      // The pass boundary flushes a batch: the output still decodes to the input.
      const back: Uint8Array[] = []
      const dec = new XbzrleDecoder((c) => back.push(c))
      for (const c of out) dec.push(c)
      dec.finish()
      expect(Buffer.concat(back).equals(Buffer.concat(input))).toBe(true)
    },
  )

  it('a stream that is not QEMU is one pass', () => {
    const enc = new XbzrleEncoder(() => {})
    enc.push(new Uint8Array(10_000).fill(7))
    enc.finish()
    expect(enc.passes).toHaveLength(1)
    expect(enc.passes[0]).toMatchObject({ pass: 1, bytesIn: 10_000, final: true })
    expect(enc.passes[0]!.pages.total).toBe(0)
  })
})
