/**
 * Encoding and decoding against a base image (issue #15): an earlier stream of the same VM whose pages seed the
 * cache on both sides, so that the pages a new stream sends for the first time become deltas or `same` frames.
 *
 * A base is named by a chain of files: `chain[0]` is the base itself (a raw QEMU stream, a libvirt save image, or
 * an xbzrle stream, decoded on the fly); if `chain[0]` is an xbzrle stream encoded against a base of its own,
 * `chain[1]` is that base, and so on. Every base is verified by its SHA-256 before a byte that depends on it is
 * released.
 */
import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import { type EncodeMode, isCachePolicy, PageDeltaDecoder, PageDeltaEncoder } from '@xbzrle/codec'
import {
  BASE_SEED_LAST_VERSION,
  type BaseRequirement,
  baseFingerprint,
  baseRequirementOf,
  isXbzrleStream,
  ProtocolError,
  type StreamHeader,
} from '@xbzrle/protocol'
import { DEFAULT_MAX_DECODER_CACHE, XbzrleDecoder } from '../filter/decoder.js'
import { IO_CHUNK } from '../filter/streams.js'
import { DEFAULT_TARGET_PAGE_SIZE } from '../qemu/format.js'
import { baseError, missingBaseError, needsBase } from './errors.js'
import { BaseSeeder, type SeedResult } from './seeder.js'
import { peekStreamHeader, replay } from './stream-header.js'

/** The seeded decoder state a based stream needs (DecoderOptions.base). */
export interface DecoderBase {
  target: PageDeltaDecoder
  requirement: BaseRequirement
}

/** The seeded encoder state and what the stream header will say about it (EncoderOptions.base). */
export interface EncoderBase {
  target: PageDeltaEncoder
  requirement: BaseRequirement
  /** Block id i of the seeded cache is the base's RAM block blockNames[i]. */
  blockNames: string[]
  /** What the seeding did (for messages). */
  seed: Omit<SeedResult, 'target'>
}

export interface BaseOptions {
  /** Refuse caches bigger than this (the decoder's --max-cache; default 4 GiB). */
  maxCacheBytes?: number
}

export interface EncoderBaseOptions extends BaseOptions {
  /** Cache size; default: twice the base's RAM rounded up to a power of two (so that the set-associative cache
   *  holds nearly every page of it), capped at `maxAutoCacheBytes`. */
  cacheBytes?: number
  maxAutoCacheBytes?: number
  ways?: number
  mode?: EncodeMode
  targetPageSize?: number
}

/** Default cap of the automatic cache size with a base (2 GiB: a 1 GiB guest gets its 2x). */
export const DEFAULT_MAX_AUTO_BASE_CACHE = 2 ** 31 - 2 ** 20
const MIN_CACHE_BYTES = 1 << 20

function nextPow2(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)))
}

function fileChunks(path: string): AsyncIterator<Uint8Array> {
  return createReadStream(path, { highWaterMark: IO_CHUNK })[Symbol.asyncIterator]()
}

/**
 * The original bytes of `chain[0]`: the file itself, or, when it is an xbzrle stream, its decoded bytes (an
 * xbzrle base encoded against a base of its own is decoded against `chain[1]`, recursively). Every batch of a
 * decoded base is verified as usual.
 */
export async function* baseBytes(chain: readonly string[], o: BaseOptions = {}): AsyncGenerator<Uint8Array> {
  const path = chain[0]!
  const input = fileChunks(path)
  const first = await input.next()
  if (first.done) return
  if (!isXbzrleStream(first.value)) {
    yield first.value
    yield* replay([], input)
    return
  }
  const peeked = await peekStreamHeader(replay([first.value], input)[Symbol.asyncIterator]())
  const base = baseRequirementOf(peeked.header)
    ? await prepareDecoderBase(chain.slice(1), peeked.header, o)
    : undefined
  const dec = new XbzrleDecoder(undefined, { maxCacheBytes: o.maxCacheBytes, base })
  for await (const chunk of replay(peeked.head, input)) {
    dec.push(chunk)
    for (let out = dec.nextOutput(); out; out = dec.nextOutput()) yield out
  }
  dec.end()
  for (let out = dec.nextOutput(); out; out = dec.nextOutput()) yield out
  dec.finish()
}

/** Runs the base's bytes through a seeder; a base that cannot be read is a one-line error naming `expected`. */
async function seedFrom<T extends PageDeltaEncoder | PageDeltaDecoder>(
  chain: readonly string[],
  seeder: BaseSeeder<T>,
  o: BaseOptions,
  expected: string,
): Promise<SeedResult<T>> {
  try {
    for await (const b of baseBytes(chain, o)) seeder.push(b)
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    const why = err.code === 'ENOENT' ? 'no such file' : (err.message ?? String(e)).split('\n')[0]
    throw baseError(`base image ${chain[0]} cannot be used (${why})${expected}`)
  }
  return seeder.finish()
}

