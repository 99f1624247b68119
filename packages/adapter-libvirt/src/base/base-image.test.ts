import { Buffer } from 'node:buffer'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { PageDeltaDecoder, PageDeltaEncoder } from '@xbzrle/codec'
import { baseRequirementOf, FrameReader, ProtocolError } from '@xbzrle/protocol'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { XbzrleDecoder } from '../filter/decoder.js'
import { DecodeStream } from '../filter/streams.js'
import { BaseGate } from './base-gate.js'
import { prepareDecoderBase, prepareEncoderBase } from './base-image.js'
import { BaseSeeder } from './seeder.js'
import { ACCEPTED_CRITICAL } from './stream-header.js'
import { asSaveImage, changedImage, decodeWithBase, encodeWithBase, saveLikeImage } from './test-images.js'

let dir: string
let first: Buffer
let second: Buffer
let other: Buffer
const path = (name: string) => join(dir, name)

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-base-'))
  first = saveLikeImage(7)
  second = changedImage(first, 0.1, 3)
  other = saveLikeImage(8) // another VM: same layout, other contents
  writeFileSync(path('first.mig'), first)
  writeFileSync(path('other.mig'), other)
  writeFileSync(path('first-truncated.mig'), first.subarray(0, first.length - 4096))
  writeFileSync(path('first.save'), asSaveImage(first))
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function headerOf(encoded: Uint8Array) {
  const r = new FrameReader({ acceptCritical: ACCEPTED_CRITICAL })
  r.push(encoded)
  const item = r.next()
  if (item?.type !== 'header') throw new Error('no header')
  return item.header
}

/** Runs `f`, expecting a BASE_MISMATCH error with one line that names the expected fingerprint. */
async function refused(f: () => Promise<unknown>, fingerprint: string, what: RegExp): Promise<void> {
  const e = await f().then(
    () => undefined,
    (x: unknown) => x,
  )
  expect(e).toBeInstanceOf(ProtocolError)
  const p = e as ProtocolError
  expect(p.code).toBe('BASE_MISMATCH')
  expect(p.message).not.toContain('\n')
  expect(p.message).toContain(fingerprint)
  expect(p.message).toMatch(what)
}

describe('encode and decode against a raw QEMU stream base', () => {
  it('the second save against the first is a small fraction of its standalone encoding, byte-exact back', async () => {
    const alone = await encodeWithBase(second, undefined)
    const based = await encodeWithBase(second, [path('first.mig')])
    expect(based.length).toBeLessThan(alone.length * 0.2)
    const back = await decodeWithBase(based, [path('first.mig')])
    expect(back.equals(second)).toBe(true)
    // the same image against itself: every page is `same`
    const self = await encodeWithBase(first, [path('first.mig')])
    expect(self.length).toBeLessThan(alone.length * 0.05)
    expect((await decodeWithBase(self, [path('first.mig')])).equals(first)).toBe(true)
  })

  it('the header names the base: SHA-256 and length of its bytes, the cache parameters and the seeded pages', async () => {
    const based = await encodeWithBase(second, [path('first.mig')])
    const h = headerOf(based)
    const req = baseRequirementOf(h)!
    const { createHash } = await import('node:crypto')
    expect(Buffer.from(req.digest).toString('hex')).toBe(createHash('sha256').update(first).digest('hex'))
    expect(req.baseBytes).toBe(first.length)
    expect(req.cache).toEqual(h.cache)
    expect(req.name).toBe('first.mig')
    expect(req.seededPages).toBeGreaterThan(1000)
    // a reader that does not act on the extension refuses the stream (what releases before it do)
    const plain = new FrameReader()
    plain.push(based)
    expect(() => plain.next()).toThrow(/critical extension 2/)
  })

  it('encoder and decoder seed identical caches from the same base', async () => {
    const enc = await prepareEncoderBase([path('first.mig')])
    const seeder = new BaseSeeder(() => new PageDeltaDecoder({ cache: enc.target.parameters }))
    seeder.push(first)
    const dec = seeder.finish()
    expect(dec.target.cache.sameContents(enc.target.cache)).toBe(true)
    expect(dec.seededPages).toBe(enc.requirement.seededPages)
  })

  it('a base bigger than the cache seeds what fits, the most recent pages last, and still round-trips', async () => {
    const small = 256 * 1024
    const enc = await prepareEncoderBase([path('first.mig')], { cacheBytes: small })
    expect(enc.seed.evicted).toBeGreaterThan(0)
    expect(enc.requirement.seededPages).toBe(small / 4096)
    // the last page record of the base is cached: later pages won over earlier ones
    const again = new BaseSeeder(() => new PageDeltaEncoder({ cache: { cacheBytes: small } }))
    again.push(first)
    expect(again.finish().target.cache.sameContents(enc.target.cache)).toBe(true)
    const based = await encodeWithBase(second, [path('first.mig')], { cacheBytes: small })
    expect((await decodeWithBase(based, [path('first.mig')])).equals(second)).toBe(true)
  })
})

