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
  | 'STREAM_MISMATCH'
  | 'TRUNCATED'
  | 'LIMIT'
  | 'MALFORMED'
  | 'TOTALS'
  | 'TRAILING_DATA'
  | 'OUTPUT_MISMATCH'
  | 'NO_COMMON_VERSION'
  | 'COMPRESSOR_UNAVAILABLE'
  | 'BASE_MISMATCH'

/** The parts of a stream error's message, `xbzrle stream: <what> at offset <offset> (<hint>)`. */
export interface ProtocolErrorDetails {
  /** What was found, e.g. `batch 3 checksum mismatch` (no offset, no hint). */
  what: string
  /** Why it may have happened or what to do, e.g. `corrupted or truncated input`. */
  hint?: string
}

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError'
  readonly code: ProtocolErrorCode
  /** Absolute byte offset in the xbzrle stream where the problem was found, or -1 if not applicable. */
  readonly offset: number
  /** What was found, without offset and hint (errors built from a bare message: the whole message). */
  readonly what: string
  /** The hint in parentheses at the end of the message, if the error has one. */
  readonly hint: string | undefined

  /**
   * `new ProtocolError(code, message, offset?)` keeps working; stream errors are better built with
   * `streamError()` (or `ProtocolError.stream()`), which fills `what` and `hint` and formats the message.
   */
  constructor(code: ProtocolErrorCode, message: string, offset = -1, details?: ProtocolErrorDetails) {
    super(message)
    this.code = code
    this.offset = offset
    this.what = details?.what ?? message
    this.hint = details?.hint
  }

  /** A stream error from its parts: message `xbzrle stream: <what>[ at offset <offset>] (<hint>)`. */
  static stream(code: ProtocolErrorCode, what: string, offset = -1, hint?: string): ProtocolError {
    return streamError(code, what, offset, hint)
  }
}

/** The default hint of each code (`ProtocolError.hint` when the error did not name its own). */
export const ERROR_HINTS: Readonly<Record<ProtocolErrorCode, string>> = Object.freeze({
  BAD_MAGIC: 'not an xbzrle stream',
  UNSUPPORTED_VERSION: 'upgrade xbzrle to read this stream',
  CRITICAL_EXTENSION: 'written by a newer xbzrle; upgrade to read it',
  CHECKSUM: 'corrupted or truncated input',
  SEQUENCE: 'batches lost, reordered or replayed',
  STREAM_MISMATCH: 'records of two streams spliced together',
  TRUNCATED: 'incomplete input',
  LIMIT: 'corrupted input or not written by a conforming encoder',
  MALFORMED: 'corrupted input or not written by a conforming encoder',
  TOTALS: 'corrupted or incomplete stream',
  TRAILING_DATA: 'extra bytes after the end of the stream',
  OUTPUT_MISMATCH: 'decoder cache out of sync with the encoder, or corrupted input',
  NO_COMMON_VERSION: 'upgrade the older side',
  COMPRESSOR_UNAVAILABLE: 'install the compressor package the stream needs',
  BASE_MISMATCH: 'give the base image the stream was encoded against with --base',
})

/** Builds the canonical one-line message: `xbzrle stream: <what> at offset <n> (<hint>)`. */
export function streamError(
  code: ProtocolErrorCode,
  what: string,
  offset: number,
  hint?: string,
): ProtocolError {
  const h = hint ?? ERROR_HINTS[code]
  const at = offset >= 0 ? ` at offset ${offset}` : ''
  return new ProtocolError(code, `xbzrle stream: ${what}${at} (${h})`, offset, { what, hint: h })
}
