import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CACHE_POLICIES, cacheParameters } from '@xbzrle/codec'
import { describe, expect, it } from 'vitest'
import { ProtocolError } from './errors.js'
import { jsonSchemaFiles } from './json-schema.js'
import { FrameReader } from './reader.js'
import {
  CachePolicySchema,
  CliOptionsSchema,
  EndFrameSchema,
  FilterStatsSchema,
  headerFromJson,
  headerToJson,
  parseByteSize,
  parseCliOptions,
  parseControlMessage,
  StreamHeaderSchema,
  StreamHeaderV1Schema,
  safeJsonParse,
} from './schema.js'
import { describeNotXbzrle, isXbzrleStream } from './sniff.js'
import { HEADER } from './test-util.js'
import type { StreamHeader } from './v2/types.js'
import { CURRENT_VERSION, formatVersions, negotiateVersion } from './versions.js'
import { MAGIC } from './wire/magic.js'
import { FrameWriter } from './writer.js'

const specDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'spec')

describe('control-plane schemas', () => {
  it('committed spec/*.json equals what `npm run generate` would write now', () => {
    const files = jsonSchemaFiles()
    expect(readdirSync(specDir).sort()).toEqual(Object.keys(files).sort())
    for (const [name, text] of Object.entries(files))
      expect(readFileSync(join(specDir, name), 'utf8'), name).toBe(text)
  })

  it('parses the handshake messages', () => {
    const hello = parseControlMessage(
      JSON.stringify({
        type: 'hello',
        protocol: 'xbzrle',
        versions: [1],
        migrationId: 'vm1-2026',
        header: headerToJson(HEADER),
        resume: { fromSeq: 12 },
        futureField: true,
      }),
    )
    expect(hello).toMatchObject({ type: 'hello', versions: [1], resume: { fromSeq: 12 } })
    expect(hello).not.toHaveProperty('futureField') // unknown keys are stripped
    expect(
      parseControlMessage({ type: 'welcome', version: 1, migrationId: 'x', resumeFromSeq: 0 }).type,
    ).toBe('welcome')
    expect(parseControlMessage('{"type":"ack","seq":5}')).toEqual({ type: 'ack', seq: 5 })
    expect(parseControlMessage({ type: 'refuse', code: 'NO_COMMON_VERSION', message: 'm' }).type).toBe(
      'refuse',
    )
    expect(() => parseControlMessage('{"type":"ack","seq":-1}')).toThrow(ProtocolError)
    expect(() =>
      parseControlMessage('{"type":"hello","protocol":"other","versions":[1],"migrationId":"x"}'),
    ).toThrow(/xbzrle control message/)
    expect(() => parseControlMessage('not json')).toThrow(/not valid JSON/)
  })

  it('is safe against prototype pollution in handshake JSON', () => {
    const evil =
      '{"type":"hello","protocol":"xbzrle","versions":[1],"migrationId":"x","__proto__":{"polluted":1},' +
      '"header":{"version":1,"pageSize":4096,"cache":{"cacheBytes":1,"ways":1,"policy":"lru","__proto__":{"polluted":2}},' +
      '"mode":"canonical","source":"qemu","constructor":{"prototype":{"polluted":3}}}}'
    const m = parseControlMessage(evil)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect((m as Record<string, unknown>).polluted).toBeUndefined()
    expect(Object.getPrototypeOf(m)).toBe(Object.prototype)
    if (m.type !== 'hello' || !m.header) throw new Error('expected a hello with a header')
    expect(Object.getPrototypeOf(m.header.cache)).toBe(Object.prototype)
    expect(Object.hasOwn(m.header, 'constructor')).toBe(false)
    const raw = safeJsonParse('{"a":{"__proto__":{"x":1}}}') as { a: object }
    expect(Object.keys(raw.a)).toEqual([])
    // zod on an object that already has an own __proto__ key (plain JSON.parse) must not copy it through
    const m2 = parseControlMessage(JSON.parse('{"type":"ack","seq":1,"__proto__":{"polluted":4}}'))
    expect((m2 as Record<string, unknown>).polluted).toBeUndefined()
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it('header JSON round-trips, including extensions', () => {
    const h: StreamHeader = {
      ...HEADER,
      encoder: 'xbzrle/0.1.0',
      extensions: [{ type: 9, critical: true, data: Uint8Array.of(1, 2, 255) }],
    }
    expect(headerFromJson(JSON.parse(JSON.stringify(headerToJson(h))))).toEqual({
      version: CURRENT_VERSION,
      header: h,
    })
    expect(headerFromJson(JSON.parse(JSON.stringify(headerToJson(h, 1))))).toEqual({ version: 1, header: h })
    // v2 carries the compressor; v1 has none (dropped both ways)
    const z: StreamHeader = { ...h, compression: { codec: 'zstd', level: -3 } }
    expect(headerFromJson(JSON.parse(JSON.stringify(headerToJson(z))))).toEqual({
      version: CURRENT_VERSION,
      header: z,
    })
    expect(headerToJson(z, 1).compression).toBeUndefined()
    expect(headerFromJson({ ...headerToJson(z), version: 1 }).header.compression).toBeUndefined()
    expect(() => headerFromJson({ ...headerToJson(z), compression: { codec: 'lzma' } })).toThrow()
    expect(() => headerFromJson({ ...headerToJson(h), pageSize: 3000 })).toThrow()
  })

  it("CLI options: the codec's defaults and values, validated by parseCliOptions", () => {
    // The defaults are the codec's: what cacheParameters() fills in when nothing is chosen.
    const codec = cacheParameters({ cacheBytes: 1 << 20 })
    expect(CliOptionsSchema.parse({})).toEqual({
      pageSize: codec.pageSize,
      ways: codec.ways,
      policy: codec.policy,
      mode: 'canonical',
      batchBytes: 1048576,
    })
    expect(codec).toMatchObject({ pageSize: 4096, ways: 8, policy: 'lru-age-v1' })
    expect(CachePolicySchema.options).toEqual([...CACHE_POLICIES])
    // Every value the schema accepts, the codec accepts too (and the reverse for ways).
    for (const ways of [1, 2, 4, 8, 16, 32, 64, 128]) {
      const r = parseCliOptions({ ways, cacheSize: '64M' })
      expect(r.ok).toBe(true)
      if (r.ok) expect(() => cacheParameters({ cacheBytes: r.options.cacheSize!, ways })).not.toThrow()
    }
    for (const ways of [0, 3, 12, 256]) {
      expect(parseCliOptions({ ways }).ok, `ways ${ways}`).toBe(false)
      expect(() => cacheParameters({ cacheBytes: 1 << 30, ways })).toThrow(RangeError)
    }
    expect(
      parseCliOptions({ cacheSize: '256M', ways: 16, mode: 'compact', output: 'x', stats: true }),
    ).toEqual({
      ok: true,
      options: {
        pageSize: 4096,
        cacheSize: 256 << 20,
        ways: 16,
        policy: 'lru-age-v1',
        mode: 'compact',
        batchBytes: 1048576,
      },
    })
    expect(parseCliOptions({ cacheSize: undefined, ways: undefined })).toEqual({
      ok: true,
      options: CliOptionsSchema.parse({}),
    })
    expect(parseCliOptions({ ways: 3 })).toEqual({
      ok: false,
      error: '--ways: must be a power of two in 1..128 (got 3)',
    })
    expect(parseCliOptions({ policy: 'lru' })).toMatchObject({
      ok: false,
      error: /^--policy: .*lru-age-v1.* \(got "lru"\)$/,
    })
    expect(parseCliOptions({ cacheSize: 4096, ways: 8 })).toEqual({
      ok: false,
      error: '--cache-size: must hold at least ways (8) pages of 4096 bytes (got 4096)',
    })
    const two = parseCliOptions({ mode: 'fast', batchBytes: 0 })
    expect(two.ok).toBe(false)
    if (!two.ok) {
      expect(two.error).not.toContain('\n')
      expect(two.error).toMatch(/^--mode: .*; --batch-bytes: /)
    }
  })

  it('the in-memory header and END schemas describe what the binary reader yields', () => {
    const chunks: Uint8Array[] = []
    const w = new FrameWriter({ onChunk: (c) => chunks.push(c), streamId: new Uint8Array(16).fill(7) })
    const header = {
      ...HEADER,
      cache: { cacheBytes: 1 << 20, ways: 8, policy: 'lru-age-v1' },
      encoder: 'xbzrle/test',
      extensions: [{ type: 9, critical: false, data: Uint8Array.of(1, 2) }],
      compression: { codec: 'none' as const },
    }
    expect(StreamHeaderSchema.parse(header)).toEqual(header)
    w.header(header)
    w.verbatim(Uint8Array.of(1, 2, 3))
    w.end({ cache: { hits: 2 } })
    const r = new FrameReader()
    for (const c of chunks) r.push(c)
    const seen: string[] = []
    for (let item = r.next(); item; item = r.next()) {
      seen.push(item.type)
      if (item.type === 'header') {
        expect(StreamHeaderSchema.parse(item.header)).toEqual(item.header)
        expect(item.header.streamId).toHaveLength(16)
      }
      if (item.type === 'end') expect(EndFrameSchema.parse(item.end)).toEqual(item.end)
    }
    expect(seen).toEqual(['header', 'batch', 'end'])
    // The schemas refuse what the writer refuses.
    expect(() =>
      StreamHeaderV1Schema.parse({
        ...HEADER,
        extensions: [{ type: 1, critical: false, data: new Uint8Array() }],
      }),
    ).toThrow()
    expect(() => StreamHeaderSchema.parse({ ...HEADER, streamId: new Uint8Array(15) })).toThrow()
    expect(() => StreamHeaderSchema.parse({ ...HEADER, cache: { ...HEADER.cache, policy: 'a b' } })).toThrow()
    expect(() =>
      EndFrameSchema.parse({
        totalBytes: 0,
        batches: 0,
        pages: { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 },
        cache: { Bad: 1 },
        offset: 0,
      }),
    ).toThrow()
  })

  it('stats', () => {
    expect(parseByteSize('64M')).toBe(64 << 20)
    expect(parseByteSize('1GiB')).toBe(2 ** 30)
    expect(parseByteSize(4096)).toBe(4096)
    expect(() => parseByteSize('lots')).toThrow(RangeError)
    expect(
      FilterStatsSchema.parse({
        direction: 'decode',
        bytesIn: 1,
        bytesOut: 2,
        batches: 1,
        verbatimBytes: 0,
        pages: { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 },
        cache: { hits: 1 },
        elapsedMs: 3.5,
      }).bytesOut,
    ).toBe(2)
  })

  it('negotiates the highest common version or explains why not', () => {
    expect(negotiateVersion([1, 2, 3], [2, 3, 4])).toBe(3)
    expect(negotiateVersion([1], [1])).toBe(1)
    expect(() => negotiateVersion([1], [2, 3])).toThrow(
      'no common xbzrle protocol version: we speak 1, peer speaks 2–3',
    )
    expect(formatVersions([5, 1, 3, 4])).toBe('1, 3–5')
    try {
      negotiateVersion([1], [])
    } catch (e) {
      expect((e as ProtocolError).code).toBe('NO_COMMON_VERSION')
    }
  })
})

describe('sniffing', () => {
  const enc = (s: string) => new TextEncoder().encode(s)
  it('recognises the magic', () => {
    expect(isXbzrleStream(MAGIC)).toBe(true)
    expect(isXbzrleStream(MAGIC.subarray(0, 7))).toBe(false)
    expect(describeNotXbzrle(MAGIC)).toBe('this is an xbzrle stream')
  })
  it('explains what the input is instead', () => {
    expect(describeNotXbzrle(enc('QEVM\0\0\0\x03'))).toBe(
      'not an xbzrle stream (starts with QEVM: a raw QEMU migration stream; did you mean `xbzrle encode`?)',
    )
    expect(describeNotXbzrle(enc('LibvirtQemudSave\x02\0\0\0'))).toMatch(/libvirt save image/)
    expect(describeNotXbzrle(Uint8Array.of(0x89, 0x58, 0x42, 0x5a, 0x0a, 0x1a, 0x0a))).toMatch(/text mode/)
    expect(describeNotXbzrle(Uint8Array.of(0x1f, 0x8b, 8))).toMatch(/gzip/)
    expect(describeNotXbzrle(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd))).toMatch(/zstd/)
    expect(describeNotXbzrle(new Uint8Array(0))).toMatch(/empty/)
    expect(describeNotXbzrle(enc('hello'))).toBe(
      'not an xbzrle stream (starts with 68 65 6c 6c 6f; expected 89 58 42 5a 0d 0a 1a 0a)',
    )
  })
})