describe('a missing, wrong, truncated or foreign base is refused before any output byte', () => {
  let based: Buffer
  let fp: string
  beforeAll(async () => {
    based = await encodeWithBase(second, [path('first.mig')])
    const req = baseRequirementOf(headerOf(based))!
    fp = `sha256:${Buffer.from(req.digest).toString('hex')}`
  })

  it.each([
    ['no base given', [], /encoded against a base image; give it with --base/],
    ['the base file does not exist', ['nope.mig'], /nope\.mig cannot be used \(no such file\)/],
    [
      'a truncated base',
      ['first-truncated.mig'],
      /is not this stream's base: it is sha256:[0-9a-f]{64}, \d+ bytes \(truncated\?\)/,
    ],
    ["another VM's image", ['other.mig'], /other\.mig is not this stream's base/],
  ] as const)('%s', async (_case, files, what) => {
    const out: Uint8Array[] = []
    await refused(() => decodeWithBase(based, files.map(path), out), fp, what)
    expect(out.length).toBe(0)
  })

  it('the same pages in another wrapper (a save image of the base stream) are another base', async () => {
    await refused(
      () => decodeWithBase(based, [path('first.save')]),
      fp,
      /first\.save is not this stream's base/,
    )
  })

  it('a decoder given no base at all refuses at the header', () => {
    const out: Uint8Array[] = []
    const dec = new XbzrleDecoder((c) => out.push(c))
    expect(() => dec.push(based)).toThrow(/give it with --base FILE; the stream needs base sha256:/)
    expect(out.length).toBe(0)
  })
})

describe('bases that are save images or xbzrle streams', () => {
  it('a libvirt save image as the base of the next save', async () => {
    const s2 = asSaveImage(second)
    const alone = await encodeWithBase(s2, undefined)
    const based = await encodeWithBase(s2, [path('first.save')])
    expect(based.length).toBeLessThan(alone.length * 0.2)
    expect((await decodeWithBase(based, [path('first.save')])).equals(s2)).toBe(true)
  })

  it('an xbzrle base is decoded on the fly and has the fingerprint of its decoded bytes', async () => {
    writeFileSync(path('first.xbz'), await encodeWithBase(first, undefined))
    const viaXbz = await encodeWithBase(second, [path('first.xbz')])
    const viaRaw = await encodeWithBase(second, [path('first.mig')])
    expect(baseRequirementOf(headerOf(viaXbz))!.digest).toEqual(baseRequirementOf(headerOf(viaRaw))!.digest)
    // either form of the base decodes either stream
    expect((await decodeWithBase(viaXbz, [path('first.mig')])).equals(second)).toBe(true)
    expect((await decodeWithBase(viaRaw, [path('first.xbz')])).equals(second)).toBe(true)
  })

  it('a chain of 3: each image encoded against the previous one, the last decoded through all of them', async () => {
    const third = changedImage(second, 0.1, 4)
    const fourth = changedImage(third, 0.1, 5)
    writeFileSync(path('c1.xbz'), await encodeWithBase(second, [path('first.mig')]))
    writeFileSync(path('c2.xbz'), await encodeWithBase(third, [path('c1.xbz'), path('first.mig')]))
    const c3 = await encodeWithBase(fourth, [path('c2.xbz'), path('c1.xbz'), path('first.mig')])
    const chain = [path('c2.xbz'), path('c1.xbz'), path('first.mig')]
    expect((await decodeWithBase(c3, chain)).equals(fourth)).toBe(true)
    // a link missing from the chain is refused with the fingerprint of the link it needs
    await expect(decodeWithBase(c3, chain.slice(0, 2))).rejects.toThrow(
      /c1\.xbz cannot be used .*needs base sha256:/,
    )
  })
})

describe('BaseGate (a pipeline that learns the base from the header, e.g. a receiver)', () => {
  async function throughGate(encoded: Uint8Array, chain: string[]): Promise<Buffer> {
    const dec = new DecodeStream()
    const gate = new BaseGate(dec.decoder, (h) => prepareDecoderBase(chain, h))
    const out: Buffer[] = []
    const chunks = [0, 1000, 70_000, encoded.length].map((n, i, a) => encoded.subarray(a[i - 1] ?? 0, n))
    await pipeline(
      Readable.from(chunks.filter((c) => c.length > 0).map((c) => Buffer.from(c))),
      gate,
      dec,
      new Writable({
        write(c, _e, cb) {
          out.push(c)
          cb()
        },
      }),
    )
    return Buffer.concat(out)
  }

  it('seeds the decoder from the base before the first batch; streams without a base pass', async () => {
    const based = await encodeWithBase(second, [path('first.mig')])
    expect((await throughGate(based, [path('first.mig')])).equals(second)).toBe(true)
    const plain = await encodeWithBase(second, undefined)
    expect((await throughGate(plain, [])).equals(second)).toBe(true)
    await expect(throughGate(based, [path('other.mig')])).rejects.toThrow(/not this stream's base/)
  })
})
