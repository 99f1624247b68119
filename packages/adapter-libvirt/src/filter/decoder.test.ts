// XbzrleDecoder: the pull API (one batch per nextOutput call) and the header refusals (issue #19 items 6 and 8).
import { createHash } from 'node:crypto'
import { FrameWriter, ProtocolError, type StreamHeader } from '@xbzrle/protocol'
import { describe, expect, it } from 'vitest'
import { SimulatedGuest } from '../simulate/simulated-guest.js'
import { DEFAULT_MAX_DECODER_CACHE, XbzrleDecoder } from './decoder.js'
import { XbzrleEncoder } from './encoder.js'
import { amplifiedStream } from './test-amplify.js'

const MiB = 2 ** 20

/** A complete stream (header, one verbatim batch, END) written by the protocol's FrameWriter. */
function streamWithHeader(cache: StreamHeader['cache']): Buffer {
  const out: Uint8Array[] = []
  const w = new FrameWriter({ onChunk: (c) => out.push(c) })
  w.header({ pageSize: 4096, cache, mode: 'canonical', source: 'raw' })
  w.verbatim(new Uint8Array([1, 2, 3]))
  w.end()
  return Buffer.concat(out)
}

function decodeAll(data: Uint8Array, options?: { maxCacheBytes?: number }): Buffer {
  const out: Uint8Array[] = []
  const d = new XbzrleDecoder((c) => out.push(c), options)
  d.push(data)
  d.finish()
  return Buffer.concat(out)
}

function refusal(data: Uint8Array, options?: { maxCacheBytes?: number }): ProtocolError {
  try {
    decodeAll(data, options)
  } catch (e) {
    if (e instanceof ProtocolError) return e
    throw e
  }
  throw new Error('the decoder accepted the stream')
}

describe('header refusals name the real cause', () => {
  it('a cache above maxCacheBytes: the limit and --max-cache are named, no "upgrade"', () => {
    const data = streamWithHeader({ cacheBytes: 8 * 2 ** 30, ways: 8, policy: 'lru-age-v1' })
    const e = refusal(data)
    expect(e.code).toBe('LIMIT')
    expect(e.message).toContain('8 GiB')
    expect(e.message).toContain(`limit of ${DEFAULT_MAX_DECODER_CACHE / 2 ** 30} GiB`)
    expect(e.message).toContain('--max-cache')
    expect(e.message).toContain('--max-cache 8G')
    expect(e.message).not.toMatch(/upgrade/i)
    // A lower configured limit is the one named.
    const small = streamWithHeader({ cacheBytes: 64 * MiB, ways: 8, policy: 'lru-age-v1' })
    const e2 = refusal(small, { maxCacheBytes: 16 * MiB })
    expect(e2.code).toBe('LIMIT')
    expect(e2.message).toContain('64 MiB')
    expect(e2.message).toContain('limit of 16 MiB')
    expect(e2.message).toContain('--max-cache 64M')
    // …and raising it accepts the same stream.
    expect([...decodeAll(small, { maxCacheBytes: 64 * MiB })]).toEqual([1, 2, 3])
  })

  it('an unknown cache policy: "upgrade xbzrle", with the policy named', () => {
    const e = refusal(streamWithHeader({ cacheBytes: MiB, ways: 8, policy: 'lru-age-v9' }))
    expect(e.code).toBe('UNSUPPORTED_VERSION')
    expect(e.message).toContain('"lru-age-v9"')
    expect(e.message).toMatch(/upgrade xbzrle/)
    expect(e.message).not.toContain('--max-cache')
  })

  it('an impossible geometry with a known policy is corrupt input, not "upgrade"', () => {
    const e = refusal(streamWithHeader({ cacheBytes: MiB, ways: 3, policy: 'lru-age-v1' }))
    expect(e.message).not.toMatch(/upgrade/i)
  })
})

