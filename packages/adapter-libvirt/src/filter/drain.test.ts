import { Buffer } from 'node:buffer'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { SimulatedGuest } from '../simulate/simulated-guest.js'
import { XbzrleDecoder } from './decoder.js'
import { DrainMeter, IN_FLIGHT_MS, inFlightBudget, MIN_IN_FLIGHT } from './drain.js'
import { XbzrleEncoder } from './encoder.js'
import { EncodeStream, IO_CHUNK } from './streams.js'

const MS = 1e6

/** `data` in 64 KiB pieces, as a pipe hands it over. */
function* pipeReads(data: Uint8Array): Generator<Uint8Array> {
  for (let o = 0; o < data.length; o += 64 * 1024) yield data.subarray(o, o + 64 * 1024)
}

/** Steps of 10 ms from `from` to `to`: 150 kB produced, 100 kB taken (10 MB/s), the rest stays as backlog. */
function backlogged(m: DrainMeter, from: number, to: number): void {
  for (let t = from; t <= to; t++) {
    m.produce(150_000)
    m.sample(t * 10 * MS, (t + 1) * 150_000 - t * 100_000)
  }
}

describe('DrainMeter', () => {
  it('knows no rate while the output never held a backlog', () => {
    const m = new DrainMeter()
    for (let t = 0; t < 20; t++) {
      m.produce(100_000)
      m.sample(t * 10 * MS, 0)
    }
    expect(m.rate).toBeUndefined()
  })

  it('measures the bytes taken per second while there is a backlog', () => {
    const m = new DrainMeter()
    backlogged(m, 0, 30)
    expect(m.rate).toBeCloseTo(10e6, -3)
  })

  it('only raises its estimate while the link keeps up (a lower bound), never lowers it', () => {
    const m = new DrainMeter()
    backlogged(m, 0, 10)
    const measured = m.rate!
    // Output is idle: 50 kB per 10 ms produced and taken at once (5 MB/s < 10 MB/s): no change.
    for (let t = 11; t <= 20; t++) {
      m.produce(50_000)
      m.sample(t * 10 * MS, 0)
    }
    expect(m.rate).toBe(measured)
    // 30 MB/s produced and taken with no backlog: the link is at least that fast.
    for (let t = 21; t <= 40; t++) {
      m.produce(300_000)
      m.sample(t * 10 * MS, 0)
    }
    expect(m.rate!).toBeGreaterThan(25e6)
  })

  it('budgets a few tens of ms of the drain rate, at least MIN_IN_FLIGHT', () => {
    expect(inFlightBudget(undefined, 123)).toBe(123)
    expect(inFlightBudget(100e6, 0)).toBe((100e6 * IN_FLIGHT_MS) / 1000)
    expect(inFlightBudget(1000, 0)).toBe(MIN_IN_FLIGHT)
  })
})

describe('EncodeStream: shallow pipeline', () => {
  const input = Buffer.concat([...new SimulatedGuest({ memMiB: 8, passes: 4, workload: 'text' }).stream()])

  it('takes no more input than its output budget while nobody reads the output', async () => {
    const enc = new EncodeStream({ compression: { codec: 'none' } })
    let accepted = 0
    for (const chunk of pipeReads(input)) {
      const more = enc.write(chunk, () => {
        accepted += chunk.length
      })
      if (!more) break
    }
    await new Promise((r) => setTimeout(r, 50))
    // Output held: at most the budget plus one batch and one queued input chunk; the input is far larger. The
    // budget is IO_CHUNK until a first rate window is measured (the whole test may take less), then less.
    expect(enc.readableLength).toBeLessThanOrEqual(Math.max(enc.budget, IO_CHUNK) + (1 << 20) + 64 * 1024)
    expect(accepted).toBeLessThan(input.length / 2)
    enc.destroy()
  })

  it.each(['auto', 'none'] as const)(
    'a slow reader (--compress %s) gets every byte: the held input resumes as it reads',
    async (compression) => {
      const enc = new EncodeStream({ compression })
      const out: Buffer[] = []
      const slow = new Writable({
        highWaterMark: 16 * 1024,
        write(c: Buffer, _e, cb) {
          out.push(c)
          setTimeout(cb, 1)
        },
      })
      await pipeline(Readable.from(pipeReads(input)), enc, slow)
      const back: Uint8Array[] = []
      const dec = new XbzrleDecoder((c) => back.push(c))
      dec.push(Buffer.concat(out))
      dec.finish()
      expect(Buffer.concat(back).equals(input)).toBe(true)
      expect(enc.drain.rate).toBeGreaterThan(0)
    },
  )
})

describe('EncodeStream: bulk pacing (a save of a paused guest)', () => {
  const input = Buffer.concat([...new SimulatedGuest({ memMiB: 8, passes: 2, workload: 'text' }).stream()])
  const run = async (pacing: 'live' | 'bulk') => {
    const out: Buffer[] = []
    const fast = new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c)
        cb()
      },
    })
    const enc = new EncodeStream({ compression: { codec: 'none' }, formatVersion: 2, pacing })
    await pipeline(Readable.from(pipeReads(input)), enc, fast)
    return Buffer.concat(out)
  }

  it('closes batches at their size only: the bytes of an encoder fed the same input, whatever the timing', async () => {
    const bulk = await run('bulk')
    const ref: Uint8Array[] = []
    const e = new XbzrleEncoder((c) => ref.push(c), { compression: { codec: 'none' }, formatVersion: 2 })
    for (const c of pipeReads(input)) e.push(c)
    e.finish()
    await e.settled()
    expect(bulk.equals(Buffer.concat(ref))).toBe(true)
    // the live rules, into an output that is always idle, close a batch per input chunk: more bytes
    expect((await run('live')).length).toBeGreaterThan(bulk.length)
    const back: Uint8Array[] = []
    const dec = new XbzrleDecoder((c) => back.push(c))
    dec.push(bulk)
    dec.finish()
    expect(Buffer.concat(back).equals(input)).toBe(true)
  })
})
