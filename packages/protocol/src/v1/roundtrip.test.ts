import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ProtocolError } from '../errors.js'
import {
  collect,
  decodeStream,
  HEADER,
  ModelDecoder,
  type OpBytes,
  qemuHdr,
  readStream,
  sameBytes,
  writeOps,
} from '../test-util.js'
import { LIMITS } from './constants.js'
import type { StreamHeader } from './types.js'

const PAGE = 512
const H: StreamHeader = { ...HEADER, pageSize: PAGE }

type Op =
  | { t: 'verbatim'; len: number; seed: number }
  | {
      t: 'full' | 'delta' | 'same' | 'zero' | 'foreign' | 'invalidate'
      block: number
      index: number
      seed: number
      hdrLen: number
      /** random: hdrLen random bytes; derived: be64(index * PAGE + flags); others: 8-byte look-alikes that go raw. */
      hdrKind?: 'random' | 'derived' | 'otherPage' | 'flagsTooBig'
      flags?: number
    }
  | { t: 'reset' }
  | { t: 'flush' }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('verbatim' as const), len: fc.nat(3000), seed: fc.nat() }),
  fc.record({
    t: fc.constantFrom('full', 'delta', 'same', 'zero', 'foreign', 'invalidate'),
    block: fc.nat(3),
    index: fc.oneof(fc.nat(5), fc.constantFrom(1000, 2 ** 32 - 1, 2 ** 32, 2 ** 40 - 2, 2 ** 40 - 1)),
    seed: fc.nat(),
    hdrLen: fc.nat(20),
    hdrKind: fc.constantFrom('random', 'derived', 'derived', 'otherPage', 'flagsTooBig'),
    flags: fc.nat(PAGE - 1),
  }),
  fc.constant({ t: 'reset' as const }),
  fc.constant({ t: 'flush' as const }),
)

function be64(v: number): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(v))
  return b
}

type PageOp = Extract<Op, { block: number }>
/** Random VERBATIM bytes, pages with any of the header kinds, mostly zero fills. */
const V1_BYTES: OpBytes<Extract<Op, { t: 'verbatim' }>, PageOp> = {
  pageSize: PAGE,
  verbatim: (op, r) => Uint8Array.from({ length: op.len }, () => (r() * 256) | 0),
  hdr: (op, r) =>
    op.hdrKind === undefined || op.hdrKind === 'random'
      ? Uint8Array.from({ length: op.hdrLen }, () => (r() * 256) | 0)
      : op.hdrKind === 'derived'
        ? be64(op.index * PAGE + op.flags!)
        : op.hdrKind === 'otherPage'
          ? be64(op.index * PAGE + op.flags! + 2 ** 52) // a far-away offset
          : be64(op.index * PAGE + PAGE + op.flags!), // flags ≥ PAGE: not derivable for this index
  zeroFill: (r) => (r() < 0.8 ? 0 : (r() * 256) | 0),
}

/** Drives a writer from ops with a model cache; returns the stream and the original bytes it must decode to. */
function build(ops: Op[], batchBytes?: number): { stream: Uint8Array; orig: Uint8Array } {
  const { w, bytes } = collect(batchBytes)
  w.header(H)
  const orig = writeOps(w, ops, V1_BYTES)
  w.end({ cache: { hits: 1, misses: 2 } })
  return { stream: bytes(), orig }
}