/**
 * Seeds a decoder cache for a stream whose header requires a base, from `chain`, and verifies the base: the
 * seeding runs while the base is hashed, and the digest and length are compared before anything is decoded. A
 * missing, unreadable, truncated or different base is a one-line BASE_MISMATCH error naming the expected
 * fingerprint.
 */
export async function prepareDecoderBase(
  chain: readonly string[],
  header: StreamHeader,
  o: BaseOptions = {},
): Promise<DecoderBase> {
  const req = baseRequirementOf(header)
  if (!req) throw new Error('prepareDecoderBase: the stream does not depend on a base')
  const needs = needsBase(req)
  if (chain.length === 0) throw missingBaseError(req)
  const max = o.maxCacheBytes ?? DEFAULT_MAX_DECODER_CACHE
  if (header.cache.cacheBytes > max)
    throw baseError(`the stream needs a ${header.cache.cacheBytes}-byte cache, more than --max-cache ${max}`)
  const { cacheBytes, ways, policy } = header.cache
  if (cacheBytes !== req.cache.cacheBytes || ways !== req.cache.ways || policy !== req.cache.policy)
    throw new ProtocolError(
      'MALFORMED',
      'xbzrle stream: the base-image extension names other cache parameters than the header (corrupted header)',
    )
  if (!isCachePolicy(policy))
    throw new ProtocolError(
      'UNSUPPORTED_VERSION',
      `xbzrle stream: unknown cache policy ${JSON.stringify(policy)} (upgrade xbzrle to read this stream)`,
    )
  let target: PageDeltaDecoder
  try {
    target = new PageDeltaDecoder({ cache: { pageSize: header.pageSize, cacheBytes, ways, policy } })
  } catch (e) {
    throw new ProtocolError(
      'MALFORMED',
      `xbzrle stream: its cache parameters are impossible: ${(e as Error).message} (corrupted or foreign input)`,
    )
  }
  const seeder = new BaseSeeder(() => target, { targetPageSize: header.pageSize })
  const r = await seedFrom(chain, seeder, o, needs)
  const got = baseFingerprint(r)
  if (r.bytes !== req.baseBytes || got !== baseFingerprint(req)) {
    const short = r.bytes < req.baseBytes ? ' (truncated?)' : ''
    throw baseError(
      `base image ${chain[0]} is not this stream's base: it is ${got}, ${r.bytes} bytes${short}${needs}`,
    )
  }
  if (r.seededPages !== req.seededPages)
    throw baseError(
      `seeding from base image ${chain[0]} left ${r.seededPages} pages cached, the encoder's left ${req.seededPages} (written by an incompatible xbzrle)`,
    )
  return { target: r.target, requirement: req }
}

/**
 * Seeds an encoder cache from the base `chain` (see baseBytes) and returns it with the header extension's
 * content. The cache is sized from the base's RAM unless `cacheBytes` is given. Throws a one-line error when
 * the base is not a QEMU stream or libvirt save image (or an xbzrle stream of one).
 */
export async function prepareEncoderBase(
  chain: readonly string[],
  o: EncoderBaseOptions = {},
): Promise<EncoderBase> {
  if (chain.length === 0) throw new Error('prepareEncoderBase: no base given')
  const pageSize = o.targetPageSize ?? DEFAULT_TARGET_PAGE_SIZE
  const seeder = new BaseSeeder(
    (ram) =>
      new PageDeltaEncoder({
        cache: {
          pageSize,
          cacheBytes:
            o.cacheBytes ??
            Math.max(
              MIN_CACHE_BYTES,
              Math.min(nextPow2(2 * ram), o.maxAutoCacheBytes ?? DEFAULT_MAX_AUTO_BASE_CACHE),
            ),
          ways: o.ways,
        },
        mode: o.mode ?? 'canonical',
      }),
    { targetPageSize: pageSize },
  )
  const r = await seedFrom(chain, seeder, o, '')
  if (r.notQemu)
    throw baseError(
      `base image ${chain[0]} is not a QEMU migration stream or libvirt save image (${r.notQemu})`,
    )
  const p = r.target.parameters
  const { target, ...seed } = r
  return {
    target,
    blockNames: r.blockNames,
    seed,
    requirement: {
      algorithm: 'sha256',
      digest: r.digest,
      baseBytes: r.bytes,
      seedRule: BASE_SEED_LAST_VERSION,
      cache: { cacheBytes: p.cacheBytes, ways: p.ways, policy: p.policy },
      seededPages: r.seededPages,
      name: basename(chain[0]!),
    },
  }
}
