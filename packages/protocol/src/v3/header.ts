import { readHeaderBody, writeHeaderBody } from '../v1/header.js'
import { readCompression, writeCompression } from '../v2/header.js'
import type { Compression } from '../v2/types.js'
import type { ByteWriter } from '../wire/byte-writer.js'
import type { Cursor } from '../wire/cursor.js'
import { STREAM_ID_BYTES, VERSION } from './constants.js'
import type { StreamHeader } from './types.js'

/** v3 header body (SPEC.md §12.2): `codec:u8 level:i8 streamId[16]` then the v1 header body. */
export function writeHeaderBodyV3(
  w: ByteWriter,
  h: StreamHeader,
  compression: Required<Compression>,
  streamId: Uint8Array,
): void {
  writeCompression(w, compression)
  w.bytes(streamId)
  writeHeaderBody(w, h)
}

/**
 * Parses a v3 header body; the cursor covers exactly the body. `acceptCritical`: critical extension types the
 * caller understands (returned in `extensions` instead of refused).
 */
export function readHeaderBodyV3(c: Cursor, acceptCritical?: readonly number[]): StreamHeader {
  const compression = readCompression(c)
  const streamId = c.bytes(STREAM_ID_BYTES, 'stream id').slice()
  const header: StreamHeader = readHeaderBody(c, VERSION, acceptCritical)
  header.compression = compression
  header.streamId = streamId
  return header
}