describe('pull API', () => {
  it('nextOutput() decodes one batch per call (≤ 4 MiB), byte-exact, and push() alone decodes nothing', () => {
    const { encoded, sha256, qemuBytes } = amplifiedStream({ pageSize: 4096, pages: 64, resends: 400 })
    expect(qemuBytes / encoded.length).toBeGreaterThan(100)
    const d = new XbzrleDecoder(undefined)
    d.push(encoded)
    expect(d.stats.bytesOut).toBe(0)
    const h = createHash('sha256')
    let calls = 0
    let total = 0
    for (let o = d.nextOutput(); o; o = d.nextOutput()) {
      calls++
      expect(o.length).toBeLessThanOrEqual(4 * MiB)
      // Exactly what was handed out so far has been decoded: nothing runs ahead of the caller.
      total += o.length
      expect(d.stats.bytesOut).toBe(total)
      h.update(o)
    }
    d.end()
    for (let o = d.nextOutput(); o; o = d.nextOutput()) {
      total += o.length
      h.update(o)
    }
    d.finish()
    expect(calls).toBeGreaterThan(100)
    expect(total).toBe(qemuBytes)
    expect(h.digest('hex')).toBe(sha256)
  })

  it('pull mode with reuseOutput: two buffers in turn, an output intact until the call after next (also across a batch with no output)', () => {
    const out: Uint8Array[] = []
    const w = new FrameWriter({ onChunk: (c) => out.push(c) })
    w.header({
      pageSize: 4096,
      cache: { cacheBytes: MiB, ways: 8, policy: 'lru-age-v1' },
      mode: 'canonical',
      source: 'raw',
    })
    const bodies = [0x11, 0x22, 0x33, 0x44].map((b, i) => new Uint8Array(1003 - i).fill(b)) // shrinking: no buffer regrows
    w.verbatim(bodies[0]!)
    w.flush()
    w.invalidate(0, 5) // a batch that rebuilds nothing: it must not turn the rotation
    w.flush()
    for (const b of bodies.slice(1)) {
      w.verbatim(b)
      w.flush()
    }
    w.end()
    const d = new XbzrleDecoder(undefined, { reuseOutput: true })
    d.push(Buffer.concat(out))
    d.end()
    const got: Uint8Array[] = []
    for (let o = d.nextOutput(); o; o = d.nextOutput()) {
      got.push(o)
      // The previous output is still intact while this one exists (a write behind it may still be running).
      if (got.length >= 2)
        expect(Buffer.from(got.at(-2)!).equals(Buffer.from(bodies[got.length - 2]!))).toBe(true)
    }
    d.finish()
    expect(got.map((o) => o.length)).toEqual(bodies.map((b) => b.length))
    expect(Buffer.from(got[3]!).equals(Buffer.from(bodies[3]!))).toBe(true)
    // Two buffers, alternating: outputs 0 and 2 share one, 1 and 3 the other.
    expect(got[0]!.buffer).toBe(got[2]!.buffer)
    expect(got[1]!.buffer).toBe(got[3]!.buffer)
    expect(got[0]!.buffer).not.toBe(got[1]!.buffer)
  })

  it('callback and pull modes give the same bytes; finish() refuses unpulled output and truncation', () => {
    const input = Buffer.concat([...new SimulatedGuest({ memMiB: 2, passes: 2 }).stream()])
    const parts: Uint8Array[] = []
    const e = new XbzrleEncoder((c) => parts.push(c))
    e.push(input)
    e.finish()
    const encoded = Buffer.concat(parts)
    expect(decodeAll(encoded).equals(input)).toBe(true)
    const d = new XbzrleDecoder()
    d.push(encoded)
    expect(() => d.finish()).toThrow(/unpulled/)
    const t = new XbzrleDecoder()
    t.push(encoded.subarray(0, encoded.length - 10))
    t.end()
    expect(() => {
      while (t.nextOutput());
      t.finish()
    }).toThrow(/incomplete input/)
  })
})
