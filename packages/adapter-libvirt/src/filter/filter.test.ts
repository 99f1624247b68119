import { Buffer } from 'node:buffer'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { SimulatedGuest } from '../simulate/simulated-guest.js'
import { FIXTURES, loadFixture, randomChunks } from '../test-fixtures.js'
import { XbzrleDecoder } from './decoder.js'
import { type EncoderOptions, XbzrleEncoder } from './encoder.js'
import { DecodeStream, EncodeStream } from './streams.js'

function encode(chunks: Iterable<Uint8Array>, opts?: EncoderOptions) {
  const out: Uint8Array[] = []
  const enc = new XbzrleEncoder((c) => out.push(c), opts)
  for (const c of chunks) enc.push(c)
  enc.finish()
  return { data: Buffer.concat(out), stats: enc.stats }
}

function decode(chunks: Iterable<Uint8Array>) {
  const out: Uint8Array[] = []
  const dec = new XbzrleDecoder((c) => out.push(c))
  for (const c of chunks) dec.push(c)
  dec.finish()
  return Buffer.concat(out)
}

describe('encode → decode is the identity', () => {
  it.each(FIXTURES)('real capture %s', (name) => {
    const data = loadFixture(name)
    const enc = encode(randomChunks(data, 11, 1 << 20))
    const back = decode(randomChunks(enc.data, 12, 1 << 20))
    expect(back.equals(Buffer.from(data))).toBe(true)
    expect(enc.data.length).toBeLessThanOrEqual(data.length + data.length / 100 + 256)
  })

  it('QEMU xbzrle capture: foreign records keep the caches in step and everything is byte-exact', () => {
    const data = loadFixture('pc-xbzrle-dirty.mig')
    const enc = encode([data], { mode: 'compact' })
    expect(enc.stats.pages.foreign).toBe(2128)
    expect(decode([enc.data]).equals(Buffer.from(data))).toBe(true)
  })

  it('simulated multi-pass migration shrinks a lot and comes back exactly (small chunks both ways)', () => {
    const sim = new SimulatedGuest({ memMiB: 8, passes: 8, workload: 'sparse' })
    const input = Buffer.concat([...sim.stream()])
    const enc = encode(randomChunks(input, 3, 70_000))
    expect(enc.stats.pages.delta).toBeGreaterThan(1000)
    const back = decode(randomChunks(enc.data, 4, 5000))
    expect(back.equals(input)).toBe(true)
    // Re-sent pages become deltas: the output is much smaller than the input.
    expect(enc.data.length).toBeLessThan(input.length * 0.5)
  })

  it('non-QEMU input and empty input round-trip', () => {
    const junk = Buffer.alloc(3 << 20).map((_, i) => (i * 2654435761) >>> 25)
    expect(decode([encode([junk]).data]).equals(junk)).toBe(true)
    expect(decode([encode([]).data]).length).toBe(0)
    const gz = Buffer.from('1f8b0800000000000003', 'hex')
    expect(decode([encode([gz]).data]).equals(gz)).toBe(true)
  })

  it('a small cache evicts and still round-trips exactly', () => {
    const sim = new SimulatedGuest({ memMiB: 8, passes: 3, workload: 'hotset', seed: 5 })
    const input = Buffer.concat([...sim.stream()])
    const enc = encode([input], { cacheBytes: 1 << 20, ways: 4 })
    const c = enc.stats.cache!
    expect(c.evictions + c.refused).toBeGreaterThan(0)
    expect(decode([enc.data]).equals(input)).toBe(true)
  })

  it('Node streams: pipeline encode → decode with backpressure', async () => {
    const sim = new SimulatedGuest({ memMiB: 4, passes: 2 })
    const input = Buffer.concat([...sim.stream()])
    const out: Buffer[] = []
    await pipeline(
      Readable.from(randomChunks(input, 9, 256 * 1024)),
      new EncodeStream(),
      new DecodeStream(),
      new Writable({
        highWaterMark: 1024,
        write(chunk, _e, cb) {
          out.push(chunk)
          setImmediate(cb)
        },
      }),
    )
    expect(Buffer.concat(out).equals(input)).toBe(true)
  })
})

describe('bad input never produces a wrong byte', () => {
  const sim = new SimulatedGuest({ memMiB: 2, passes: 2, seed: 3 })
  const input = Buffer.concat([...sim.stream()])
  const good = encode([input], { batchBytes: 64 * 1024 }).data

  /** Decodes, collecting output; returns the error (if any) and what was released before it. */
  function tryDecode(data: Uint8Array) {
    const out: Uint8Array[] = []
    const dec = new XbzrleDecoder((c) => out.push(c))
    try {
      dec.push(data)
      dec.finish()
      return { err: undefined, out: Buffer.concat(out) }
    } catch (err) {
      return { err: err as Error, out: Buffer.concat(out) }
    }
  }

  it('truncation anywhere is an error, and what was released is a prefix of the original', () => {
    for (let cut = 0; cut < good.length; cut += Math.max(1, Math.floor(good.length / 300))) {
      const { err, out } = tryDecode(good.subarray(0, cut))
      expect(err, `cut at ${cut}`).toBeDefined()
      expect(out.equals(input.subarray(0, out.length))).toBe(true)
    }
  })

  it('a flipped bit anywhere is an error, and nothing wrong is released', () => {
    for (let i = 0; i < 400; i++) {
      const pos = Math.floor((i / 400) * good.length)
      const bad = Buffer.from(good)
      bad[pos]! ^= 1 << (i % 8)
      const { err, out } = tryDecode(bad)
      expect(err, `flip at ${pos}`).toBeDefined()
      expect(err!.message.split('\n').length).toBe(1)
      expect(out.equals(input.subarray(0, out.length))).toBe(true)
    }
  })

  it('a raw QEMU stream given to the decoder is refused with a hint', () => {
    const { err, out } = tryDecode(input)
    expect(err?.message).toMatch(/not an xbzrle stream/)
    expect(out.length).toBe(0)
  })
})

describe('XbzrleEncoder pages: false (a stream in which no page comes twice)', () => {
  const input = Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 1, seed: 5 }).stream()])

  it('copies the input into verbatim frames that decode byte for byte, and refuses a base', () => {
    const out: Uint8Array[] = []
    const e = new XbzrleEncoder((c) => out.push(c), {
      pages: false,
      formatVersion: 2,
      compression: { codec: 'zstd' },
    })
    for (let o = 0; o < input.length; o += 100_000) e.push(input.subarray(o, o + 100_000))
    e.finish()
    expect(e.stats.pages).toMatchObject({ full: 0, delta: 0, same: 0, zero: 0 })
    const encoded = Buffer.concat(out)
    expect(encoded.length).toBeLessThan(input.length)
    const back: Uint8Array[] = []
    const d = new XbzrleDecoder((c) => back.push(c))
    d.push(encoded)
    d.finish()
    expect(Buffer.concat(back).equals(input)).toBe(true)
    expect(() => new XbzrleEncoder(() => {}, { pages: false, base: {} as never })).toThrow(/base image/)
  })
})
