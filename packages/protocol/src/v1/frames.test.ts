// The page-frame layout of v1 (SPEC.md §5.2): delta-coded pageIndex, derived page-record headers, exact bytes,
// the reader's checks on them, and the wire overhead per frame.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  collect,
  concat,
  decodeStream,
  HEADER,
  qemuHdr,
  readStream,
  record,
  sameBytes,
} from '../test-util.js'
import { ByteWriter } from '../wire/byte-writer.js'
import { crc32 } from '../wire/crc32.js'
import { derivableFlags, pageIndexField, unzigzag, writeDerivedHdr, zigzag } from './page-key.js'
import type { Frame, StreamHeader } from './types.js'

const PAGE_F = 0x08
const ZERO_F = 0x02
const CONT_F = 0x20
const PAGE = 4096

/** be64 of an exact integer (BigInt reference). */
const be64 = (v: bigint) => {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, v)
  return b
}

/** The frame bytes of every batch a writer produced (batch seq < 128: 1-byte seq varint). */
function batchFrames(chunks: Uint8Array[]): Uint8Array[] {
  return chunks.filter((c) => c[0] === 0x42).map((c) => c.subarray(5 + 1 + 8, c.length - 4))
}

function framesOf(stream: Uint8Array): Frame[] {
  const r = readStream(stream)
  expect(r.error).toBeUndefined()
  return r.items.flatMap((i) => (i.type === 'batch' ? [...i.batch.frames()] : []))
}

/** A stream around one hand-made batch body (frames + declared output), to test the reader's checks. */
function handMade(frames: number[], output: Uint8Array = new Uint8Array(0), zeroFrames = 0) {
  const head = collect()
  head.w.header(HEADER)
  const b = new ByteWriter()
  b.varint(0)
  b.u32le(output.length)
  b.u32le(crc32(output))
  b.bytes(Uint8Array.from(frames))
  return concat([
    head.chunks[0]!,
    record(0x42, b.take()),
    record(0x45, Uint8Array.of(output.length, 1, 0, 0, 0, zeroFrames, 0, 0)),
  ])
}

