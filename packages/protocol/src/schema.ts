/**
 * zod schemas of the wire format and the control plane: THE definition of every exported wire-format type (the
 * stream header in memory and in JSON, END totals, the WebSocket handshake, the filter's stats object, the
 * CLI-facing codec options); the types are `z.infer` of these, never parallel interfaces. The binary reader and
 * writer do not run them per record (their checks are SPEC.md's, byte by byte); the control plane parses with
 * them. JSON Schema copies of the JSON forms live in spec/*.json (`npm run generate`).
 *
 * Not schemas, on purpose: the per-page objects of the binary reader (`Frame`, `Batch`, `ReaderItem` in
 * v1/types.ts) are views into the input buffer with a `frames()` iterator, built per page on the hot path and
 * never serialized; a schema would add nothing but a temptation to parse them.
 */
import {
  CACHE_POLICIES,
  DEFAULT_CACHE_PAGE_SIZE,
  DEFAULT_CACHE_POLICY,
  DEFAULT_WAYS,
  MAX_CACHE_WAYS,
} from '@xbzrle/codec'
import { z } from 'zod'
import { ProtocolError } from './errors.js'
import {
  CACHE_STAT_NAME,
  DEFAULT_BATCH_BYTES,
  LIMITS,
  MAX_CACHE_STATS,
  MAX_ENCODER_BYTES,
  MAX_EXTENSION_TYPE,
  MAX_EXTENSIONS,
  MAX_PAGE_SIZE,
  MAX_WAYS,
  MIN_PAGE_SIZE,
  MODES,
  POLICY_NAME,
  SOURCES,
} from './v1/constants.js'
import { CODEC_NAMES } from './v2/codecs.js'
import { CURRENT_VERSION } from './versions.js'

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0
const uint = () => z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
/** Raw bytes of the in-memory forms (the JSON forms carry base64 or hex instead). */
const bytes = () => z.custom<Uint8Array>((v) => v instanceof Uint8Array, { message: 'expected a Uint8Array' })

export const PageSizeSchema = z
  .number()
  .int()
  .min(MIN_PAGE_SIZE)
  .max(MAX_PAGE_SIZE)
  .refine(isPow2, { message: 'page size must be a power of two' })
  .describe('Target page size in bytes: a power of two, 512-65536 (4096 on x86)')

export const ModeSchema = z.enum(MODES).describe('Codec mode')
export const SourceKindSchema = z.enum(SOURCES).describe('What the original bytes were')
export type Mode = z.infer<typeof ModeSchema>
export type SourceKind = z.infer<typeof SourceKindSchema>

/**
 * A policy NAME as the wire carries it (printable ASCII, 1-64 bytes): any name, so that a newer encoder's policy
 * reaches the reader, which refuses it by name. The policies this xbzrle implements are the codec's
 * `CACHE_POLICIES` (see `CachePolicySchema`).
 */
export const PolicyNameSchema = z.string().regex(POLICY_NAME).describe('Replacement policy name')
/** The replacement policies implemented (the codec's `CACHE_POLICIES`). */
export const CachePolicySchema = z.enum(CACHE_POLICIES).describe('Replacement policy (implemented ones)')

export const CacheParamsSchema = z.object({
  /** Total cache size in bytes (the decoder mirrors it exactly). */
  cacheBytes: uint().describe('Cache size in bytes'),
  /** Associativity (1 = direct mapped). */
  ways: z.number().int().min(1).max(MAX_WAYS).describe('Associativity (1 = direct mapped)'),
  /** Replacement policy name, e.g. "lru-age-v1" (printable ASCII, 1–64 bytes). */
  policy: PolicyNameSchema,
})
export type CacheParams = z.infer<typeof CacheParamsSchema>

/** A header extension in memory (`data` as bytes); `HeaderExtensionJsonSchema` is its JSON form. */
export const HeaderExtensionSchema = z.object({
  /** 2–65535 (1 is ENCODER, carried as `StreamHeader.encoder`). */
  type: z.number().int().min(2).max(MAX_EXTENSION_TYPE),
  /** A reader that does not know `type` must refuse the stream if set, skip the extension otherwise. */
  critical: z.boolean(),
  data: bytes(),
})
export type HeaderExtension = z.infer<typeof HeaderExtensionSchema>
export const HeaderExtensionJsonSchema = HeaderExtensionSchema.extend({
  data: z.base64().describe('Extension payload, base64'),
})

