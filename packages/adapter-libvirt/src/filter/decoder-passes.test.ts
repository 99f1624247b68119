// Decoder-side passes (issue #17): what the decoder can find from the page keys of an xbzrle stream, checked
// against the encoder's passes of the same stream (simulated, a committed real QEMU capture, fresh real QEMU
// live migrations). The decoder never sees QEMU's END section nor the RAM block sizes: its passes are the ones a
// repeated page proves, so QEMU's empty pre-completion pass is never among them (docs/observability.md).
import { Buffer } from 'node:buffer'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { FrameWriter } from '@xbzrle/protocol'
import { captureIteratingMigration, installTestkitHooks, requireQemu } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { SimulatedGuest } from '../simulate/simulated-guest.js'
import { loadFixture, randomChunks } from '../test-fixtures.js'
import { XbzrleDecoder } from './decoder.js'
import { XbzrleEncoder } from './encoder.js'
import { PassDetector, type PassStats, sumPasses } from './pass-stats.js'
import { DecodeStream } from './streams.js'

installTestkitHooks({ afterEach, afterAll })

const MiB = 1024 * 1024
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

interface Events {
  starts: number[]
  ends: PassStats[]
}
function listener(ev: Events) {
  return {
    passStart: (p: number) => ev.starts.push(p),
    passEnd: (s: PassStats) => ev.ends.push(s),
  }
}

/** Encodes `data` (passes recorded), then decodes it through the pull API in random chunks (passes recorded). */
function roundTrip(data: Uint8Array, seed = 7) {
  const encEv: Events = { starts: [], ends: [] }
  const chunks: Uint8Array[] = []
  const enc = new XbzrleEncoder((c) => chunks.push(c.slice()), { passListener: listener(encEv) })
  for (const c of randomChunks(data, seed, 1 << 20)) enc.push(c)
  enc.finish()
  const encoded = Buffer.concat(chunks)
  const decEv: Events = { starts: [], ends: [] }
  const dec = new XbzrleDecoder(undefined, { passListener: listener(decEv) })
  const hash = createHash('sha256')
  let decodedBytes = 0
  for (const c of randomChunks(encoded, seed + 1, 1 << 19)) {
    dec.push(c)
    for (let o = dec.nextOutput(); o; o = dec.nextOutput()) {
      hash.update(o)
      decodedBytes += o.length
    }
  }
  dec.end()
  for (let o = dec.nextOutput(); o; o = dec.nextOutput()) {
    hash.update(o)
    decodedBytes += o.length
  }
  dec.finish()
  return { enc, dec, encoded, encEv, decEv, digest: hash.digest('hex'), decodedBytes }
}

/** The encoder's passes with the empty ones left out: what page keys can show. */
const nonEmpty = (passes: readonly PassStats[]) => passes.filter((p) => p.pages.total > 0)

/** A pass as the other side sees it: bytes in and out swapped, wall time left out. */
const mirrored = (p: PassStats) => ({
  in: p.bytesOut,
  out: p.bytesIn,
  pages: p.pages,
  resent: p.resentPages,
  hits: p.cacheHits,
  misses: p.cacheMisses,
})
const asDecoded = (p: PassStats) => ({
  in: p.bytesIn,
  out: p.bytesOut,
  pages: p.pages,
  resent: p.resentPages,
  hits: p.cacheHits,
  misses: p.cacheMisses,
})

