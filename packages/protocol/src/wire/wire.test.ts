import { createRequire } from 'node:module'
import { crc32 as zlibCrc32 } from 'node:zlib'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ByteWriter, readU32le } from './byte-writer.js'
import { ChunkQueue } from './chunk-queue.js'
import {
  crc32,
  crc32Byte,
  crc32ByteSmall,
  crc32Combine,
  crc32CombineShift,
  crc32CombineTable,
  crc32Implementation,
  crc32Range,
  crc32Shift,
  crc32ShiftTable,
} from './crc32.js'
import { readVarint, varintLength, writeVarint } from './varint.js'

describe('varint', () => {
  it('round-trips every safe integer size class', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        const b = new Uint8Array(10)
        const end = writeVarint(b, 0, n)
        expect(end).toBe(varintLength(n))
        expect(readVarint(b, 0, end)).toEqual({ ok: true, value: n, length: end })
      }),
    )
  })
  it('encodes known values', () => {
    const enc = (n: number) => {
      const b = new Uint8Array(10)
      return Array.from(b.subarray(0, writeVarint(b, 0, n)))
    }
    expect(enc(0)).toEqual([0])
    expect(enc(127)).toEqual([0x7f])
    expect(enc(128)).toEqual([0x80, 0x01])
    expect(enc(300)).toEqual([0xac, 0x02])
    expect(enc(Number.MAX_SAFE_INTEGER)).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f])
  })
  it('rejects overlong, too long, too large and incomplete forms', () => {
    expect(readVarint(Uint8Array.of(0x80, 0x00), 0, 2)).toEqual({ ok: false, reason: 'overlong' })
    expect(readVarint(Uint8Array.of(0xff, 0x80, 0x00), 0, 3)).toEqual({ ok: false, reason: 'overlong' })
    expect(readVarint(new Uint8Array(9).fill(0x80), 0, 9)).toEqual({ ok: false, reason: 'too-long' })
    expect(readVarint(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10), 0, 8)).toEqual({
      ok: false,
      reason: 'too-large',
    })
    expect(readVarint(Uint8Array.of(0x80), 0, 1)).toEqual({ ok: false, reason: 'incomplete' })
  })
})

describe('crc32', () => {
  it('is the zlib CRC-32 and composes', () => {
    const a = new TextEncoder().encode('123456789')
    expect(crc32(a)).toBe(0xcbf43926)
    expect(crc32(a.subarray(4), crc32(a.subarray(0, 4)))).toBe(0xcbf43926)
    expect(crc32Byte(0x39, crc32(a.subarray(0, 8)))).toBe(0xcbf43926)
    expect(crc32(new Uint8Array(0))).toBe(0)
  })
})

describe('ByteWriter', () => {
  it('grows, patches and hands out caller-owned copies', () => {
    const w = new ByteWriter(16)
    const at = w.reserve(4)
    for (let i = 0; i < 1000; i++) w.varint(i)
    w.patchU32le(at, 0xdeadbeef)
    const a = w.take()
    expect(readU32le(a, 0)).toBe(0xdeadbeef)
    expect(a.length).toBe(4 + 128 + 2 * 872)
    w.u8(9)
    expect(a[0]).toBe(0xef) // not overwritten by later writes
    expect(w.take()).toEqual(Uint8Array.of(9))
  })
})

describe('ChunkQueue', () => {
  it('gives views inside one chunk, copies across chunks, tracks offsets', () => {
    const q = new ChunkQueue()
    const c1 = Uint8Array.of(1, 2, 3)
    q.push(c1)
    q.push(Uint8Array.of(4, 5))
    expect(q.view(2).buffer).toBe(c1.buffer)
    expect(Array.from(q.view(5))).toEqual([1, 2, 3, 4, 5])
    expect(q.byteAt(3)).toBe(4)
    q.consume(4)
    expect(q.offset).toBe(4)
    expect(q.length).toBe(1)
    expect(Array.from(q.view(1))).toEqual([5])
    for (let i = 0; i < 1000; i++) q.push(Uint8Array.of(i & 0xff))
    q.consume(900)
    expect(q.byteAt(0)).toBe(899 & 0xff)
    expect(q.length).toBe(101)
  })
})

