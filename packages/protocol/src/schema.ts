/**
 * zod schemas of the control plane (JSON): the stream header's JSON form, the WebSocket handshake, the filter's
 * stats object and the CLI-facing options. Not used per frame. JSON Schema copies live in spec/*.json
 * (`npm run generate`).
 */
import { z } from 'zod'
import { ProtocolError } from './errors.js'
import { MAX_PAGE_SIZE, MIN_PAGE_SIZE } from './v1/constants.js'
import type { HeaderExtension } from './v1/types.js'
import { CODEC_NAMES } from './v2/codecs.js'
import type { StreamHeader } from './v3/types.js'
import { CURRENT_VERSION } from './versions.js'

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0
const uint = () => z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)

export const PageSizeSchema = z
  .number()
  .int()
  .min(MIN_PAGE_SIZE)
  .max(MAX_PAGE_SIZE)
  .refine(isPow2, { message: 'page size must be a power of two' })
  .describe('Target page size in bytes: a power of two, 512-65536 (4096 on x86)')

export const ModeSchema = z.enum(['canonical', 'compact']).describe('Codec mode')
export const SourceKindSchema = z
  .enum(['qemu', 'raw', 'libvirt-save'])
  .describe('What the original bytes were')

export const CacheParamsSchema = z.object({
  cacheBytes: uint().describe('Cache size in bytes'),
  ways: z.number().int().min(1).max(0xffff).describe('Associativity (1 = direct mapped)'),
  policy: z
    .string()
    .regex(/^[\x21-\x7e]{1,64}$/)
    .describe('Replacement policy name'),
})

export const HeaderExtensionJsonSchema = z.object({
  type: z.number().int().min(2).max(0xffff),
  critical: z.boolean(),
  data: z.base64().describe('Extension payload, base64'),
})

export const CompressionSchema = z
  .object({
    codec: z
      .enum(CODEC_NAMES)
      .describe('Second-stage compressor of the batches (format version 2 and later)'),
    level: z.number().int().min(-128).max(127).optional().describe('Compressor level (informational)'),
  })
  .describe('Second-stage compressor (format v2); absent in v1 headers')

export const StreamIdSchema = z
  .string()
  .regex(/^[0-9a-f]{32}$/)
  .describe(
    'Random 128-bit stream id, 32 lowercase hex digits (format v3 and later; every batch and END is bound to it); absent in v1 and v2 headers',
  )

/** JSON form of the stream header (e.g. for the WebSocket hello). */
export const StreamHeaderJsonSchema = z
  .object({
    version: z.number().int().min(1).describe('Format version'),
    pageSize: PageSizeSchema,
    cache: CacheParamsSchema,
    mode: ModeSchema,
    source: SourceKindSchema,
    encoder: z.string().max(255).optional(),
    extensions: z.array(HeaderExtensionJsonSchema).max(63).optional(),
    compression: CompressionSchema.optional(),
    streamId: StreamIdSchema.optional(),
  })
  .describe('xbzrle stream header, JSON form')
export type StreamHeaderJson = z.infer<typeof StreamHeaderJsonSchema>

const MigrationIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9._:-]{1,128}$/)
  .describe('Opaque migration identifier')

export const HelloSchema = z.object({
  type: z.literal('hello'),
  protocol: z.literal('xbzrle'),
  versions: z.array(z.number().int().min(1)).min(1).max(64).describe('Format versions the client can write'),
  migrationId: MigrationIdSchema,
  header: StreamHeaderJsonSchema.optional(),
  resume: z.object({ fromSeq: uint() }).optional().describe('Resume an interrupted migration at this batch'),
})
export const WelcomeSchema = z.object({
  type: z.literal('welcome'),
  version: z.number().int().min(1),
  migrationId: MigrationIdSchema,
  resumeFromSeq: uint().describe('First batch sequence number the server wants'),
})
export const RefuseSchema = z.object({
  type: z.literal('refuse'),
  code: z.string().regex(/^[A-Z][A-Z0-9_]{0,63}$/),
  message: z.string().max(1024),
})
export const AckSchema = z.object({
  type: z.literal('ack'),
  seq: uint().describe('Highest batch fully written'),
})

export const ControlMessageSchema = z
  .discriminatedUnion('type', [HelloSchema, WelcomeSchema, RefuseSchema, AckSchema])
  .describe('WebSocket control message')
export type Hello = z.infer<typeof HelloSchema>
export type Welcome = z.infer<typeof WelcomeSchema>
export type Refuse = z.infer<typeof RefuseSchema>
export type Ack = z.infer<typeof AckSchema>
export type ControlMessage = z.infer<typeof ControlMessageSchema>

const PageCountsSchema = z.object({
  full: uint(),
  delta: uint(),
  same: uint(),
  zero: uint(),
  foreign: uint(),
})

