import { describe, expect, it } from 'vitest'
import { readUlebSmall, readUlebSmallPacked, ulebSmallLength, writeUlebSmall } from './uleb.js'

describe('uleb128 small (QEMU /xbzrle/uleb)', () => {
  it('round-trips every value 0..0x3fff with the same byte count', () => {
    const buf = new Uint8Array(2)
    for (let i = 0; i <= 0x3fff; i++) {
      const n = writeUlebSmall(buf, 0, i)
      expect(n).toBe(ulebSmallLength(i))
      const r = readUlebSmall(buf, 0)
      if (r === null || r.value !== i || r.length !== n) throw new Error(`uleb mismatch at ${i}`)
    }
  })

  it('encodes the reference examples', () => {
    const enc = (n: number) => {
      const b = new Uint8Array(2)
      return [...b.subarray(0, writeUlebSmall(b, 0, n))]
    }
    expect(enc(127)).toEqual([0x7f])
    expect(enc(128)).toEqual([0x80, 0x01])
    expect(enc(4095)).toEqual([0xff, 0x1f])
    expect(enc(0x3fff)).toEqual([0xff, 0x7f])
  })

  it('rejects {0x80, 0x80} and accepts non-canonical 80 00', () => {
    expect(readUlebSmall(Uint8Array.of(0x80, 0x80), 0)).toBeNull()
    expect(readUlebSmallPacked(Uint8Array.of(0x80, 0x80), 0)).toBe(-1)
    expect(readUlebSmall(Uint8Array.of(0x80, 0x00), 0)).toEqual({ value: 0, length: 2 })
  })

  it('refuses to write values outside 0..0x3fff', () => {
    expect(() => writeUlebSmall(new Uint8Array(2), 0, 0x4000)).toThrow(RangeError)
    expect(() => writeUlebSmall(new Uint8Array(2), 0, -1)).toThrow(RangeError)
  })
})
