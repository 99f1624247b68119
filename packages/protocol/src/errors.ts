/**
 * Every problem found in an xbzrle stream is reported as a `ProtocolError` with a stable `code` and a one-line
 * message that names the byte offset. Codes are part of the public contract (golden vectors pin them).
 */
export type ProtocolErrorCode =
  | 'BAD_MAGIC'
  | 'UNSUPPORTED_VERSION'
  | 'CRITICAL_EXTENSION'
  | 'CHECKSUM'
  | 'SEQUENCE'
  | 'TRUNCATED'
  | 'LIMIT'
  | 'MALFORMED'
  | 'TOTALS'
  | 'TRAILING_DATA'
  | 'OUTPUT_MISMATCH'
  | 'NO_COMMON_VERSION'
  | 'COMPRESSOR_UNAVAILABLE'

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError'
  readonly code: ProtocolErrorCode
  /** Absolute byte offset in the xbzrle stream where the problem was found, or -1 if not applicable. */
  readonly offset: number

  constructor(code: ProtocolErrorCode, message: string, offset = -1) {
    super(message)
    this.code = code
    this.offset = offset
  }
}

const HINTS: Record<ProtocolErrorCode, string> = {
  BAD_MAGIC: 'not an xbzrle stream',
  UNSUPPORTED_VERSION: 'upgrade xbzrle to read this stream',
  CRITICAL_EXTENSION: 'written by a newer xbzrle; upgrade to read it',
  CHECKSUM: 'corrupted or truncated input',
  SEQUENCE: 'batches lost, reordered or replayed',
  TRUNCATED: 'incomplete input',
  LIMIT: 'corrupted input or not written by a conforming encoder',
  MALFORMED: 'corrupted input or not written by a conforming encoder',
  TOTALS: 'corrupted or incomplete stream',
  TRAILING_DATA: 'extra bytes after the end of the stream',
  OUTPUT_MISMATCH: 'decoder cache out of sync with the encoder, or corrupted input',
  NO_COMMON_VERSION: 'upgrade the older side',
  COMPRESSOR_UNAVAILABLE: 'install the compressor package the stream needs',
}

/** Builds the canonical one-line message: `xbzrle stream: <what> at offset <n> (<hint>)`. */
export function streamError(
  code: ProtocolErrorCode,
  what: string,
  offset: number,
  hint?: string,
): ProtocolError {
  const at = offset >= 0 ? ` at offset ${offset}` : ''
  return new ProtocolError(code, `xbzrle stream: ${what}${at} (${hint ?? HINTS[code]})`, offset)
}