export const CompressionSchema = z
  .object({
    /** `none` | `lz4` | `zstd` | `deflate` (SPEC.md §11.3). */
    codec: z
      .enum(CODEC_NAMES)
      .describe('Second-stage compressor of the batches (format version 2 and later)'),
    /** Compressor level (informational on the wire; the codec's default when absent). */
    level: z.number().int().min(-128).max(127).optional().describe('Compressor level (informational)'),
  })
  .describe('Second-stage compressor (format v2); absent in v1 headers')
export type Compression = z.infer<typeof CompressionSchema>

export const StreamIdSchema = z
  .string()
  .regex(/^[0-9a-f]{32}$/)
  .describe(
    'Random 128-bit stream id, 32 lowercase hex digits (format v3 and later; every batch and END is bound to it); absent in v1 and v2 headers',
  )

/** The v1 stream header in memory (what `FrameWriter.header()` takes and the reader yields). */
export const StreamHeaderV1Schema = z.object({
  /** Target page size in bytes: a power of two, 512–65536 (4096 on x86). */
  pageSize: PageSizeSchema,
  cache: CacheParamsSchema,
  mode: ModeSchema,
  /** Informational: what the original bytes were. */
  source: SourceKindSchema,
  /** Informational encoder identification (extension 1), e.g. "xbzrle/0.1.0". */
  encoder: z.string().max(MAX_ENCODER_BYTES).optional(),
  /** Other extensions: written as given; on read, the unknown ignorable ones that were skipped. */
  extensions: z
    .array(HeaderExtensionSchema)
    .max(MAX_EXTENSIONS - 1)
    .readonly()
    .optional(),
})
/** A v1 header plus the second-stage compressor. */
export const StreamHeaderV2Schema = StreamHeaderV1Schema.extend({
  /**
   * Writer: the compressor to use (default: zstd level 1 if zstd-napi is installed, else lz4 if lz4-napi is, else
   * deflate; `{ codec: 'none' }` turns the second stage off). Reader (v2 streams): always set, as declared by the
   * stream. Absent in v1 streams.
   */
  compression: CompressionSchema.optional(),
})
/** A v2 header plus the stream id (the current version's header). */
export const StreamHeaderSchema = StreamHeaderV2Schema.extend({
  /**
   * Reader (v3 streams): the 16-byte random id of the stream, to which every batch and END is bound. Absent in
   * v1 and v2 streams. Writers take it from the `streamId` writer option (default: random), not from here.
   */
  streamId: bytes()
    .refine((b) => b.length === 16, { message: 'a stream id is 16 bytes' })
    .optional(),
})
export type StreamHeaderV1 = z.infer<typeof StreamHeaderV1Schema>
export type StreamHeaderV2 = z.infer<typeof StreamHeaderV2Schema>
export type StreamHeader = z.infer<typeof StreamHeaderSchema>

/** JSON form of the stream header (e.g. for the WebSocket hello): the in-memory one plus `version`, bytes as text. */
export const StreamHeaderJsonSchema = z
  .object({
    version: z.number().int().min(1).describe('Format version'),
    ...StreamHeaderSchema.shape,
    extensions: z
      .array(HeaderExtensionJsonSchema)
      .max(MAX_EXTENSIONS - 1)
      .optional(),
    streamId: StreamIdSchema.optional(),
  })
  .describe('xbzrle stream header, JSON form')
export type StreamHeaderJson = z.infer<typeof StreamHeaderJsonSchema>

export const PageCountsSchema = z.object({
  full: uint(),
  delta: uint(),
  same: uint(),
  zero: uint(),
  foreign: uint(),
})
export type PageCounts = z.infer<typeof PageCountsSchema>

const cacheCounters = () => z.record(z.string().regex(CACHE_STAT_NAME), uint())
/** Named cache counters of END (informational): names match /^[a-z][A-Za-z0-9]{0,31}$/, at most 32 entries. */
export const CacheCountersSchema = cacheCounters().refine((r) => Object.keys(r).length <= MAX_CACHE_STATS, {
  message: `at most ${MAX_CACHE_STATS} cache counters`,
})

/** What the caller gives `FrameWriter.end()`: the writer computes the totals itself. */
export const EndStatsSchema = z.object({
  /** The encoder's cache statistics (informational): names match /^[a-z][A-Za-z0-9]{0,31}$/, ≤ 32 entries. */
  cache: CacheCountersSchema.readonly().optional(),
})
export type EndStats = z.infer<typeof EndStatsSchema>