describe('v1 round trip', () => {
  it('random frame sequences decode to the original bytes, whole and in random chunks', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { maxLength: 60 }),
        fc.constantFrom(1, 700, 4096, 1 << 20),
        fc.integer({ min: 1, max: 5000 }),
        (ops, bb, chunk) => {
          const { stream, orig } = build(ops, bb)
          const whole = decodeStream(stream)
          expect(whole.error).toBeUndefined()
          expect(sameBytes(whole.output, orig)).toBe(true)
          const chunked = decodeStream(stream, chunk)
          expect(chunked.error).toBeUndefined()
          expect(sameBytes(chunked.output, orig)).toBe(true)
        },
      ),
      { numRuns: 150 },
    )
  })

  it('reads a small stream fed one byte at a time, and a large one in 1 MiB chunks', () => {
    const ops: Op[] = [
      { t: 'verbatim', len: 100, seed: 1 },
      { t: 'full', block: 0, index: 0, seed: 2, hdrLen: 8, hdrKind: 'derived', flags: 0x28 },
      { t: 'delta', block: 0, index: 0, seed: 3, hdrLen: 8 },
      { t: 'flush' },
      { t: 'same', block: 0, index: 0, seed: 4, hdrLen: 8, hdrKind: 'derived', flags: 0x28 },
      { t: 'zero', block: 1, index: 3, seed: 5, hdrLen: 9 },
      { t: 'foreign', block: 1, index: 3, seed: 6, hdrLen: 8, hdrKind: 'derived', flags: 0x60 },
      { t: 'invalidate', block: 1, index: 3, seed: 7, hdrLen: 0 },
      { t: 'reset' },
    ]
    const small = build(ops, 300)
    expect(sameBytes(decodeStream(small.stream, 1).output, small.orig)).toBe(true)
    const big: Op[] = []
    for (let i = 0; i < 4400; i++)
      big.push({ t: 'full', block: i % 3, index: i, seed: i, hdrLen: 8, hdrKind: 'derived', flags: 0x28 })
    big.push({ t: 'verbatim', len: 3000, seed: 9 })
    const large = build(big)
    expect(large.stream.length).toBeGreaterThan(2 << 20)
    expect(sameBytes(decodeStream(large.stream, 1 << 20).output, large.orig)).toBe(true)
  })

  it('splits big verbatim spans into frames ≤ 1 MiB and batches by batchBytes', () => {
    const { w, chunks, bytes } = collect(4096)
    w.header(HEADER)
    const data = Uint8Array.from({ length: 10000 }, (_, i) => i * 7)
    w.verbatim(data)
    w.end()
    const r = readStream(bytes())
    const batches = r.items.filter((i) => i.type === 'batch')
    expect(batches.map((b) => (b.type === 'batch' ? b.batch.outputLength : 0))).toEqual([4096, 4096, 1808])
    expect(chunks.length).toBe(1 + 3 + 1) // header, 3 batches, END

    const big = collect()
    big.w.header(HEADER)
    big.w.verbatim(new Uint8Array(3 * 1024 * 1024 + 5))
    big.w.end()
    const rb = readStream(big.bytes())
    expect(rb.error).toBeUndefined()
    for (const it of rb.items)
      if (it.type === 'batch')
        for (const f of it.batch.frames())
          if (f.kind === 'verbatim') expect(f.bytes.length).toBeLessThanOrEqual(LIMITS.maxVerbatimBytes)
  })

  it('frames are views into the pushed chunk (no copies)', () => {
    const { w, bytes } = collect()
    w.header(HEADER)
    w.verbatim(Uint8Array.of(1, 2, 3))
    w.end()
    const s = bytes()
    const r = readStream(s)
    const b = r.items.find((i) => i.type === 'batch')
    if (b?.type !== 'batch') throw new Error('no batch')
    const [f] = [...b.batch.frames()]
    expect(f?.kind === 'verbatim' && f.bytes.buffer).toBe(s.buffer)
  })

  it('header fields, encoder and ignorable extensions survive; END carries totals and cache stats', () => {
    const { w, bytes } = collect()
    const h: StreamHeader = {
      pageSize: 65536,
      cache: { cacheBytes: 2 ** 40, ways: 8, policy: 'clock-pro' },
      mode: 'compact',
      source: 'libvirt-save',
      encoder: 'xbzrle/0.1.0 ✓',
      extensions: [{ type: 300, critical: false, data: Uint8Array.of(1, 2) }],
    }
    w.header(h)
    w.pageZero(7, 2 ** 40 - 1, qemuHdr(0, 2, 'pc.ram'), 0)
    w.end({ cache: { hits: 5, evictions: 0 } })
    const r = readStream(bytes())
    expect(r.error).toBeUndefined()
    expect(r.items[0]).toEqual({ type: 'header', version: 1, header: h })
    const end = r.items.at(-1)
    expect(end?.type === 'end' && end.end).toMatchObject({
      totalBytes: 8 + 1 + 6 + 1, // hdr with the name "pc.ram", then the fill byte
      batches: 1,
      pages: { full: 0, delta: 0, same: 0, zero: 1, foreign: 0 },
      cache: { hits: 5, evictions: 0 },
    })
  })

  it('writer rejects misuse', () => {
    const { w } = collect()
    expect(() => w.verbatim(Uint8Array.of(1))).toThrow(/header\(\) first/)
    expect(() => w.header({ ...HEADER, pageSize: 1000 })).toThrow(RangeError)
    w.header(HEADER)
    expect(() => w.header(HEADER)).toThrow(/exactly once/)
    expect(() => w.pageFull(0, 0, new Uint8Array(8), new Uint8Array(100))).toThrow(/pageSize/)
    expect(() => w.pageFull(70000, 0, new Uint8Array(8), new Uint8Array(4096))).toThrow(/blockId/)
    expect(() => w.pageFull(0, 0, new Uint8Array(265), new Uint8Array(4096))).toThrow(/hdr/)
    expect(() => w.pageDelta(0, 0, new Uint8Array(8), new Uint8Array(4097), new Uint8Array(4096))).toThrow(
      /delta/,
    )
    expect(() => w.pageForeign(0, 0, new Uint8Array(8), Uint8Array.of(2, 0, 0))).toThrow(/flag/)
    expect(() => w.pageForeign(0, 0, new Uint8Array(8), Uint8Array.of(1, 0, 2, 9))).toThrow(/length/)
    expect(() => w.pageZero(0, 0, new Uint8Array(8), 256)).toThrow(/fill/)
    expect(() => w.end({ cache: { __proto__x: 1 } })).toThrow(/cache stat/)
    w.end()
    expect(() => w.flush()).toThrow(/ended/)
    expect(() => collect(0)).toThrow(RangeError)
  })

  it('the model decoder catches a desynchronised cache via the output CRC', () => {
    const { w, bytes } = collect()
    w.header(HEADER)
    const p = new Uint8Array(4096).fill(1)
    w.pageFull(0, 0, new Uint8Array(8), p)
    w.pageSame(0, 0, new Uint8Array(8), new Uint8Array(4096).fill(2)) // lies about the cached page
    w.end()
    const r = readStream(bytes())
    const m = new ModelDecoder()
    let err: unknown
    try {
      for (const it of r.items) m.feed(it)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ProtocolError)
    expect((err as ProtocolError).code).toBe('OUTPUT_MISMATCH')
    expect((err as ProtocolError).message).toMatch(
      /^xbzrle stream: batch 0 decoded to 8208 bytes with CRC 0x[0-9a-f]{8}, expected 8208 bytes/,
    )
  })

  it('bytesWritten counts emitted bytes', () => {
    const { w, bytes } = collect()
    w.header(HEADER)
    w.verbatim(new Uint8Array(10))
    w.flush()
    w.end()
    expect(w.bytesWritten).toBe(bytes().length)
  })
})
