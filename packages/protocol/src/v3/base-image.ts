/**
 * The base-image header extension (SPEC.md §12.7, issue #15): a stream encoded against an earlier image of the
 * same VM names that image by the SHA-256 of its original bytes, and records how the caches were seeded from it.
 * Type 2, critical: a reader that cannot check the base must refuse rather than decode deltas against the wrong
 * pages (CRITICAL_EXTENSION, which is what releases before this extension say).
 */
import { ProtocolError } from '../errors.js'
import type { HeaderExtension, StreamHeader } from '../v1/types.js'
import { ByteWriter } from '../wire/byte-writer.js'
import { Cursor } from '../wire/cursor.js'

/** Extension type of the base-image requirement. */
export const BASE_IMAGE_EXTENSION = 2
/** Digest algorithm ids. */
export const BASE_DIGEST_SHA256 = 1
/** Seeding procedure ids (SPEC.md §12.7): 1 = the last version of every page of the base, in stream order. */
export const BASE_SEED_LAST_VERSION = 1
const SHA256_BYTES = 32
const MAX_NAME_BYTES = 255

export interface BaseRequirement {
  algorithm: 'sha256'
  /** SHA-256 of the base's original bytes (a QEMU stream or libvirt save image; an xbzrle base decoded). */
  digest: Uint8Array
  /** Length of those bytes. */
  baseBytes: number
  /** Seeding procedure (BASE_SEED_LAST_VERSION). */
  seedRule: number
  /** Cache the seeding filled: the header's cache parameters, repeated so that the requirement stands alone. */
  cache: { cacheBytes: number; ways: number; policy: string }
  /** Occupied cache slots after seeding: both sides must arrive at the same number. */
  seededPages: number
  /** The base's file name when the stream was written (informational, ≤ 255 bytes of UTF-8). */
  name?: string
}

const utf8 = new TextEncoder()
const utf8Strict = new TextDecoder('utf-8', { fatal: true })

export function baseRequirementExtension(r: BaseRequirement): HeaderExtension {
  if (r.digest.length !== SHA256_BYTES) throw new RangeError('base digest must be 32 bytes (SHA-256)')
  const w = new ByteWriter(128)
  w.u8(BASE_DIGEST_SHA256)
  w.bytes(r.digest)
  w.varint(r.baseBytes)
  w.u8(r.seedRule)
  w.varint(r.seededPages)
  w.varint(r.cache.cacheBytes)
  w.varint(r.cache.ways)
  const policy = utf8.encode(r.cache.policy)
  w.varint(policy.length)
  w.bytes(policy)
  let name = utf8.encode(r.name ?? '')
  if (name.length > MAX_NAME_BYTES) name = name.subarray(name.length - MAX_NAME_BYTES)
  w.varint(name.length)
  w.bytes(name)
  return { type: BASE_IMAGE_EXTENSION, critical: true, data: w.take() }
}

/** Parses the extension's data; a malformed one is MALFORMED (one line). */
export function parseBaseRequirement(data: Uint8Array): BaseRequirement {
  const c = new Cursor(data, 0, data.length, 0, 'base-image extension')
  const alg = c.u8('digest algorithm')
  if (alg !== BASE_DIGEST_SHA256) c.fail(`unknown digest algorithm ${alg}`)
  const digest = c.bytes(SHA256_BYTES, 'digest').slice()
  const baseBytes = c.varint('base length')
  const seedRule = c.u8('seeding rule')
  if (seedRule !== BASE_SEED_LAST_VERSION) c.fail(`unknown seeding rule ${seedRule}`)
  const seededPages = c.varint('seeded pages')
  const cacheBytes = c.varint('cacheBytes')
  const ways = c.varint('ways')
  const policy = String.fromCharCode(...c.bytes(c.varint('policy length'), 'policy'))
  const nameBytes = c.bytes(c.varint('name length'), 'name')
  let name = ''
  try {
    name = utf8Strict.decode(nameBytes)
  } catch {
    c.fail('name is not UTF-8')
  }
  if (c.remaining !== 0) c.fail(`${c.remaining} unexpected bytes`)
  return {
    algorithm: 'sha256',
    digest,
    baseBytes,
    seedRule,
    cache: { cacheBytes, ways, policy },
    seededPages,
    ...(name.length > 0 ? { name } : {}),
  }
}

/** The base requirement of a stream header, if it has one (the reader must have accepted type 2). */
export function baseRequirementOf(h: StreamHeader): BaseRequirement | undefined {
  const e = h.extensions?.find((x) => x.type === BASE_IMAGE_EXTENSION)
  if (!e) return undefined
  try {
    return parseBaseRequirement(e.data)
  } catch (err) {
    if (err instanceof ProtocolError)
      throw new ProtocolError('MALFORMED', `xbzrle stream: ${err.what} (corrupted header)`)
    throw err
  }
}

export function hexDigest(d: Uint8Array): string {
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** `sha256:<64 hex digits>`: how messages, `inspect` and the handshake name a base. */
export function baseFingerprint(r: Pick<BaseRequirement, 'digest'>): string {
  return `sha256:${hexDigest(r.digest)}`
}

/** `sha256:…, 268435456 bytes, was vm.save`: how every message names the base a stream needs. */
export function describeBaseRequirement(r: BaseRequirement): string {
  return `${baseFingerprint(r)}, ${r.baseBytes} bytes${r.name ? `, was ${r.name}` : ''}`
}