/** What holds for any stream: exact output, totals equal to the encoder's, at most the encoder's boundaries. */
function checkCommon(r: ReturnType<typeof roundTrip>, data: Uint8Array) {
  expect(r.digest).toBe(sha(data))
  expect(r.decodedBytes).toBe(data.length)
  const d = r.dec.passes
  const e = r.enc.passes
  // listener and recorder agree; passes numbered 1..n, the last one final
  expect(r.decEv.ends).toEqual(d)
  expect(r.decEv.starts).toEqual(d.map((p) => p.pass))
  expect(d.map((p) => p.pass)).toEqual(d.map((_, i) => i + 1))
  expect(d.map((p) => p.final)).toEqual(d.map((_, i) => i === d.length - 1))
  expect(r.dec.stats.pass).toBe(d.length)
  // the passes add up to the stream: xbzrle bytes in, QEMU bytes out, page kinds, cache, re-sends
  const sd = sumPasses(d)
  const se = sumPasses(e)
  expect(sd.bytesIn).toBe(r.encoded.length)
  expect(sd.bytesOut).toBe(data.length)
  expect({ ...sd, bytesIn: 0, bytesOut: 0, resent: 0 }).toEqual({ ...se, bytesIn: 0, bytesOut: 0, resent: 0 })
  expect(sd.resent).toBe(se.resent) // same keys, same history
  // Every decoder boundary is proven by a page repeated since the previous decoder boundary, and the encoder
  // sees that repeat too: the encoder has a boundary in between. So the k-th decoder boundary is at or after
  // the k-th encoder boundary (positions in QEMU bytes; the encoder's two completion cuts are one position),
  // and the decoder never has more passes.
  const cuts = (passes: readonly PassStats[], qemuBytes: (p: PassStats) => number) => {
    const at: number[] = []
    let pos = 0
    for (const p of passes.slice(0, -1)) {
      pos += qemuBytes(p)
      if (at.at(-1) !== pos) at.push(pos)
    }
    return at
  }
  const dc = cuts(d, (p) => p.bytesOut)
  const ec = cuts(e, (p) => p.bytesIn)
  expect(dc.length).toBeLessThanOrEqual(ec.length)
  for (const [k, pos] of dc.entries()) expect(pos).toBeGreaterThanOrEqual(ec[k]!)
  expect(d.length).toBeLessThanOrEqual(e.length)
  return { dc, ec }
}

describe('decoder passes against the encoder passes of the same stream', () => {
  it('simulated guest (random dirty pages): the boundaries the encoder proves by cursor order come later', () => {
    const data = Buffer.concat([
      ...new SimulatedGuest({ memMiB: 16, passes: 5, seed: 3, dirtyFraction: 0.3 }).stream(),
    ])
    const r = roundTrip(data)
    const { dc, ec } = checkCommon(r, data)
    // 5 dirty passes + QEMU's empty pre-completion pass + the END pass for the encoder; the decoder finds
    // the 6 non-empty ones, but a pass whose first page was not sent in the pass before starts later for it.
    expect(r.enc.passes.map((p) => p.pages.total > 0)).toEqual([true, true, true, true, true, false, true])
    expect(r.dec.passes).toHaveLength(6)
    expect(dc[0]).toBe(ec[0]) // pass 2 re-sends pages of pass 1: the same boundary
    expect(dc.some((pos, k) => pos > ec[k]!)).toBe(true)
    expect(r.dec.passes.map(asDecoded)).not.toEqual(nonEmpty(r.enc.passes).map(mirrored))
  })

  it('pc-xbzrle-dirty.mig (real QEMU 7.2, its own XBZRLE on): exactly the non-empty encoder passes, mirrored', () => {
    const data = loadFixture('pc-xbzrle-dirty.mig')
    const r = roundTrip(data, 11)
    checkCommon(r, data)
    expect(r.enc.passes.map((p) => p.pages.total)).toEqual([37010, 2816, 2404, 0, 1])
    // Same boundaries, same figures (xbzrle bytes in = the encoder's bytes out and vice versa), minus the empty
    // pass before QEMU's completion, which no page can show.
    expect(r.dec.passes.map(asDecoded)).toEqual(nonEmpty(r.enc.passes).map(mirrored))
    expect(r.dec.passes.map((p) => p.pass)).toEqual([1, 2, 3, 4])
  })
})

describe('DecodeStream reports the same passes (pull API, waits for a slow consumer)', () => {
  it('passes equal the callback-free decoder run; output byte-identical', async () => {
    const data = loadFixture('pc-xbzrle-dirty.mig')
    const r = roundTrip(data, 5)
    const ev: Events = { starts: [], ends: [] }
    const ds = new DecodeStream({ passListener: listener(ev) })
    const hash = createHash('sha256')
    const slow = new Writable({
      highWaterMark: 1,
      write(c: Buffer, _e, cb) {
        hash.update(c)
        setImmediate(cb)
      },
    })
    await pipeline(
      Readable.from([...randomChunks(r.encoded, 3, 1 << 20)].map((c) => Buffer.from(c))),
      ds,
      slow,
    )
    expect(hash.digest('hex')).toBe(sha(data))
    expect(ds.decoder.passes.map(asDecoded)).toEqual(r.dec.passes.map(asDecoded))
    expect(ev.ends.map((p) => p.pass)).toEqual([1, 2, 3, 4])
    expect(ds.decoder.currentPass().pass).toBe(4)
  })
})

