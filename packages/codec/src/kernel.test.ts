import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { XbzrleDecodeError } from './errors.js'
import { getKernel } from './kernel.js'
import type { EncodeMode, KernelName } from './kernel-types.js'
import {
  arbPagePair,
  arbRandomPair,
  type PagePair,
  refDecode,
  refEncode,
  refEncodeCompact,
} from './xbzrle-ref.testutil.js'

const PAGE = 4096
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

function enc(k: KernelName, old: Uint8Array, cur: Uint8Array, dlen: number, mode: EncodeMode = 'canonical') {
  const dst = new Uint8Array(dlen)
  const n = getKernel(k).encode(old, cur, dst, mode)
  return n > 0 ? dst.slice(0, n) : n
}

/** QEMU test-xbzrle.c encode_decode fixture: old=test, new=buffer. */
function qemuPair(diffLen: number): PagePair {
  const buffer = new Uint8Array(PAGE)
  const test = new Uint8Array(PAGE)
  for (let i = diffLen; i > 0; i--) {
    buffer[1000 + i] = i & 0xff
    test[1000 + i] = (i + 4) & 0xff
  }
  buffer[1000 + diffLen + 3] = 103
  test[1000 + diffLen + 3] = 107
  buffer[1000 + diffLen + 5] = 105
  test[1000 + diffLen + 5] = 109
  return { old: test, cur: buffer }
}