export const FilterStatsSchema = z
  .object({
    direction: z.enum(['encode', 'decode']),
    bytesIn: uint(),
    bytesOut: uint(),
    batches: uint(),
    verbatimBytes: uint(),
    pages: PageCountsSchema,
    cache: z.record(z.string().regex(/^[a-z][A-Za-z0-9]{0,31}$/), uint()),
    elapsedMs: z.number().min(0),
  })
  .describe('Statistics of one filter run')
export type FilterStats = z.infer<typeof FilterStatsSchema>

/** Sizes as the CLI accepts them: a byte count or a string such as "64M", "1GiB", "4096". */
export const ByteSizeSchema = z.union([uint(), z.string().regex(/^\d+(\.\d+)?\s*([KMGT]i?B?|B)?$/i)])

export const CliOptionsSchema = z
  .object({
    pageSize: PageSizeSchema.default(4096),
    cacheSize: ByteSizeSchema.default('64M'),
    ways: z.number().int().min(1).max(0xffff).default(1),
    policy: z
      .string()
      .regex(/^[\x21-\x7e]{1,64}$/)
      .default('lru'),
    mode: ModeSchema.default('canonical'),
    batchBytes: z
      .number()
      .int()
      .min(1)
      .max(4 * 1024 * 1024)
      .default(1024 * 1024),
  })
  .describe('CLI-facing codec options')
export type CliOptions = z.infer<typeof CliOptionsSchema>

/** "64M" / "1GiB" / 4096 → bytes (binary multiples). Throws RangeError on a bad value. */
export function parseByteSize(size: number | string): number {
  if (typeof size === 'number') return size
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)$/i.exec(size.trim())
  if (!m) throw new RangeError(`invalid size ${JSON.stringify(size)}`)
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as '' | 'K']
  const n = Number(m[1]) * mult
  if (!Number.isSafeInteger(n)) throw new RangeError(`invalid size ${JSON.stringify(size)}`)
  return n
}

// ---- conversions and safe parsing ----

/**
 * `version` defaults to the current one; `compression` is kept for version ≥ 2 only (v1 has none), `streamId` for
 * version ≥ 3 only.
 */
export function headerToJson(h: StreamHeader, version = CURRENT_VERSION): StreamHeaderJson {
  const json: StreamHeaderJson = {
    version,
    pageSize: h.pageSize,
    cache: { cacheBytes: h.cache.cacheBytes, ways: h.cache.ways, policy: h.cache.policy },
    mode: h.mode,
    source: h.source,
  }
  if (h.encoder !== undefined) json.encoder = h.encoder
  if (h.extensions && h.extensions.length > 0)
    json.extensions = h.extensions.map((e) => ({
      type: e.type,
      critical: e.critical,
      data: Buffer.from(e.data.buffer, e.data.byteOffset, e.data.length).toString('base64'),
    }))
  if (version >= 2 && h.compression !== undefined) {
    json.compression = { codec: h.compression.codec }
    if (h.compression.level !== undefined) json.compression.level = h.compression.level
  }
  if (version >= 3 && h.streamId !== undefined) json.streamId = Buffer.from(h.streamId).toString('hex')
  return json
}

export function headerFromJson(json: unknown): { version: number; header: StreamHeader } {
  const j = StreamHeaderJsonSchema.parse(json)
  const header: StreamHeader = { pageSize: j.pageSize, cache: { ...j.cache }, mode: j.mode, source: j.source }
  if (j.encoder !== undefined) header.encoder = j.encoder
  if (j.extensions)
    header.extensions = j.extensions.map(
      (e): HeaderExtension => ({
        type: e.type,
        critical: e.critical,
        data: new Uint8Array(Buffer.from(e.data, 'base64')),
      }),
    )
  if (j.compression !== undefined && j.version >= 2) {
    header.compression = { codec: j.compression.codec }
    if (j.compression.level !== undefined) header.compression.level = j.compression.level
  }
  if (j.streamId !== undefined && j.version >= 3)
    header.streamId = new Uint8Array(Buffer.from(j.streamId, 'hex'))
  return { version: j.version, header }
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

/**
 * JSON.parse that drops `__proto__`, `constructor` and `prototype` keys at every depth, so that no later merge or
 * assignment can reach a prototype. Throws SyntaxError on invalid JSON.
 */
export function safeJsonParse(text: string): unknown {
  return JSON.parse(text, (key, value) => (FORBIDDEN_KEYS.has(key) ? undefined : value))
}

/**
 * Parses one WebSocket control message (text or already-parsed JSON). Throws ProtocolError('MALFORMED') with a
 * readable message on invalid input.
 */
export function parseControlMessage(input: string | unknown): ControlMessage {
  let value: unknown = input
  if (typeof input === 'string') {
    try {
      value = safeJsonParse(input)
    } catch {
      throw new ProtocolError('MALFORMED', 'xbzrle control message: not valid JSON')
    }
  }
  const r = ControlMessageSchema.safeParse(value)
  if (!r.success)
    throw new ProtocolError(
      'MALFORMED',
      `xbzrle control message: ${z.prettifyError(r.error).replace(/\n/g, '; ')}`,
    )
  return r.data
}