/** The END record's totals, as the reader yields them. */
export const EndFrameSchema = z.object({
  /** Total original bytes the stream decodes to. */
  totalBytes: uint(),
  batches: uint(),
  pages: PageCountsSchema,
  cache: CacheCountersSchema,
  /** Byte offset of the END record. */
  offset: uint(),
})
export type EndFrame = z.infer<typeof EndFrameSchema>

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

export const FilterStatsSchema = z
  .object({
    direction: z.enum(['encode', 'decode']),
    bytesIn: uint(),
    bytesOut: uint(),
    batches: uint(),
    verbatimBytes: uint(),
    pages: PageCountsSchema,
    cache: cacheCounters(),
    elapsedMs: z.number().min(0),
  })
  .describe('Statistics of one filter run')
export type FilterStats = z.infer<typeof FilterStatsSchema>

/** Sizes as the CLI accepts them: a byte count or a string such as "64M", "1GiB", "4096". */
export const ByteSizeSchema = z.union([uint(), z.string().regex(/^\d+(\.\d+)?\s*([KMGT]i?B?|B)?$/i)])

/** A byte size as the CLI accepts it, resolved to bytes. */
const ByteCountSchema = ByteSizeSchema.transform((v, ctx) => {
  try {
    return parseByteSize(v)
  } catch (e) {
    ctx.issues.push({ code: 'custom', message: (e as Error).message, input: v })
    return z.NEVER
  }
})

/**
 * CLI-facing codec options. The defaults are the codec's own (`@xbzrle/codec`: 8 ways, policy lru-age-v1, 4096-byte
 * pages), imported rather than restated; an absent `cacheSize` means what the encoder does then (the guest's RAM,
 * rounded up to a power of two, at most 1 GiB). Validate with `parseCliOptions`.
 */
export const CliOptionsSchema = z
  .object({
    pageSize: PageSizeSchema.default(DEFAULT_CACHE_PAGE_SIZE),
    cacheSize: ByteCountSchema.optional().describe(
      'Page cache budget in bytes or as "256M"; absent: the guest RAM rounded up to a power of two, at most 1 GiB',
    ),
    ways: z
      .number()
      .int()
      .min(1)
      .max(MAX_CACHE_WAYS)
      .refine(isPow2, { message: `must be a power of two in 1..${MAX_CACHE_WAYS}` })
      .default(DEFAULT_WAYS)
      .describe('Cache associativity: a power of two'),
    policy: CachePolicySchema.default(DEFAULT_CACHE_POLICY),
    mode: ModeSchema.default('canonical'),
    batchBytes: z.number().int().min(1).max(LIMITS.maxBatchOutputBytes).default(DEFAULT_BATCH_BYTES),
  })
  .superRefine((o, ctx) => {
    if (o.cacheSize !== undefined && o.cacheSize < o.pageSize * o.ways)
      ctx.addIssue({
        code: 'custom',
        path: ['cacheSize'],
        message: `must hold at least ways (${o.ways}) pages of ${o.pageSize} bytes`,
        input: o.cacheSize,
      })
  })
  .describe('CLI-facing codec options')
export type CliOptions = z.infer<typeof CliOptionsSchema>

const kebab = (key: PropertyKey) => String(key).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

/**
 * Validates options as a CLI parsed them (flag names in camelCase: `{ cacheSize, ways, mode, ... }`, absent or
 * `undefined` = default) through `CliOptionsSchema`: the typed options with the codec's defaults filled in, or a
 * one-line error naming the flags, e.g. `--ways: must be a power of two in 1..128 (got 3)`. Unknown keys are
 * ignored (a command passes its whole options object).
 */
export function parseCliOptions(
  raw: Readonly<Record<string, unknown>>,
): { ok: true; options: CliOptions } | { ok: false; error: string } {
  const input: Record<string, unknown> = {}
  for (const key of Object.keys(CliOptionsSchema.shape))
    if (Object.hasOwn(raw, key) && raw[key] !== undefined) input[key] = raw[key]
  const r = CliOptionsSchema.safeParse(input)
  if (r.success) return { ok: true, options: r.data }
  const error = r.error.issues
    .map((i) => {
      const flag = i.path.length > 0 ? `--${i.path.map(kebab).join('.')}` : 'options'
      const key = i.path[0]
      const got = typeof key === 'string' && key in input ? ` (got ${JSON.stringify(input[key])})` : ''
      return `${flag}: ${i.message}${got}`
    })
    .join('; ')
  return { ok: false, error }
}

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
