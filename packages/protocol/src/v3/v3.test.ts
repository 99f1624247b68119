import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FrameReader } from '../reader.js'
import { headerFromJson, headerToJson } from '../schema.js'
import { collect, concat, decodeStream, HEADER, qemuHdr, readStream, sameBytes } from '../test-util.js'
import * as v1 from '../v1/index.js'
import type { CodecName } from '../v2/index.js'
import * as v2 from '../v2/index.js'
import { readU32le } from '../wire/byte-writer.js'
import { crc32 } from '../wire/crc32.js'
import { FrameWriter } from '../writer.js'
import * as v3 from './index.js'

const V3 = { maxVersion: 3 }
const PAGE = 4096
const id = (n: number) => Uint8Array.from({ length: 16 }, (_, i) => (n * 37 + i * 11) & 0xff)

type Op = { t: 'text' | 'noise'; len: number } | { t: 'page'; index: number; fill: number } | { t: 'flush' }
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constantFrom('text' as const, 'noise' as const), len: fc.nat(6000) }),
  fc.record({ t: fc.constant('page' as const), index: fc.nat(50), fill: fc.nat(255) }),
  fc.constant({ t: 'flush' as const }),
)

/** Writes `ops` as a stream of `version` (v3: with `streamId`); returns its records and the original bytes. */
function build(ops: Op[], codec: CodecName, version: 2 | 3 = 3, streamId?: Uint8Array, batchBytes = 8192) {
  const { w, chunks, bytes } = collect(batchBytes, version, streamId)
  const orig: Uint8Array[] = []
  w.header({ ...HEADER, compression: { codec } })
  let seed = 1
  for (const op of ops) {
    if (op.t === 'flush') w.flush()
    else if (op.t === 'page') {
      const h = qemuHdr(op.index * PAGE, 0x08)
      const p = new Uint8Array(PAGE).fill(op.fill)
      p[op.index] = 7
      w.pageFull(0, op.index, h, p)
      orig.push(h, p)
    } else {
      const next = () => {
        seed = (seed * 1103515245 + 12345) >>> 0
        return seed >>> 24
      }
      const b = Uint8Array.from({ length: op.len }, (_, i) =>
        op.t === 'text' ? 97 + ((i * 7) % 23) : next(),
      )
      w.verbatim(b)
      orig.push(b)
    }
  }
  w.end({ cache: { hits: 1 } })
  return { w, chunks, stream: bytes(), orig: concat(orig) }
}

describe('format v3', () => {
  it.each(['none', 'deflate', 'zstd'] as const)(
    '%s: random streams round-trip, whole and in random chunks',
    (codec) => {
      fc.assert(
        fc.property(fc.array(opArb, { maxLength: 30 }), fc.integer({ min: 1, max: 7000 }), (ops, chunk) => {
          const { stream, orig, w } = build(ops, codec, 3, id(1))
          expect(stream[8]).toBe(3)
          for (const size of [stream.length, chunk]) {
            const d = decodeStream(stream, size, V3)
            expect(d.error).toBeUndefined()
            expect(sameBytes(d.output, orig)).toBe(true)
          }
          const head = readStream(stream, undefined, V3).items[0]
          expect(head?.type === 'header' && head.header.streamId).toEqual(w.streamId)
        }),
        { numRuns: 30 },
      )
    },
  )

  it('records of another stream are refused wherever they are spliced in, with STREAM_MISMATCH', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 1, maxLength: 20 }),
        fc.nat(),
        fc.constantFrom<CodecName>('none', 'deflate'),
        (ops, cut, codec) => {
          // the same content in two streams: only the stream ids differ
          const a = build([...ops, { t: 'text', len: 100 }], codec, 3, id(1)).chunks
          const b = build([...ops, { t: 'text', len: 100 }], codec, 3, id(2)).chunks
          expect(a.length).toBe(b.length)
          expect(readStream(concat(a), 7, V3).error).toBeUndefined()
          const k = 1 + (cut % (a.length - 1)) // the first record taken from B: a batch or END
          const spliced = concat([...a.slice(0, k), ...b.slice(k)])
          const r = readStream(spliced, 7, V3)
          expect(r.error?.code).toBe('STREAM_MISMATCH')
          expect(r.error?.offset).toBe(a.slice(0, k).reduce((n, c) => n + c.length, 0))
          expect(r.error?.what).toMatch(
            /^(batch \d+|END record) belongs to another stream \(its stream binding is /,
          )
          // nothing of B was handed out
          expect(r.items.length).toBe(k)
        },
      ),
      { numRuns: 60 },
    )
  })

  it('v1 and v2 do not bind batches: the same splice of v2 streams decodes without an error', () => {
    const ops: Op[] = [{ t: 'text', len: 3000 }, { t: 'flush' }, { t: 'text', len: 3000 }]
    const a = build(ops, 'none', 2).chunks
    const b = build(ops, 'none', 2).chunks
    expect(readStream(concat([a[0]!, ...b.slice(1)]), undefined, { maxVersion: 2 }).error).toBeUndefined()
  })

  it('old readers refuse v3 with UNSUPPORTED_VERSION; the single-version readers refuse other versions', () => {
    const s = build([{ t: 'text', len: 10 }], 'none', 3, id(1)).stream
    expect(readStream(s, undefined, { maxVersion: 2 }).error?.message).toBe(
      'xbzrle stream: format version 3 is newer than this reader supports (it reads 1-2) at offset 8 (written by a newer xbzrle; upgrade to read it)',
    )
    expect(readStream(s, undefined, { maxVersion: 1 }).error?.message).toMatch(
      /format version 3 is newer .* \(it reads 1\)/,
    )
    for (const R of [v1.FrameReader, v2.FrameReader]) {
      const r = new R()
      r.push(s)
      expect(() => r.next()).toThrow(/format version 3 is newer than this reader supports/)
    }
    const r3 = new v3.FrameReader()
    r3.push(build([{ t: 'text', len: 10 }], 'none', 2).stream)
    expect(() => r3.next()).toThrow(/format version 2 given to the version 3 reader/)
    const own = new v3.FrameReader()
    own.push(s)
    const items = []
    for (let it = own.next(); it; it = own.next()) items.push(it)
    own.finish()
    expect(items.map((i) => i.type)).toEqual(['header', 'batch', 'end'])
  })

  it('a v3 stream is the v2 stream with the same frames + 16 header bytes + 4 bytes per batch and END', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 20 }), (ops) => {
        const s2 = build(ops, 'none', 2)
        const s3 = build(ops, 'none', 3, id(3))
        const batches = s3.chunks.length - 2
        expect(s3.stream.length).toBe(s2.stream.length + 16 + 4 * batches + 4)
        // and every v3 record is the v2 record with the binding CRC-32(streamId) in front of its body
        const binding = crc32(id(3))
        for (const rec of s3.chunks.slice(1)) expect(readU32le(rec, 5)).toBe(binding)
      }),
      { numRuns: 30 },
    )
  })

  it('stream ids: random by default, fixed by the option, checked; only version 3 has one', () => {
    const a = build([], 'none', 3).w.streamId!
    const b = build([], 'none', 3).w.streamId!
    expect(a.length).toBe(16)
    expect(sameBytes(a, b)).toBe(false)
    expect(build([], 'none', 3, id(4)).w.streamId).toEqual(id(4))
    expect(build([], 'none', 2).w.streamId).toBeUndefined()
    expect(() => new FrameWriter({ onChunk: () => {}, version: 3, streamId: new Uint8Array(15) })).toThrow(
      /streamId must be a Uint8Array of 16 bytes/,
    )
    expect(() => new FrameWriter({ onChunk: () => {}, version: 2, streamId: id(1) })).toThrow(
      /has no stream id/,
    )
    expect(() => new v3.FrameWriter({ onChunk: () => {}, streamId: new Uint8Array(17) })).toThrow(RangeError)
  })

  it('the header JSON carries the stream id (version 3 only) and round-trips it', () => {
    const header = { ...HEADER, compression: { codec: 'none' as const, level: 0 }, streamId: id(5) }
    const json = headerToJson(header, 3)
    expect(json.streamId).toBe(Buffer.from(id(5)).toString('hex'))
    expect(headerFromJson(json)).toEqual({ version: 3, header })
    expect(headerToJson(header, 2).streamId).toBeUndefined()
    expect(() => headerFromJson({ ...json, streamId: 'xyz' })).toThrow()
  })

  it('the default reader reads v3 once asked to (maxVersion)', () => {
    const s = build([{ t: 'text', len: 10 }], 'deflate', 3, id(1)).stream
    const r = new FrameReader(V3)
    r.push(s)
    expect(r.next()?.type).toBe('header')
    expect(r.version).toBe(3)
  })
})