describe('pass detection memory is bounded whatever page keys a stream holds', () => {
  it('a growing detector tracks at most maxTrackedPages stamps', () => {
    const d = new PassDetector(true, 8192)
    for (const p of [0, 5, 2 ** 40 - 1, 3000]) {
      expect(d.isRepeat(0, p)).toBe(false)
      d.mark(0, p)
    }
    expect(d.isRepeat(0, 5)).toBe(true) // tracked (block 0 now holds 4096 stamps): a repeat
    expect(d.isRepeat(0, 2 ** 40 - 1)).toBe(false) // beyond the budget: never a repeat
    expect(d.isRepeat(1, 10)).toBe(false)
    d.mark(1, 10) // a second block: 1024 more stamps fit (5120 ≤ 8192)…
    expect(d.isRepeat(1, 10)).toBe(true)
    expect(d.isRepeat(2, 4000)).toBe(false)
    d.mark(2, 4000) // …a third one needing 4001 more does not
    expect(d.isRepeat(2, 4000)).toBe(false)
    expect(d.pagesInPass).toBe(6) // every page is counted, tracked or not
  })

  it('a stream of zero pages at the highest page indexes of 64 Ki blocks decodes; the keys are counted', () => {
    const out: Uint8Array[] = []
    const w = new FrameWriter({ onChunk: (c) => out.push(c.slice()) })
    w.header({
      pageSize: 4096,
      cache: { cacheBytes: MiB, ways: 4, policy: 'lru-age-v1' },
      mode: 'canonical',
      source: 'raw',
    })
    const hdr = new Uint8Array(9) // a raw header (not the derived form): 8 bytes + 1
    let n = 0
    for (let b = 0; b < 65536; b += 1) {
      for (const p of [2 ** 32 - 1, 2 ** 31]) {
        w.pageZero(b, p, hdr, 0)
        n++
      }
    }
    w.end()
    const dec = new XbzrleDecoder(() => {})
    const before = process.memoryUsage().arrayBuffers
    dec.push(Buffer.concat(out))
    dec.finish()
    const grown = process.memoryUsage().arrayBuffers - before
    expect(dec.passCounters().zero).toBe(n)
    expect(dec.passes).toHaveLength(1) // nothing repeats
    // 4 Mi stamps at most (16 MiB), not 64 Ki blocks × 2^32 stamps
    expect(grown).toBeLessThan(64 * MiB)
  })
})

describe('fresh real QEMU 7.2 live migrations', () => {
  it.for([
    { workload: 'sparse', xbzrle: false },
    { workload: 'hotset', xbzrle: false },
    { workload: 'sweep', xbzrle: true },
  ] as const)(
    '$workload, QEMU xbzrle $xbzrle: encoder passes = dirty-sync-count, decoder passes ≤ that − 1',
    { timeout: 180_000 },
    async ({ workload, xbzrle }, ctx) => {
      if (!requireQemu(ctx)) return
      const { path, stats } = await captureIteratingMigration({ workload, xbzrle, syncs: 4 })
      expect(stats.status).toBe('completed')
      const data = readFileSync(path)
      const r = roundTrip(data, 13)
      checkCommon(r, data)
      const syncs = stats.dirtySyncCount!
      // Every pass that sends a page is found. A sync after which the guest had dirtied nothing (a guest starved
      // of CPU while the whole suite runs on 2 cores) sends no page, and no repeat can prove that boundary: then
      // one fewer. The simulated streams above check the exact count.
      expect([syncs - 1, syncs]).toContain(r.enc.passes.length)
      expect(r.enc.passes.at(-2)!.pages.total).toBe(0) // QEMU's pre-completion sync found nothing to send
      // The empty pass is never the decoder's; what else it misses are boundaries no repeat proves.
      expect(r.dec.passes.length).toBeLessThanOrEqual(syncs - 1)
      expect(r.dec.passes.length).toBeGreaterThanOrEqual(2)
      process.stderr.write(
        `decoder-passes ${workload} xbzrle=${xbzrle}: dirty-sync-count ${syncs}, encoder ${r.enc.passes.map((p) => p.pages.total).join('/')}, decoder ${r.dec.passes.map((p) => p.pages.total).join('/')}\n`,
      )
    },
  )
})
