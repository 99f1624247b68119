// Test-only: QEMU streams that re-send the same pages pass after pass, so their xbzrle encoding is mostly 4-byte
// 'same' frames and expands about a thousandfold when decoded (issue #19 item 6).
import { createHash } from 'node:crypto'
import { RamFlag, Section } from '../qemu/format.js'
import { XbzrleEncoder } from './encoder.js'

export interface AmplifyOptions {
  /** Target page size (4096, or 65536 as on hosts with 64 KiB pages). */
  pageSize: number
  /** Pages of the one RAM block. */
  pages: number
  /** Passes over every page after the first (each re-sends every page unchanged). */
  resends: number
  seed?: number
}

class Bytes {
  private parts: number[] = []
  u8(v: number) {
    this.parts.push(v & 0xff)
  }
  be32(v: number) {
    this.u8(v >>> 24)
    this.u8(v >>> 16)
    this.u8(v >>> 8)
    this.u8(v)
  }
  be64(v: number) {
    this.be32(Math.floor(v / 2 ** 32))
    this.be32(v >>> 0)
  }
  counted(s: string) {
    this.u8(s.length)
    for (const c of s) this.u8(c.charCodeAt(0))
  }
  take(): Buffer {
    const b = Buffer.from(this.parts)
    this.parts = []
    return b
  }
}

/**
 * Writes the QEMU stream in pieces (header, one PART section per pass, END, EOF) to `sink`. The same pass buffer
 * is handed out `resends + 1` times, so generating gigabytes costs only the time to read them.
 */
export function generateResendStream(o: AmplifyOptions, sink: (chunk: Buffer) => void): void {
  const RAM = 2
  const name = 'pc.ram'
  const size = o.pageSize * o.pages
  const b = new Bytes()
  b.be32(0x5145564d)
  b.be32(3)
  b.u8(Section.Configuration)
  b.be32('pc-i440fx-7.2'.length)
  for (const c of 'pc-i440fx-7.2') b.u8(c.charCodeAt(0))
  b.u8(Section.Start)
  b.be32(RAM)
  b.counted('ram')
  b.be32(0)
  b.be32(4)
  b.be64(size + RamFlag.MemSize)
  b.counted(name)
  b.be64(size)
  b.be64(RamFlag.Eos)
  b.u8(Section.Footer)
  b.be32(RAM)
  sink(b.take())
  // One pass: every page, non-zero pseudo-random content (fixed across passes).
  const pass = Buffer.alloc(5 + (8 + 1 + name.length) + o.pages * (8 + o.pageSize) + 8 + 5)
  let p = 0
  pass[p++] = Section.Part
  pass.writeUInt32BE(RAM, p)
  p += 4
  let s = (o.seed ?? 7) >>> 0 || 1
  for (let i = 0; i < o.pages; i++) {
    const off = i * o.pageSize
    const flags = RamFlag.Page + (i > 0 ? RamFlag.Continue : 0)
    pass.writeUInt32BE(Math.floor(off / 2 ** 32), p)
    pass.writeUInt32BE((off + flags) >>> 0, p + 4)
    p += 8
    if (i === 0) {
      pass[p++] = name.length
      p += pass.write(name, p, 'latin1')
    }
    for (let k = 0; k < o.pageSize; k += 4) {
      s ^= s << 13
      s >>>= 0
      s ^= s >>> 17
      s ^= s << 5
      s >>>= 0
      pass.writeUInt32BE(s, p + k)
    }
    p += o.pageSize
  }
  pass.writeUInt32BE(0, p)
  pass.writeUInt32BE(RamFlag.Eos, p + 4)
  p += 8
  pass[p++] = Section.Footer
  pass.writeUInt32BE(RAM, p)
  p += 4
  const body = pass.subarray(0, p)
  for (let r = 0; r <= o.resends; r++) sink(body)
  b.u8(Section.End)
  b.be32(RAM)
  b.be64(RamFlag.Eos)
  b.u8(Section.Footer)
  b.be32(RAM)
  b.u8(Section.Eof)
  sink(b.take())
}

/** The encoded stream and the SHA-256 and length of the QEMU stream it came from (hashed while generating). */
export function amplifiedStream(o: AmplifyOptions): { encoded: Buffer; sha256: string; qemuBytes: number } {
  const hash = createHash('sha256')
  let qemuBytes = 0
  const out: Uint8Array[] = []
  const enc = new XbzrleEncoder((c) => out.push(c), {
    targetPageSize: o.pageSize,
    // A cache well above the RAM size, so that every page stays cached (set-associative placement aside).
    cacheBytes: 2 ** Math.ceil(Math.log2(o.pageSize * o.pages * 4)),
  })
  generateResendStream(o, (c) => {
    hash.update(c)
    qemuBytes += c.length
    enc.push(c)
  })
  enc.finish()
  return { encoded: Buffer.concat(out), sha256: hash.digest('hex'), qemuBytes }
}
