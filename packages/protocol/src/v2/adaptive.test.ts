import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { concat, decodeStream, HEADER, qemuHdr, readStream, sameBytes } from '../test-util.js'
import { FrameWriter } from '../writer.js'
import {
  AdaptiveCompression,
  type BatchCodecOption,
  type ChoiceInput,
  chooseBatchCodec,
  defaultLadder,
  TIE_FACTOR,
} from './adaptive.js'
import { type Compressor, getCompressor, isCompressorAvailable } from './codecs.js'

const MB = 1e6
const measures = [
  { nsPerByte: 0, ratio: 1 },
  { nsPerByte: 5, ratio: 0.58 },
  { nsPerByte: 9, ratio: 0.45 },
]
const input = (drainRate: number | undefined, upstreamNsPerByte = 0): ChoiceInput => ({
  drainRate,
  upstreamNsPerByte,
  options: measures,
  headroom: 1.25,
})

describe('chooseBatchCodec (the --compress auto rule)', () => {
  it('stores plain when the link is not the limit (no drain measured, or an infinite one)', () => {
    expect(chooseBatchCodec(input(undefined))).toBe(0)
    expect(chooseBatchCodec(input(Number.POSITIVE_INFINITY))).toBe(0)
    expect(chooseBatchCodec(input(10_000 * MB))).toBe(0)
  })

  it('takes the fast level when the strong one would make the CPU the bottleneck', () => {
    // 100 MB/s: plain needs 10 ns/B of link, fast 6.25 ns/B of CPU, strong 11.25 ns/B of CPU.
    expect(chooseBatchCodec(input(100 * MB))).toBe(1)
  })

  it('takes the strongest level the CPU keeps up with on a slow link', () => {
    expect(chooseBatchCodec(input(8 * MB))).toBe(2)
    expect(chooseBatchCodec(input(32 * MB))).toBe(2)
  })

  it('counts the encoder’s own cost: a busy CPU shifts the choice towards cheaper options', () => {
    expect(chooseBatchCodec(input(40 * MB, 0))).toBe(2)
    expect(chooseBatchCodec(input(40 * MB, 8))).toBe(1)
  })

  it('picks an option whose time is within the tie factor of the best, and the smallest ratio among those', () => {
    const arbInput = fc.record({
      drainRate: fc.option(fc.double({ min: 1e5, max: 1e10, noNaN: true }), { nil: undefined }),
      upstreamNsPerByte: fc.double({ min: 0, max: 50, noNaN: true }),
      options: fc.array(
        fc.record({
          nsPerByte: fc.double({ min: 0, max: 100, noNaN: true }),
          ratio: fc.double({ min: 0.01, max: 1, noNaN: true }),
        }),
        { minLength: 1, maxLength: 4 },
      ),
      headroom: fc.double({ min: 1, max: 2, noNaN: true }),
    })
    fc.assert(
      fc.property(arbInput, (m) => {
        const pick = chooseBatchCodec(m)
        const cost = m.options.map((o) =>
          Math.max(
            (m.upstreamNsPerByte + o.nsPerByte) * m.headroom,
            m.drainRate ? (o.ratio * 1e9) / m.drainRate : 0,
          ),
        )
        const best = Math.min(...cost)
        expect(cost[pick]!).toBeLessThanOrEqual(best * TIE_FACTOR)
        for (let i = 0; i < cost.length; i++)
          if (cost[i]! <= best * TIE_FACTOR)
            expect(m.options[pick]!.ratio).toBeLessThanOrEqual(m.options[i]!.ratio)
        expect(chooseBatchCodec(structuredClone(m))).toBe(pick) // pure: the same input, the same answer
      }),
    )
  })
})

describe('defaultLadder', () => {
  it('is plain, then one compressor at a fast and a strong level, by what is installed', () => {
    expect(defaultLadder(() => true)).toEqual([
      { codec: 'none', level: 0 },
      { codec: 'zstd', level: -7 },
      { codec: 'zstd', level: 1 },
    ])
    expect(defaultLadder((c) => c === 'lz4').map((o) => o.codec)).toEqual(['none', 'lz4'])
    expect(defaultLadder(() => false).map((o) => o.codec)).toEqual(['none', 'deflate'])
  })

  it('refuses ladders the wire cannot carry (no plain first, or two compressors)', () => {
    expect(() => new AdaptiveCompression({ ladder: [{ codec: 'zstd', level: 1 }] })).toThrow(RangeError)
    expect(
      () =>
        new AdaptiveCompression({
          ladder: [
            { codec: 'none', level: 0 },
            { codec: 'lz4', level: 1 },
            { codec: 'deflate', level: 1 },
          ],
        }),
    ).toThrow(RangeError)
  })
})

/** Deterministic text-like pages: words from a small vocabulary, so every level compresses them differently. */
function textPages(n: number, seed: number): Uint8Array[] {
  const words = [
    'qemu',
    'page',
    'dirty',
    'guest',
    'migration',
    'kernel',
    'buffer',
    'cache',
    'the',
    'of',
    'and',
  ]
  let s = seed >>> 0
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s
  }
  return Array.from({ length: n }, () => {
    const p = new Uint8Array(4096)
    let o = 0
    while (o < p.length) {
      const w = rnd() % 7 === 0 ? String(rnd() % 100000) : words[rnd() % words.length]!
      for (let i = 0; i < w.length && o < p.length; i++) p[o++] = w.charCodeAt(i)
      if (o < p.length) p[o++] = 32
    }
    return p
  })
}