describe('base-image extension (type 2, issue #15)', () => {
  const req: v3.BaseRequirement = {
    algorithm: 'sha256',
    digest: Uint8Array.from({ length: 32 }, (_, i) => i * 7),
    baseBytes: 268_435_456 + 12345,
    seedRule: v3.BASE_SEED_LAST_VERSION,
    cache: { cacheBytes: 1 << 29, ways: 8, policy: 'lru-age-v1' },
    seededPages: 65_000,
    name: 'vm-2026-11-29.save',
  }
  function withBase(): Uint8Array {
    const { w, bytes } = collect(8192, 3, id(1))
    w.header({ ...HEADER, extensions: [v3.baseRequirementExtension(req)] })
    w.verbatim(new Uint8Array([1, 2, 3]))
    w.end({})
    return bytes()
  }

  it('round-trips through a header, for a reader that accepts it', () => {
    const r = new FrameReader({ acceptCritical: [v3.BASE_IMAGE_EXTENSION] })
    r.push(withBase())
    const item = r.next()
    expect(item?.type).toBe('header')
    if (item?.type !== 'header') return
    expect(v3.baseRequirementOf(item.header)).toEqual(req)
    expect(v3.baseFingerprint(req)).toBe(`sha256:${Buffer.from(req.digest).toString('hex')}`)
    expect(v3.describeBaseRequirement(req)).toContain('268447801 bytes, was vm-2026-11-29.save')
  })

  it('a reader that does not accept it refuses the stream with CRITICAL_EXTENSION, as older releases do', () => {
    const r = new FrameReader()
    r.push(withBase())
    expect(() => r.next()).toThrow(
      /header carries critical extension 2, unknown to this reader \(format version 3\)/,
    )
  })

  it('v1 and v2 readers never accept it (the extension is defined for v3 only)', () => {
    const { w, bytes } = collect(8192, 2)
    w.header({ ...HEADER, extensions: [v3.baseRequirementExtension(req)] })
    w.end({})
    const r = new FrameReader({ acceptCritical: [v3.BASE_IMAGE_EXTENSION] })
    r.push(bytes())
    expect(() => r.next()).toThrow(/critical extension 2/)
  })

  it('malformed data is a one-line MALFORMED error', () => {
    const data = v3.baseRequirementExtension(req).data
    for (const bad of [
      data.subarray(0, 20),
      Uint8Array.of(9, ...data.subarray(1)),
      Uint8Array.of(...data, 0),
    ]) {
      const h = { ...HEADER, extensions: [{ type: 2, critical: true, data: bad }] }
      expect(() => v3.baseRequirementOf(h)).toThrow(
        /xbzrle stream: base-image extension: .* \(corrupted header\)$/,
      )
    }
  })
})
