import { Buffer } from 'node:buffer'
import { FrameReader } from '@xbzrle/protocol'
import { describe, expect, it } from 'vitest'
import { SimulatedGuest, WORKLOADS } from '../simulate/simulated-guest.js'
import { type FixtureName, loadFixture } from '../test-fixtures.js'
import { BYPASS_MARGIN, type BypassInput, BypassMeter, type BypassOptions, chooseBypass } from './bypass.js'
import { type EncoderOptions, XbzrleEncoder } from './encoder.js'
import { roundTrip } from './test-round-trip.js'

const MiB = 1024 * 1024

describe('chooseBypass', () => {
  const base: BypassInput = {
    drainRate: undefined,
    pagesNsPerByte: 6,
    bypassNsPerByte: 3,
    pagesRatio: 0.4,
    bypassRatio: 1,
    headroom: 1.25,
  }

  it('bypasses a CPU-bound encoder when the bypass is at least BYPASS_MARGIN faster', () => {
    expect(chooseBypass(base)).toBe(true) // no link limit: 3.75 vs 7.5 ns per byte
    expect(chooseBypass({ ...base, bypassNsPerByte: 6 / BYPASS_MARGIN })).toBe(true)
    expect(chooseBypass({ ...base, bypassNsPerByte: 6 / BYPASS_MARGIN + 0.01 })).toBe(false)
    expect(chooseBypass({ ...base, drainRate: Number.POSITIVE_INFINITY })).toBe(true)
    expect(chooseBypass({ ...base, drainRate: 0 })).toBe(true)
  })

  it('keeps the page path where the link is the limit: it sends fewer bytes', () => {
    // 10 MB/s: page path max(7.5, 40) = 40 ns, bypass max(3.75, 100) = 100 ns per input byte.
    expect(chooseBypass({ ...base, drainRate: 10e6 })).toBe(false)
    // 1 GB/s: page path max(7.5, 0.4) = 7.5 ns, bypass max(3.75, 1) = 3.75 ns.
    expect(chooseBypass({ ...base, drainRate: 1e9 })).toBe(true)
    expect(chooseBypass({ ...base, drainRate: 200e6 })).toBe(true) // bypass 5 ns, page path 7.5 ns
    expect(chooseBypass({ ...base, drainRate: 150e6 })).toBe(false) // bypass 6.7 ns × 1.5 > 7.5 ns
  })
})

/** Drives a meter as an encoder would: windows of `bytes`, each costing ns/ratio per byte by mode. */
function drive(
  m: BypassMeter,
  windows: number,
  cost: (bypass: boolean) => { ns: number; ratio: number },
  drain: (w: number) => number | undefined,
) {
  let out = 0
  const chunk = 256 * 1024
  for (let w = 0; w < windows; w++) {
    for (let i = 0; i < 4; i++) {
      m.beginPush(
        drain(w),
        () => out,
        () => {},
      )
      const c = cost(m.bypass)
      m.endPush(chunk, chunk * c.ns)
      out += Math.round(chunk * c.ratio)
    }
  }
}

describe('BypassMeter', () => {
  const cheap = (bypass: boolean) => (bypass ? { ns: 2, ratio: 1 } : { ns: 6, ratio: 0.4 })

  it('measures the page path first, then bypasses a CPU-bound encoder, probing the page path every 16 windows', () => {
    const m = new BypassMeter({ windowBytes: MiB })
    m.trace = []
    drive(m, 60, cheap, () => undefined)
    const t = m.trace.map((b) => (b ? 'B' : '.')).join('')
    // trace[k] is the mode of window k + 1. Window 0 is start-up (not measured), windows 1 and 2 measure the page
    // path (each decision sees the windows closed before it); window 4 is the first to bypass.
    expect(t).toMatch(/^\.\.\.B{16}\.B{16}\.B{16}\./)
    expect(m.windows.bypass).toBeGreaterThan(40)
  })

  it('goes back to the page path when the link becomes the limit', () => {
    const m = new BypassMeter({ windowBytes: MiB })
    m.trace = []
    drive(m, 40, cheap, (w) => (w < 20 ? undefined : 20e6))
    const t = m.trace.map((b) => (b ? 'B' : '.')).join('')
    expect(t.slice(0, 4)).toBe('...B')
    // From window 20 the link drains 20 MB/s: page path 20 ns, bypass 50 ns per input byte.
    expect(t.slice(19)).toBe('.'.repeat(t.length - 19))
  })

  it('decides the same given the same measurements (injected clock and drain rates)', () => {
    const run = () => {
      const m = new BypassMeter({ windowBytes: MiB })
      m.trace = []
      let k = 0
      drive(
        m,
        50,
        (b) => ({ ns: (b ? 2 : 5) + ((k++ * 7) % 5) / 2, ratio: b ? 0.9 : 0.35 }),
        (w) => (w % 9 < 5 ? undefined : 30e6 + w * 1e6),
      )
      return m.trace
    }
    const a = run()
    expect(a).toEqual(run())
    expect(a).toContain(true)
    expect(a).toContain(false)
  })

  it('forced modes', () => {
    for (const [force, want] of [
      ['always', true],
      ['never', false],
    ] as const) {
      const m = new BypassMeter({ windowBytes: MiB, force })
      m.trace = []
      drive(m, 10, cheap, () => undefined)
      expect(new Set(m.trace)).toEqual(new Set([want]))
    }
  })
})