describe('crc32 combine and table CRC', () => {
  it('crc32Combine(crc(a), crc(b), |b|) = crc(a ‖ b); crc32Range and crc32ByteSmall match crc32', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.uint8Array({ maxLength: 5000 }),
        fc.nat(),
        (a, b, k) => {
          const ab = new Uint8Array(a.length + b.length)
          ab.set(a)
          ab.set(b, a.length)
          const want = crc32(ab)
          expect(crc32Combine(crc32(a), crc32(b), b.length)).toBe(want)
          expect(crc32CombineShift(crc32(a), crc32(b), crc32Shift(b.length))).toBe(want)
          expect(crc32CombineTable(crc32(a), crc32(b), crc32ShiftTable(b.length))).toBe(want)
          const s = b.length === 0 ? 0 : k % b.length
          const e = Math.min(b.length, s + (k % 70))
          expect(crc32Range(b, s, e, crc32(a))).toBe(crc32(b.subarray(s, e), crc32(a)))
          expect(crc32ByteSmall(k & 0xff, crc32(a))).toBe(crc32Byte(k & 0xff, crc32(a)))
        },
      ),
    )
    expect(crc32Combine(0, 0, 0)).toBe(0)
  })

  it('crc32ShiftTable holds, for every byte of every position, the shift applied to that byte alone', () => {
    for (const len of [0, 1, 7, 4096, 65536, 1 << 21]) {
      const shift = crc32Shift(len)
      const t = crc32ShiftTable(len)
      for (let k = 0; k < 4; k++)
        for (let b = 0; b < 256; b++)
          expect(t[k * 256 + b]! >>> 0).toBe(crc32CombineShift((b << (8 * k)) >>> 0, 0, shift))
    }
  })

  it('starts on zlib and moves to the native CRC once 16 MiB went through, with the same CRCs', () => {
    const big = new Uint8Array(9 << 20).map((_, i) => (i * 2654435761) >>> 24)
    const want = zlibCrc32(big) >>> 0
    expect(crc32(big)).toBe(want)
    expect(crc32(big)).toBe(want)
    expect(crc32Range(big, 100, big.length)).toBe(zlibCrc32(big.subarray(100)) >>> 0)
    const addon = (() => {
      try {
        createRequire(import.meta.url)('@node-rs/crc32')
        return true
      } catch {
        return false
      }
    })()
    expect(crc32Implementation()).toBe(addon && process.env.XBZRLE_CRC32 !== 'zlib' ? 'node-rs' : 'zlib')
  })

  it('the table CRC (short inputs, single bytes) equals zlib crc32', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat(), (b, prev) => {
        const p = prev >>> 0
        expect(crc32(b, p)).toBe(zlibCrc32(b, p) >>> 0)
        expect(crc32Byte(prev & 0xff, p)).toBe(zlibCrc32(new Uint8Array([prev & 0xff]), p) >>> 0)
      }),
    )
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926)
  })

  it('ByteWriter.take hands out exactly the written bytes, a full buffer without copying', () => {
    const w = new ByteWriter(16)
    for (let i = 0; i < 12; i++) w.u8(i)
    const buf = w.buf
    const a = w.take()
    expect([...a]).toEqual([...Array(12).keys()])
    expect(a.buffer).toBe(buf.buffer) // handed out, not copied
    expect(w.buf).not.toBe(buf)
    w.u8(7)
    const b = w.take()
    expect([...b]).toEqual([7])
    expect(b.buffer).not.toBe(w.buf.buffer) // a small part is copied out
    expect([...a]).toEqual([...Array(12).keys()]) // unaffected by later writes
  })
})