/** Each installed ladder with the option expected per phase (deflate is too slow for 100 MB/s: plain there). */
const ladders: [string, BatchCodecOption[], number[]][] = []
if (isCompressorAvailable('zstd')) ladders.push(['zstd', defaultLadder((c) => c === 'zstd'), [0, 1, 2]])
if (isCompressorAvailable('lz4')) ladders.push(['lz4', defaultLadder((c) => c === 'lz4'), [0, 1, 1]])
ladders.push(['deflate', defaultLadder(() => false), [0, 0, 1]])

/**
 * Writes 3 phases of batches with the drain rate injected per phase (no link limit, 100 MB/s, 8 MB/s) and a fake
 * clock that charges each level a fixed cost per byte: the run is the same every time.
 */
function adaptiveRun(ladder: BatchCodecOption[], phases: (number | undefined)[]) {
  let t = 0
  const nsPerByte = { lz4: 5, zstd: 9, deflate: 40 }
  const charge = (name: Parameters<typeof getCompressor>[0]): Compressor => {
    const c = getCompressor(name)
    const cost = (data: Uint8Array, level: number) => {
      t += data.length * (level < 0 ? 5 : nsPerByte[name])
    }
    const view = c.compressView?.bind(c)
    return {
      ...c,
      compress: (data, level) => {
        cost(data, level)
        return c.compress(data, level)
      },
      compressView:
        view &&
        ((data, level) => {
          cost(data, level)
          return view(data, level)
        }),
    }
  }
  const adaptive = new AdaptiveCompression({ ladder, now: () => t, compressor: charge, probeEvery: 0 })
  adaptive.trace = []
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({
    onChunk: (c) => chunks.push(c),
    streamId: new Uint8Array(16).fill(7),
    adaptive,
  })
  w.header(HEADER)
  const original: Uint8Array[] = []
  let index = 0
  for (const [p, drain] of phases.entries()) {
    adaptive.setDrainRate(drain)
    for (let b = 0; b < 4; b++) {
      for (const page of textPages(16, p * 100 + b)) {
        const hdr = qemuHdr(index * 4096, 0x08, index === 0 ? 'pc.ram' : undefined)
        w.pageFull(0, index++, hdr, page)
        original.push(hdr, page)
      }
      w.flush()
    }
  }
  w.end()
  return { bytes: concat(chunks), original: concat(original), adaptive }
}

describe.each(ladders)('AdaptiveCompression over a real FrameWriter (%s)', (_name, ladder, perPhase) => {
  const phases = [undefined, 100 * MB, 8 * MB]

  it('writes plain, fast and strong batches that decode byte for byte', () => {
    const { bytes, original, adaptive } = adaptiveRun(ladder, phases)
    // Phase by phase: plain on an unlimited link, then (with a fast level) fast at 100 MB/s, strong at 8 MB/s.
    const expected = perPhase.flatMap((i) => [i, i, i, i])
    expect(adaptive.trace).toEqual(expected)
    const read = readStream(bytes, 1000, { maxVersion: 3 })
    expect(read.error).toBeUndefined()
    const batches = read.items.flatMap((it) => (it.type === 'batch' ? [it.batch.compressed] : []))
    expect(batches).toEqual(expected.map((i) => i !== 0))
    const header = read.items[0]
    expect(header?.type === 'header' && header.header.compression).toEqual(adaptive.header)
    const out = decodeStream(bytes, 777, { maxVersion: 3 })
    expect(out.error).toBeUndefined()
    expect(sameBytes(out.output, original)).toBe(true)
  })

  it('chooses the same way given the same measurements: the same stream to the byte', () => {
    const a = adaptiveRun(ladder, phases)
    const b = adaptiveRun(ladder, phases)
    expect(b.adaptive.trace).toEqual(a.adaptive.trace)
    expect(sameBytes(b.bytes, a.bytes)).toBe(true)
  })
})

describe('AdaptiveCompression measuring', () => {
  it('learns the encoder’s own cost from the busy time the stream reports', () => {
    let t = 0
    const a = new AdaptiveCompression({
      ladder: [{ codec: 'none', level: 0 }],
      now: () => t,
      compressor: getCompressor,
    })
    a.compress(new Uint8Array(100_000))
    a.noteBusy(9_000_000) // the first window holds the start-up: ignored
    expect(a.choiceInput().upstreamNsPerByte).toBe(0)
    a.compress(new Uint8Array(100_000))
    t += 1
    a.noteBusy(400_000) // 4 ns per frame byte, nothing spent compressing
    expect(a.choiceInput().upstreamNsPerByte).toBeCloseTo(4)
  })

  it('loads its compressor only when a batch needs it; one that does not load leaves batches plain', () => {
    const asked: string[] = []
    const a = new AdaptiveCompression({
      ladder: defaultLadder(() => false),
      compressor: (name) => {
        asked.push(name)
        return undefined
      },
    })
    a.trace = []
    a.setDrainRate(1e6) // a slow link: deflate would be chosen
    expect(asked).toEqual([])
    expect(a.compress(new Uint8Array(4096))).toBeUndefined()
    expect(asked).toEqual(['deflate'])
    expect(a.compress(new Uint8Array(4096))).toBeUndefined()
    expect(a.trace).toEqual([1, 0])
  })

  it('probes an option it has not used lately, once every probeEvery batches', () => {
    const a = new AdaptiveCompression({ ladder: defaultLadder(() => false), probeEvery: 4 })
    a.trace = []
    for (let i = 0; i < 9; i++) a.compress(new Uint8Array(4096).fill(i))
    expect(a.trace).toEqual([0, 0, 0, 0, 1, 0, 0, 0, 1])
  })
})