/** Encode then decode, in chunks unlike the captures' test (smaller on the encoder side). */
const trip = (data: Uint8Array, options: EncoderOptions) =>
  roundTrip(data, options, { encode: [5, 96 * 1024], decode: [9, 1 << 20] })

/** Frame kinds in an encoded stream, counted. */
function frameKinds(encoded: Uint8Array): Map<string, number> {
  const kinds = new Map<string, number>()
  const r = new FrameReader()
  r.push(encoded)
  for (let item = r.next(); item !== undefined; item = r.next()) {
    if (item.type !== 'batch') continue
    for (const f of item.batch.frames()) kinds.set(f.kind, (kinds.get(f.kind) ?? 0) + 1)
  }
  r.finish()
  return kinds
}

describe('encoder with the bypass: decode gives the exact input', () => {
  const guest = () => new SimulatedGuest({ memMiB: 8, passes: 5, seed: 11, dirtyFraction: 0.4 }).stream()
  // Mixed windows of 64 KiB: pages cached, then bypassed (their copies dropped), then deltas again.
  const mixed: BypassOptions = { windowBytes: 64 * 1024, force: (w) => w % 3 === 1 }
  const cases: { name: string; data: () => Uint8Array; xbzrle?: boolean }[] = [
    { name: 'simulated guest, 5 passes', data: () => Buffer.concat([...guest()]) },
    {
      name: 'pc-xbzrle-dirty.mig (QEMU xbzrle)',
      data: () => loadFixture('pc-xbzrle-dirty.mig'),
      xbzrle: true,
    },
    ...(['pc-idle.mig', 'postcopy-c0.s2d', 'multifd-c0.s2d'] as FixtureName[]).map((f) => ({
      name: f,
      data: () => loadFixture(f),
    })),
  ]

  it.for(cases)('$name', ({ data: make, xbzrle }) => {
    const data = make()
    const plain = trip(data, { bypass: false })
    expect(plain.decoded.equals(data)).toBe(true)
    expect(plain.stats.pages.bypass).toBe(0)

    const always = trip(data, { bypass: { force: 'always' } })
    expect(always.decoded.equals(data)).toBe(true)
    expect(always.stats.pages.bypass).toBeGreaterThan(0)
    expect(always.stats.pages.full + always.stats.pages.delta + always.stats.pages.same).toBe(0)

    const mix = trip(data, { bypass: mixed })
    expect(mix.decoded.equals(data)).toBe(true)
    if (data.length > 4 * 64 * 1024) {
      expect(mix.stats.pages.bypass).toBeGreaterThan(0)
      expect(mix.stats.pages.full + mix.stats.pages.zero).toBeGreaterThan(0)
    }
    if (xbzrle) expect(mix.stats.pages.foreign).toBeGreaterThan(0)
  })

  it('random mixes of bypassed and page-path windows, every workload, any window size: exact', () => {
    let seed = 0x5eed
    const rand = () => {
      seed ^= seed << 13
      seed ^= seed >>> 17
      seed ^= seed << 5
      return (seed >>> 0) / 2 ** 32
    }
    for (const workload of WORKLOADS) {
      const data = Buffer.concat([
        ...new SimulatedGuest({ memMiB: 4, passes: 4, seed: 3, dirtyFraction: 0.5, workload }).stream(),
      ])
      const p = rand()
      const pattern = Array.from({ length: 4096 }, () => rand() < p)
      const r = trip(data, {
        bypass: { windowBytes: 4096 * (1 + Math.floor(rand() * 64)), force: (w) => pattern[w % 4096]! },
        formatVersion: 1 + Math.floor(rand() * 3),
      })
      expect(r.decoded.equals(data), `${workload}, bypass share ${p.toFixed(2)}`).toBe(true)
    }
  })

  it('drops the cached copy of a bypassed page on both sides, and deltas after it still decode', () => {
    const data = Buffer.concat([...guest()])
    const r = trip(data, { bypass: mixed, formatVersion: 1 })
    expect(r.decoded.equals(data)).toBe(true)
    const kinds = frameKinds(r.encoded)
    expect(kinds.get('invalidate') ?? 0).toBeGreaterThan(0)
    expect(kinds.get('delta') ?? 0).toBeGreaterThan(0)
    expect(r.stats.pages.delta).toBeGreaterThan(0)
  })

  it('is on by default only with auto compression, and never with a base or unparsed pages', () => {
    expect(new XbzrleEncoder(() => {}, { compression: 'auto' }).bypass).toBeDefined()
    expect(new XbzrleEncoder(() => {}, { compression: 'auto', bypass: false }).bypass).toBeUndefined()
    expect(new XbzrleEncoder(() => {}, {}).bypass).toBeUndefined()
    expect(new XbzrleEncoder(() => {}, { bypass: { force: 'always' } }).bypass).toBeDefined()
    expect(new XbzrleEncoder(() => {}, { pages: false, compression: 'auto' }).bypass).toBeUndefined()
  })
})