describe('v1 page keys and headers', () => {
  it('zigzag maps 0, −1, 1, −2 … to 0, 1, 2, 3 … and is exact over the whole pageIndex range', () => {
    expect([0, -1, 1, -2, 2, -64, 63, 64].map(zigzag)).toEqual([0, 1, 2, 3, 4, 127, 126, 128])
    for (const n of [2 ** 40 - 1, -(2 ** 40), 2 ** 40, 2 ** 31, -(2 ** 31) - 1, 2 ** 32 + 1])
      expect(unzigzag(zigzag(n))).toBe(n)
    expect(zigzag(-(2 ** 40))).toBe(2 ** 41 - 1) // the most negative delta: page 2^40 − 1, then page 0
    expect(unzigzag(2 ** 53 - 1)).toBe(-(2 ** 52))
    expect(unzigzag(2 ** 53 - 2)).toBe(2 ** 52 - 1)
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 40 - 1 }),
        fc.integer({ min: -1, max: 2 ** 40 - 1 }),
        (p, prev) => {
          const f = pageIndexField(p, prev)
          expect(Number.isSafeInteger(f) && f >= 0).toBe(true)
          expect(prev + 1 + unzigzag(f)).toBe(p)
        },
      ),
    )
  })

  it('derived headers are exact up to pageIndex 2^40 − 1 at every page size (offsets up to 2^56)', () => {
    const sizes = [512, 1024, 4096, 16384, 65536]
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 0, max: 2 ** 40 - 1 }), fc.constantFrom(0, 1, 2 ** 32 - 1, 2 ** 40 - 1)),
        fc.constantFrom(...sizes),
        fc.nat(65535),
        (idx, ps, f) => {
          const flags = f % ps
          const ref = be64(BigInt(idx) * BigInt(ps) + BigInt(flags))
          const out = new Uint8Array(10).fill(0xee)
          writeDerivedHdr(out, 1, idx, ps, flags)
          expect(sameBytes(out.subarray(1, 9), ref)).toBe(true)
          expect([out[0], out[9]]).toEqual([0xee, 0xee])
          expect(derivableFlags(ref, idx, ps)).toBe(flags)
          // the neighbours and other lengths do not derive for this index
          expect(derivableFlags(be64(BigInt(idx + 1) * BigInt(ps) + BigInt(flags)), idx, ps)).toBe(-1)
          expect(derivableFlags(be64(BigInt(idx) * BigInt(ps) + BigInt(flags) + (1n << 60n)), idx, ps)).toBe(
            -1,
          )
          expect(derivableFlags(concat([ref, Uint8Array.of(0)]), idx, ps)).toBe(-1)
        },
      ),
      { numRuns: 2000 },
    )
    const top = be64((2n ** 40n - 1n) * 65536n + 0xffffn)
    expect([...top]).toEqual([0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    expect(derivableFlags(top, 2 ** 40 - 1, 65536)).toBe(0xffff)
  })

  it('writes the documented bytes: delta-coded pageIndex, h = flags + 1, raw headers with h = 0', () => {
    const { w, chunks } = collect()
    w.header(HEADER)
    const page = new Uint8Array(PAGE).fill(7)
    w.pageZero(0, 10, qemuHdr(10 * PAGE, ZERO_F), 0) // h = 0x22 + 1
    w.pageZero(0, 11, qemuHdr(11 * PAGE, ZERO_F), 0) // sequential: delta 0
    w.pageFull(0, 3, qemuHdr(3 * PAGE, PAGE_F, 'pc.ram'), page) // delta 3 − 12 = −9 → 17; named → raw
    w.pageSame(2, 3, qemuHdr(5 * PAGE, PAGE_F), page) // delta 3 − 4 = −1 → 1; offset ≠ 3 * pageSize → raw
    w.invalidate(0, 200) // delta 196 → 392 = 88 03
    w.end()
    const [f] = batchFrames(chunks)
    expect([...f!.subarray(0, 10)]).toEqual([0x05, 0x00, 0x14, 0x23, 0x00, 0x05, 0x00, 0x00, 0x23, 0x00])
    const full = f!.subarray(10, 10 + 4 + 1 + 15)
    expect([...full]).toEqual([0x02, 0x00, 0x11, 0x00, 0x0f, ...qemuHdr(3 * PAGE, PAGE_F, 'pc.ram')])
    const rest = f!.subarray(10 + 20 + PAGE)
    // SAME (2,3) raw 8-byte header; INVALIDATE (0,200)
    const same = [0x04, 0x02, 0x01, 0x00, 0x08, ...qemuHdr(5 * PAGE, PAGE_F)]
    expect([...rest]).toEqual([...same, 0x07, 0x00, 0x88, 0x03])
    const frames = framesOf(concat(chunks))
    expect(frames.map((x) => ('pageIndex' in x ? [x.blockId, x.pageIndex] : []))).toEqual([
      [0, 10],
      [0, 11],
      [0, 3],
      [2, 3],
      [0, 200],
    ])
  })

  it('the pageIndex delta restarts at every batch (prev = −1), so batches parse independently', () => {
    const { w, chunks } = collect()
    w.header(HEADER)
    w.pageZero(0, 100, qemuHdr(100 * PAGE, ZERO_F), 0)
    w.flush()
    w.pageZero(0, 101, qemuHdr(101 * PAGE, ZERO_F), 0)
    w.pageZero(0, 102, qemuHdr(102 * PAGE, ZERO_F), 0)
    w.end()
    const [a, b] = batchFrames(chunks)
    expect([...a!]).toEqual([0x05, 0x00, 0xc8, 0x01, 0x23, 0x00]) // zigzag(100) = 200
    expect([...b!]).toEqual([0x05, 0x00, 0xca, 0x01, 0x23, 0x00, 0x05, 0x00, 0x00, 0x23, 0x00]) // 202, then 0
    // a batch record on its own (with a fresh reader context) yields the right keys
    expect(framesOf(concat(chunks)).map((x) => ('pageIndex' in x ? x.pageIndex : -1))).toEqual([
      100, 101, 102,
    ])
  })

  it('the writer chooses the derived form exactly when the rule holds (flags < pageSize, 8 bytes, offset match)', () => {
    const h: StreamHeader = { ...HEADER, pageSize: 512 }
    const cases: { idx: number; hdr: Uint8Array; derived: boolean }[] = [
      { idx: 0, hdr: be64(0n), derived: true },
      { idx: 7, hdr: be64(7n * 512n + 511n), derived: true },
      { idx: 7, hdr: be64(7n * 512n + 512n), derived: false }, // flags = pageSize
      { idx: 7, hdr: be64(6n * 512n + 511n), derived: false },
      { idx: 2 ** 40 - 1, hdr: be64((2n ** 40n - 1n) * 512n + 0x28n), derived: true },
      { idx: 2 ** 40 - 1, hdr: be64((2n ** 40n - 1n) * 512n + 0x28n + (1n << 63n)), derived: false },
      { idx: 1, hdr: new Uint8Array(0), derived: false },
      { idx: 1, hdr: be64(512n).subarray(0, 7), derived: false },
    ]
    for (const c of cases) {
      const { w, chunks } = collect()
      w.header(h)
      w.pageZero(0, c.idx, c.hdr, 9)
      w.end()
      const [f] = batchFrames(chunks)
      const fieldLen = pageIndexField(c.idx, -1) < 128 ? 1 : 6
      const form = f![2 + fieldLen]!
      expect(form === 0, `${c.idx} ${[...c.hdr]}`).toBe(!c.derived)
      const [frame] = framesOf(concat(chunks))
      expect(frame?.kind === 'zero' && sameBytes(frame.hdr, c.hdr)).toBe(true)
    }
  })

  it('derived hdr views are rebuilt per frame and stay valid while kept; raw ones are views into the input', () => {
    const { w, chunks } = collect()
    w.header(HEADER)
    for (let i = 0; i < 3000; i++) w.pageZero(i % 2, i, qemuHdr(i * PAGE, ZERO_F), i & 0xff)
    w.pageZero(0, 5, qemuHdr(5 * PAGE, ZERO_F, 'pc.ram'), 1)
    w.end()
    const stream = concat(chunks)
    const frames = framesOf(stream)
    frames.forEach((f, i) => {
      if (f.kind !== 'zero') throw new Error(f.kind)
      if (i < 3000) {
        expect(sameBytes(f.hdr, qemuHdr(i * PAGE, ZERO_F)), `frame ${i}`).toBe(true)
        expect(f.hdr.buffer).not.toBe(stream.buffer)
      } else expect(f.hdr.buffer).toBe(stream.buffer)
    })
  })

  it('reader checks: canonical varints, h − 1 < pageSize, pageIndex ≥ 0 and ≤ 2^40 − 1, raw length, raw form', () => {
    // one frame of kind 05 (ZERO), or INVALIDATE frames only
    const msg = (frames: number[], out?: Uint8Array) =>
      readStream(handMade(frames, out, frames[0] === 0x05 ? 1 : 0)).error
    const zeroOut = concat([qemuHdr(0, ZERO_F), Uint8Array.of(0)])
    // the valid baseline: ZERO (0, 0), h = 0x23, fill 0
    expect(msg([0x05, 0x00, 0x00, 0x23, 0x00], zeroOut)).toBeUndefined()
    // largest flags: h = pageSize
    expect(msg([0x05, 0x00, 0x00, 0x80, 0x20, 0x00], concat([be64(4095n), Uint8Array.of(0)]))).toBeUndefined()
    const e1 = msg([0x05, 0x00, 0x00, 0x81, 0x20, 0x00])
    expect(e1?.code).toBe('MALFORMED')
    expect(e1?.message).toBe(
      'xbzrle stream: batch 0: derived header flags 4096 not below pageSize 4096 at offset 49 (corrupted input or not written by a conforming encoder)',
    )
    const e2 = msg([0x07, 0x00, 0x04, 0x07, 0x00, 0x07])
    expect(e2?.code).toBe('MALFORMED')
    expect(e2?.message).toMatch(/batch 0: pageIndex delta -4 from 3 goes below 0 at offset 51 /)
    expect(msg([0x07, 0x00, 0x01])?.message).toMatch(/pageIndex delta -1 from 0 goes below 0/)
    // 2^40 − 1 is fine, 2^40 is LIMIT (zigzag(2^40) = 2^41 = 80 80 80 80 80 40)
    expect(msg([0x07, 0x00, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x3f])).toBeUndefined()
    const e3 = msg([0x07, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40])
    expect(e3?.code).toBe('LIMIT')
    expect(e3?.message).toMatch(/page key \(0, 1099511627776\) out of range/)
    // overlong pageIndex and h varints
    expect(msg([0x07, 0x00, 0x80, 0x00])?.message).toMatch(/pageIndex delta is a non-canonical/)
    expect(msg([0x05, 0x00, 0x00, 0xa3, 0x00, 0x00])?.message).toMatch(/hdr form is a non-canonical/)
    // raw header limit (264) and the raw form of a derivable header
    const e4 = msg([0x05, 0x00, 0x00, 0x00, 0x89, 0x02])
    expect(e4?.code).toBe('LIMIT')
    expect(e4?.message).toMatch(/page record header of 265 bytes \(max 264\) at offset 50/)
    const e5 = msg([0x05, 0x00, 0x00, 0x00, 0x08, ...qemuHdr(0, ZERO_F), 0x00], zeroOut)
    expect(e5?.code).toBe('MALFORMED')
    expect(e5?.message).toMatch(/raw page record header has the derived form \(must be written as h = 35\)/)
    // a raw 8-byte header that does not derive is fine
    const odd = qemuHdr(PAGE, ZERO_F)
    expect(msg([0x05, 0x00, 0x00, 0x00, 0x08, ...odd, 0x00], concat([odd, Uint8Array.of(0)]))).toBeUndefined()
  })

  it('overhead: ZERO frames cost ≤ 5 bytes, sequential FULL frames ≤ 5 bytes + the page (CONTINUE headers)', () => {
    // A typical QEMU RAM section: block 0 named once, then 8-byte CONTINUE headers, mostly sequential pages
    // with small gaps (clean pages skipped).
    const { w, chunks } = collect(4 * 1024 * 1024)
    w.header(HEADER)
    const N = 20000
    let idx = 1 << 20 // a 4 GiB guest's upper half
    w.pageZero(0, idx, qemuHdr(idx * PAGE, ZERO_F, 'pc.ram'), 0)
    let qemuBytes = 0
    for (let i = 0; i < N; i++) {
      idx += 1 + (i % 7 === 0 ? i % 60 : 0)
      const h = qemuHdr(idx * PAGE, ZERO_F | CONT_F)
      w.pageZero(0, idx, h, 0)
      qemuBytes += h.length + 1
    }
    w.flush()
    const zeroBatch = batchFrames(chunks).at(-1)!
    const firstLen = 1 + 1 + 4 + 1 + 1 + 15 + 1 // kind, block, zigzag(2^20) = 2^21 (4 bytes), h = 0, len, hdr, fill
    const perZero = (zeroBatch.length - firstLen) / N
    expect(perZero).toBe(5)
    expect(qemuBytes / N).toBe(9)

    const page = new Uint8Array(PAGE).fill(0x5a)
    const M = 500
    const before = batchFrames(chunks).length
    for (let i = 0; i < M; i++) w.pageFull(0, 7 + i, qemuHdr((7 + i) * PAGE, PAGE_F | CONT_F), page)
    w.flush()
    const fullBatches = batchFrames(chunks).slice(before)
    const wire = fullBatches.reduce((n, b) => n + b.length, 0)
    const overhead = (wire - M * PAGE) / M
    expect(overhead).toBeLessThanOrEqual(5)
    expect(overhead).toBeCloseTo(4, 1) // kind, blockId, pageIndex delta, h; the first frame's delta is 1 byte too
    w.end()
    const out = decodeStream(concat(chunks))
    expect(out.error).toBeUndefined()
  })
})
