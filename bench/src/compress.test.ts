import { XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { FrameReader } from '@xbzrle/protocol/v1'
import { describe, expect, it } from 'vitest'
import { batchFrames } from './compress.js'

/** A batch record: 0x42, u32le length, varint seq, 8 bytes of output length and CRC, then the frames. */
function record(seq: number[], frames: number[]): Uint8Array {
  const body = [...seq, 1, 2, 3, 4, 5, 6, 7, 8, ...frames]
  const len = Buffer.alloc(4)
  len.writeUInt32LE(body.length)
  return Uint8Array.from([0x42, ...len, ...body])
}

describe('batchFrames (the compress stage reads v1 batch records)', () => {
  it('takes the frame bytes after a one- or multi-byte seq; skips other records', () => {
    const frames = batchFrames([
      Uint8Array.from([0x48, 1, 2, 3]), // a header record
      record([0x05], [9, 9, 9]),
      record([0x80, 0x01], [7, 8]),
    ])
    expect(frames.map((f) => [...f])).toEqual([
      [9, 9, 9],
      [7, 8],
    ])
  })

  it('refuses a record whose length runs past the chunk', () => {
    const bad = record([0x01], [1, 2, 3]).slice(0, 10)
    expect(() => batchFrames([bad])).toThrow(/bad batch record/)
  })

  it('finds one frame region per batch of a real v1 stream, as the v1 reader counts them', () => {
    const chunks: Uint8Array[] = []
    const enc = new XbzrleEncoder((c) => chunks.push(c), { formatVersion: 1 })
    const page = new Uint8Array(4096).fill(7)
    // not a QEMU stream: the encoder passes it through verbatim, in batches
    for (let i = 0; i < 600; i++) enc.push(page)
    enc.finish()
    const reader = new FrameReader()
    let batches = 0
    for (const c of chunks) {
      reader.push(c)
      for (let item = reader.next(); item; item = reader.next()) if (item.type === 'batch') batches++
    }
    const frames = batchFrames(chunks)
    expect(batches).toBeGreaterThan(1)
    expect(frames).toHaveLength(batches)
    expect(frames.every((f) => f.length > 0)).toBe(true)
  })
})
