// The copy-saving options of the file-to-file path: the encoder's `chunkView` (views of its frame buffer) and
// the decoder's `reuseOutput` (every batch rebuilt in one buffer), fed from ONE reused input buffer, must give
// exactly the bytes of the default (copying) path on real QEMU streams.
import { Buffer } from 'node:buffer'
import { describe, expect, it } from 'vitest'
import { loadFixture, randomChunks } from '../test-fixtures.js'
import { XbzrleDecoder } from './decoder.js'
import { XbzrleEncoder } from './encoder.js'

/** Pushes `data` in chunks of random sizes, each one copied into the same reused buffer first. */
function pushThroughOneBuffer(data: Uint8Array, seed: number, push: (c: Uint8Array) => void): void {
  const buf = new Uint8Array(1 << 20)
  for (const c of randomChunks(data, seed, buf.length)) {
    buf.set(c)
    push(buf.subarray(0, c.length))
    buf.fill(0xa5) // whatever the consumer kept a reference to is now wrong
  }
}

function encodeCopying(data: Uint8Array, formatVersion: number): Buffer {
  const out: Uint8Array[] = []
  const e = new XbzrleEncoder((c) => out.push(c), { formatVersion })
  for (const c of randomChunks(data, 7, 1 << 20)) e.push(c)
  e.finish()
  return Buffer.concat(out)
}

describe('chunkView and reuseOutput give the bytes of the copying path', () => {
  it.each(['pc-xbzrle-dirty.mig', 'postcopy-c0.s2d', 'pc-idle.mig'] as const)('%s', (name) => {
    const data = loadFixture(name)
    for (const formatVersion of [1, 2]) {
      const expected = encodeCopying(data, formatVersion)
      const viewed: Buffer[] = []
      // Copied inside the callback: the view is only valid until it returns.
      const e = new XbzrleEncoder((c) => viewed.push(Buffer.from(c)), { formatVersion, chunkView: true })
      pushThroughOneBuffer(data, 7, (c) => e.push(c))
      e.finish()
      const encoded = Buffer.concat(viewed)
      expect(encoded.equals(expected)).toBe(true)

      const decoded: Buffer[] = []
      let views = new Set<ArrayBufferLike>()
      const d = new XbzrleDecoder(
        (c) => {
          views.add(c.buffer)
          decoded.push(Buffer.from(c))
        },
        { reuseOutput: true },
      )
      for (const c of randomChunks(encoded, 11, 1 << 20)) d.push(c)
      d.finish()
      expect(Buffer.concat(decoded).equals(Buffer.from(data))).toBe(true)
      // The batches really shared their buffer (at most a regrowth or two): the big streams have dozens.
      if (name !== 'pc-idle.mig') expect(decoded.length).toBeGreaterThan(10)
      expect(views.size).toBeLessThanOrEqual(Math.min(3, decoded.length))
      views = new Set()
    }
  })
})
