import { streamError } from '../errors.js'
import { readHeaderBody, validateHeader, writeHeaderBody } from '../v1/header.js'
import type { ByteWriter } from '../wire/byte-writer.js'
import type { Cursor } from '../wire/cursor.js'
import { CODEC_LEVELS, CODEC_NAMES, CodecId, type CodecName } from './codecs.js'
import type { Compression, StreamHeader } from './types.js'

/** Checks a header given to the v2 writer (v1's rules plus `compression`); throws RangeError on misuse. */
export function validateHeaderV2(h: StreamHeader, compression: Required<Compression>): void {
  validateHeader(h)
  const { codec, level } = compression
  if (!CODEC_NAMES.includes(codec))
    throw new RangeError(`compression.codec must be one of ${CODEC_NAMES.join(', ')}, got ${String(codec)}`)
  const range = CODEC_LEVELS[codec]
  if (!Number.isInteger(level) || level < range.min || level > range.max)
    throw new RangeError(
      `compression.level for ${codec} must be an integer in ${range.min}..${range.max}, got ${level}`,
    )
}

/** v2 header body (SPEC.md §11.2): `codec:u8 level:i8` then the v1 header body. */
export function writeHeaderBodyV2(w: ByteWriter, h: StreamHeader, compression: Required<Compression>): void {
  w.u8(CodecId[compression.codec])
  w.u8(compression.level & 0xff)
  writeHeaderBody(w, h)
}

/** Parses a v2 header body; the cursor covers exactly the body. Unknown codec ids are MALFORMED. */
export function readHeaderBodyV2(c: Cursor): StreamHeader {
  const codecAt = c.offset
  const id = c.u8('compressor id')
  const codec: CodecName | undefined = CODEC_NAMES[id]
  if (codec === undefined) c.fail(`unknown compressor id ${id}`, codecAt)
  const raw = c.u8('compressor level')
  const level = raw >= 128 ? raw - 256 : raw
  let header: StreamHeader
  try {
    header = readHeaderBody(c)
  } catch (e) {
    // v1's header parser names its own version in this one message.
    if (e instanceof Error && 'code' in e && e.code === 'CRITICAL_EXTENSION' && 'offset' in e)
      throw streamError(
        'CRITICAL_EXTENSION',
        e.message
          .slice('xbzrle stream: '.length, e.message.indexOf(' at offset '))
          .replace('version 1', 'version 2'),
        e.offset as number,
      )
    throw e
  }
  header.compression = { codec, level }
  return header
}
