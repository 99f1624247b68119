import { readHeaderBody, validateHeader, writeHeaderBody } from '../v1/header.js'
import type { ByteWriter } from '../wire/byte-writer.js'
import type { Cursor } from '../wire/cursor.js'
import { CODEC_LEVELS, CODEC_NAMES, CodecId, type CodecName } from './codecs.js'
import { VERSION } from './constants.js'
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

/** `codec:u8 level:i8` (SPEC.md §11.2), the start of the v2 (and v3) header body. */
export function writeCompression(w: ByteWriter, compression: Required<Compression>): void {
  w.u8(CodecId[compression.codec])
  w.u8(compression.level & 0xff)
}

/** Reads `codec:u8 level:i8`; unknown codec ids are MALFORMED. */
export function readCompression(c: Cursor): Required<Compression> {
  const codecAt = c.offset
  const id = c.u8('compressor id')
  const codec: CodecName | undefined = CODEC_NAMES[id]
  if (codec === undefined) c.fail(`unknown compressor id ${id}`, codecAt)
  const raw = c.u8('compressor level')
  return { codec, level: raw >= 128 ? raw - 256 : raw }
}

/** v2 header body (SPEC.md §11.2): `codec:u8 level:i8` then the v1 header body. */
export function writeHeaderBodyV2(w: ByteWriter, h: StreamHeader, compression: Required<Compression>): void {
  writeCompression(w, compression)
  writeHeaderBody(w, h)
}

/** Parses a v2 header body; the cursor covers exactly the body. */
export function readHeaderBodyV2(c: Cursor): StreamHeader {
  const compression = readCompression(c)
  const header: StreamHeader = readHeaderBody(c, VERSION)
  header.compression = compression
  return header
}
