import { streamError } from '../errors.js'
import type { ByteWriter } from '../wire/byte-writer.js'
import type { Cursor } from '../wire/cursor.js'
import {
  ExtensionType,
  MAX_ENCODER_BYTES,
  MAX_EXTENSION_BYTES,
  MAX_EXTENSION_TYPE,
  MAX_EXTENSIONS,
  MAX_PAGE_SIZE,
  MAX_POLICY_BYTES,
  MAX_WAYS,
  MIN_PAGE_SIZE,
  MODE_CODES,
  MODES,
  POLICY_NAME,
  SOURCE_CODES,
  SOURCES,
} from './constants.js'
import type { HeaderExtension, StreamHeader } from './types.js'

const utf8 = new TextEncoder()
const utf8Strict = new TextDecoder('utf-8', { fatal: true })

export function isValidPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_PAGE_SIZE && n <= MAX_PAGE_SIZE && (n & (n - 1)) === 0
}

/** Checks a header given to the writer; throws RangeError on misuse. */
export function validateHeader(h: StreamHeader): void {
  if (!isValidPageSize(h.pageSize))
    throw new RangeError(
      `pageSize must be a power of two in ${MIN_PAGE_SIZE}..${MAX_PAGE_SIZE}, got ${h.pageSize}`,
    )
  const c = h.cache
  if (!Number.isSafeInteger(c.cacheBytes) || c.cacheBytes < 0)
    throw new RangeError(`cache.cacheBytes must be a non-negative safe integer, got ${c.cacheBytes}`)
  if (!Number.isInteger(c.ways) || c.ways < 1 || c.ways > MAX_WAYS)
    throw new RangeError(`cache.ways must be an integer in 1..${MAX_WAYS}, got ${c.ways}`)
  if (!POLICY_NAME.test(c.policy))
    throw new RangeError(
      `cache.policy must be 1-64 printable ASCII characters, got ${JSON.stringify(c.policy)}`,
    )
  if (!(h.mode in MODE_CODES)) throw new RangeError(`mode must be one of ${MODES.join(', ')}`)
  if (!(h.source in SOURCE_CODES)) throw new RangeError(`source must be one of ${SOURCES.join(', ')}`)
  if (h.encoder !== undefined && utf8.encode(h.encoder).length > MAX_ENCODER_BYTES)
    throw new RangeError(`encoder must be at most ${MAX_ENCODER_BYTES} UTF-8 bytes`)
  const exts = h.extensions ?? []
  if (exts.length + (h.encoder !== undefined ? 1 : 0) > MAX_EXTENSIONS)
    throw new RangeError(`at most ${MAX_EXTENSIONS} header extensions`)
  let prev: number = ExtensionType.ENCODER
  for (const e of exts) {
    if (!Number.isInteger(e.type) || e.type <= prev || e.type > MAX_EXTENSION_TYPE)
      throw new RangeError(
        `extension types must be integers in 2..${MAX_EXTENSION_TYPE}, strictly increasing (got ${e.type})`,
      )
    if (e.data.length > MAX_EXTENSION_BYTES)
      throw new RangeError(`extension ${e.type} data exceeds ${MAX_EXTENSION_BYTES} bytes`)
    prev = e.type
  }
}

/** Writes the v1 header body (SPEC.md §4.2). The header must have been validated. */
export function writeHeaderBody(w: ByteWriter, h: StreamHeader): void {
  w.varint(h.pageSize)
  w.varint(h.cache.cacheBytes)
  w.varint(h.cache.ways)
  const policy = utf8.encode(h.cache.policy)
  w.varint(policy.length)
  w.bytes(policy)
  w.u8(MODE_CODES[h.mode])
  w.u8(SOURCE_CODES[h.source])
  const exts: HeaderExtension[] = []
  if (h.encoder !== undefined)
    exts.push({ type: ExtensionType.ENCODER, critical: false, data: utf8.encode(h.encoder) })
  for (const e of h.extensions ?? []) exts.push(e)
  w.varint(exts.length)
  for (const e of exts) {
    w.varint(e.type)
    w.u8(e.critical ? 1 : 0)
    w.varint(e.data.length)
    w.bytes(e.data)
  }
}