describe.each(['wasm', 'ts'] as const)('%s kernel', (k) => {
  const kernel = getKernel(k)

  it('reports its name', () => {
    expect(kernel.name).toBe(k)
  })

  describe('QEMU test-xbzrle.c', () => {
    it('encode_decode_zero and _unchanged: identical pages encode to 0', () => {
      for (const diffLen of [0, 1, 77, 3089]) {
        const buf = new Uint8Array(PAGE)
        for (let i = diffLen; i > 0; i--) buf[1000 + i] = i & 0xff
        buf[1000 + diffLen + 3] = 103
        buf[1000 + diffLen + 5] = 105
        expect(enc(k, buf, buf, PAGE)).toBe(0)
        expect(enc(k, buf, buf.slice(), PAGE)).toBe(0)
        expect(enc(k, buf, buf.slice(), PAGE, 'compact')).toBe(0)
      }
    })

    it('encode_decode_1_byte: ff 1f 01 01, decode returns 4096', () => {
      const old = new Uint8Array(PAGE)
      const cur = new Uint8Array(PAGE)
      cur[4095] = 1
      const d = enc(k, old, cur, PAGE)
      expect(d).toBeInstanceOf(Uint8Array)
      expect(hex(d as Uint8Array)).toBe('ff1f0101')
      const page = new Uint8Array(PAGE)
      expect(kernel.decode(d as Uint8Array, page)).toBe(4096)
      expect(page).toEqual(cur)
    })

    it('encode_decode_overflow: every other byte changed → -1', () => {
      const old = new Uint8Array(PAGE)
      const cur = new Uint8Array(PAGE)
      for (let i = 0; i < 2047; i++) cur[i * 2] = 1
      expect(enc(k, old, cur, PAGE)).toBe(-1)
      expect(enc(k, old, cur, PAGE, 'compact')).toBe(-1)
    })

    it('all 4096 bytes differ → -1', () => {
      expect(enc(k, new Uint8Array(PAGE), new Uint8Array(PAGE).fill(1), PAGE)).toBe(-1)
    })

    it.each([
      [0, 'eb070167010169'],
      [1, 'e90701010201670101' + '69'],
      [2, 'e9070201020201670101' + '69'],
    ])('encode_decode vector diff_len %i', (diffLen, want) => {
      const { old, cur } = qemuPair(diffLen)
      const d = enc(k, old, cur, PAGE) as Uint8Array
      expect(hex(d)).toBe(want)
      const page = old.slice()
      expect(kernel.decode(d, page)).toBe(1000 + diffLen + 6)
      expect(page).toEqual(cur)
    })

    it('encode_decode vector diff_len 300', () => {
      const { old, cur } = qemuPair(300)
      const d = enc(k, old, cur, PAGE) as Uint8Array
      const body = Array.from({ length: 300 }, (_, i) => (i + 1) & 0xff)
      expect([...d]).toEqual([0xe9, 0x07, 0xac, 0x02, ...body, 0x02, 0x01, 0x67, 0x01, 0x01, 0x69])
      expect(d.length).toBe(310)
    })

    it('encode_decode: 10000 random fixtures round-trip, decode < 4096', () => {
      let seed = 12345
      const rnd = (n: number) => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
        return seed % n
      }
      const dst = new Uint8Array(PAGE)
      for (let t = 0; t < 10000; t++) {
        const diffLen = rnd(PAGE - 1006)
        const { old, cur } = qemuPair(diffLen)
        const n = kernel.encode(old, cur, dst)
        // Reference §5.6: 2 + uleb_len(d) + d + 6 for d >= 1, 7 bytes for d = 0.
        const want = diffLen === 0 ? 7 : 2 + (diffLen < 128 ? 1 : 2) + diffLen + 6
        if (n !== want) throw new Error(`length ${n} for diff_len ${diffLen}`)
        const r = kernel.decode(dst.subarray(0, n), old)
        if (r >= PAGE || r !== 1000 + diffLen + 6 || !Buffer.from(old).equals(Buffer.from(cur)))
          throw new Error(`round trip failed at diff_len ${diffLen}`)
      }
    })
  })

  describe('reference vectors', () => {
    it('only byte 0 changed: 00 01 aa, decode returns 1', () => {
      const cur = new Uint8Array(PAGE)
      cur[0] = 0xaa
      const d = enc(k, new Uint8Array(PAGE), cur, PAGE) as Uint8Array
      expect(hex(d)).toBe('0001aa')
      expect(kernel.decode(d, new Uint8Array(PAGE))).toBe(1)
    })

    it('128 bytes of 0x11 at offset 100: 64 80 01 + 128 × 11', () => {
      const cur = new Uint8Array(PAGE)
      cur.fill(0x11, 100, 228)
      const d = enc(k, new Uint8Array(PAGE), cur, PAGE) as Uint8Array
      expect(d.length).toBe(131)
      expect(hex(d.subarray(0, 3))).toBe('648001')
      expect(d.subarray(3).every((b) => b === 0x11)).toBe(true)
    })

    it.each([
      ['0000', 'nzrun-truncated', 1],
      ['000000', 'nzrun-zero', 1],
      ['000107000108', 'zrun-zero', 3],
      ['ff1f020101', 'nzrun-overrun', 2],
      ['05', 'zrun-truncated', 0],
      ['00010705', 'zrun-truncated', 3],
      ['8080', 'zrun-uleb', 0],
      ['008080', 'nzrun-uleb', 1],
      ['0001', 'nzrun-truncated', 1],
      ['0003aabb', 'nzrun-src', 1],
      ['ff7f0101', 'zrun-overrun', 0],
    ])('decoder rejects %s (%s at %i) and leaves the page untouched', (h, rule, offset) => {
      const page = new Uint8Array(PAGE).fill(0x5a)
      let err: unknown
      try {
        kernel.decode(Uint8Array.from(Buffer.from(h, 'hex')), page)
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(XbzrleDecodeError)
      expect((err as XbzrleDecodeError).rule).toBe(rule)
      expect((err as XbzrleDecodeError).offset).toBe(offset)
      expect((err as XbzrleDecodeError).message).toContain(rule)
      expect(page.every((b) => b === 0x5a)).toBe(true)
    })

    it('accepts an empty delta and the non-canonical 80 00 zrun', () => {
      const page = new Uint8Array(16)
      expect(kernel.decode(new Uint8Array(0), page)).toBe(0)
      expect(kernel.decode(Uint8Array.of(0x80, 0x00, 0x01, 0x09), page)).toBe(1)
      expect(page[0]).toBe(9)
    })

    it('does not apply the valid prefix of an invalid delta (QEMU would)', () => {
      const page = new Uint8Array(64)
      expect(() => kernel.decode(Uint8Array.of(0x00, 0x01, 0x07, 0x05), page)).toThrow(XbzrleDecodeError)
      expect(page[0]).toBe(0)
    })
  })

  describe('properties', () => {
    const modes: EncodeMode[] = ['canonical', 'compact']

    it('canonical output equals the byte-loop model for any dst length (incl. the L+2 rule)', () => {
      fc.assert(
        fc.property(fc.oneof(arbPagePair, arbRandomPair), fc.nat(), ({ old, cur }, dl) => {
          const dlen = dl % (cur.length + 8)
          const want = refEncode(old, cur, dlen)
          const got = enc(k, old, cur, dlen)
          expect(got).toEqual(want)
        }),
        { numRuns: 600 },
      )
    })

    it('compact output equals its model and is never longer than canonical', () => {
      fc.assert(
        fc.property(fc.oneof(arbPagePair, arbRandomPair), ({ old, cur }) => {
          const big = cur.length * 2 + 8
          const got = enc(k, old, cur, big, 'compact')
          expect(got).toEqual(refEncodeCompact(old, cur, big))
          const canon = refEncode(old, cur, big)
          if (typeof canon === 'number') expect(got).toBe(canon)
          else expect((got as Uint8Array).length).toBeLessThanOrEqual(canon.length)
        }),
        { numRuns: 400 },
      )
    })

    it.each(modes)('decode(encode(old, new), old) == new (%s)', (mode) => {
      fc.assert(
        fc.property(fc.oneof(arbPagePair, arbRandomPair), ({ old, cur }) => {
          const dst = new Uint8Array(cur.length * 2 + 8)
          const n = kernel.encode(old, cur, dst, mode)
          expect(n).toBeGreaterThanOrEqual(0)
          const page = old.slice()
          const end = kernel.decode(dst.subarray(0, n), page)
          expect(page).toEqual(cur)
          const ref = refDecode(dst.subarray(0, n), old)
          expect(ref === -1 ? -1 : ref.end).toBe(end)
        }),
        { numRuns: 400 },
      )
    })

    it('near-overflow: canonical needs L+2 <= dlen with a trailing zrun, L <= dlen without', () => {
      // One changed run [s, e) → L = ul(s) + ul(e-s) + (e-s).
      for (const trailing of [true, false]) {
        const len = 256
        const s = 10
        const e = trailing ? 200 : len
        const old = new Uint8Array(len)
        const cur = old.slice()
        cur.fill(1, s, e)
        const L = 1 + 2 + (e - s)
        const need = trailing ? L + 2 : L
        expect(enc(k, old, cur, need)).toBeInstanceOf(Uint8Array)
        expect(enc(k, old, cur, need - 1)).toBe(-1)
        // compact mode uses the plain rule L <= dlen
        expect(enc(k, old, cur, L, 'compact')).toBeInstanceOf(Uint8Array)
        expect(enc(k, old, cur, L - 1, 'compact')).toBe(-1)
      }
    })

    it('works on unaligned views into bigger buffers', () => {
      fc.assert(
        fc.property(
          arbPagePair,
          fc.integer({ min: 0, max: 7 }),
          fc.integer({ min: 0, max: 7 }),
          (p, a, b) => {
            const bigO = new Uint8Array(p.old.length + 16)
            const bigN = new Uint8Array(p.cur.length + 16)
            bigO.set(p.old, a)
            bigN.set(p.cur, b)
            const old = bigO.subarray(a, a + p.old.length)
            const cur = bigN.subarray(b, b + p.cur.length)
            expect(enc(k, old, cur, cur.length + 8)).toEqual(refEncode(p.old, p.cur, cur.length + 8))
          },
        ),
        { numRuns: 200 },
      )
    })

    it('rejects pages whose length is not a multiple of 8 or that differ in length', () => {
      expect(() => kernel.encode(new Uint8Array(12), new Uint8Array(12), new Uint8Array(32))).toThrow(
        RangeError,
      )
      expect(() => kernel.encode(new Uint8Array(16), new Uint8Array(8), new Uint8Array(32))).toThrow(
        RangeError,
      )
    })

    it('large pages: runs over 0x3fff cannot be represented → -1', () => {
      const old = new Uint8Array(32768)
      const cur = old.slice()
      cur[20000] = 1 // zrun of 20000 before the change
      expect(enc(k, old, cur, 32768)).toBe(-1)
      cur[20000] = 0
      cur[5] = 1 // zrun 5, nz 1, trailing zrun: fine
      expect(hex(enc(k, old, cur, 32768) as Uint8Array)).toBe('050101')
    })
  })
})

describe('kernels agree', () => {
  it('wasm and ts produce identical bytes in both modes', () => {
    fc.assert(
      fc.property(fc.oneof(arbPagePair, arbRandomPair), fc.nat(), ({ old, cur }, dl) => {
        const dlen = dl % (cur.length + 8)
        for (const mode of ['canonical', 'compact'] as const) {
          expect(enc('wasm', old, cur, dlen, mode)).toEqual(enc('ts', old, cur, dlen, mode))
        }
      }),
      { numRuns: 500 },
    )
  })
})