/**
 * Parses a v1 header body; the cursor covers exactly the body. `version`: the format version whose header embeds
 * this body (named when a critical extension is refused). `acceptCritical`: critical types the caller handles
 * (kept in `extensions`; only later versions pass any).
 */
export function readHeaderBody(c: Cursor, version = 1, acceptCritical?: readonly number[]): StreamHeader {
  const pageSizeAt = c.offset
  const pageSize = c.varint('pageSize')
  if (!isValidPageSize(pageSize))
    c.fail(`pageSize ${pageSize} is not a power of two in ${MIN_PAGE_SIZE}..${MAX_PAGE_SIZE}`, pageSizeAt)
  const cacheBytes = c.varint('cacheBytes')
  const waysAt = c.offset
  const ways = c.varint('ways')
  if (ways < 1 || ways > MAX_WAYS) c.fail(`ways ${ways} is outside 1..${MAX_WAYS}`, waysAt)
  const policyAt = c.offset
  const policyLen = c.varint('policy length')
  if (policyLen < 1 || policyLen > MAX_POLICY_BYTES)
    c.fail(`policy length ${policyLen} is outside 1..${MAX_POLICY_BYTES}`, policyAt)
  // Latin-1 decoding keeps one character per byte, so POLICY_NAME (printable ASCII) judges the bytes themselves.
  const policy = String.fromCharCode(...c.bytes(policyLen, 'policy'))
  if (!POLICY_NAME.test(policy)) c.fail('policy is not printable ASCII', policyAt)
  const modeAt = c.offset
  const modeCode = c.u8('mode')
  const mode = MODES[modeCode]
  if (mode === undefined) c.fail(`unknown mode ${modeCode}`, modeAt)
  const sourceAt = c.offset
  const sourceCode = c.u8('source')
  const source = SOURCES[sourceCode]
  if (source === undefined) c.fail(`unknown source kind ${sourceCode}`, sourceAt)
  const countAt = c.offset
  const count = c.varint('extension count')
  if (count > MAX_EXTENSIONS) c.fail(`${count} extensions (max ${MAX_EXTENSIONS})`, countAt)
  const header: StreamHeader = { pageSize, cache: { cacheBytes, ways, policy }, mode, source }
  const skipped: HeaderExtension[] = []
  let prev = 0
  for (let i = 0; i < count; i++) {
    const at = c.offset
    const type = c.varint('extension type')
    if (type <= prev || type > MAX_EXTENSION_TYPE)
      c.fail(`extension type ${type} is out of order or outside 1..${MAX_EXTENSION_TYPE}`, at)
    prev = type
    const flagsAt = c.offset
    const flags = c.u8('extension flags')
    if (flags > 1) c.fail(`extension ${type} has reserved flag bits set (0x${flags.toString(16)})`, flagsAt)
    const lenAt = c.offset
    const len = c.varint('extension length')
    if (len > MAX_EXTENSION_BYTES)
      throw streamError('LIMIT', `extension ${type} is ${len} bytes (max ${MAX_EXTENSION_BYTES})`, lenAt)
    const data = c.bytes(len, `extension ${type}`)
    const critical = flags === 1
    if (type === ExtensionType.ENCODER) {
      if (len > MAX_ENCODER_BYTES)
        c.fail(`encoder extension is ${len} bytes (max ${MAX_ENCODER_BYTES})`, lenAt)
      try {
        header.encoder = utf8Strict.decode(data)
      } catch {
        c.fail('encoder extension is not valid UTF-8', lenAt)
      }
    } else if (critical && !acceptCritical?.includes(type)) {
      throw streamError(
        'CRITICAL_EXTENSION',
        `header carries critical extension ${type}, unknown to this reader (format version ${version})`,
        at,
      )
    } else {
      skipped.push({ type, critical, data })
    }
  }
  if (c.remaining !== 0) c.fail(`${c.remaining} unexpected bytes after the header fields`)
  if (skipped.length > 0) header.extensions = skipped
  return header
}
