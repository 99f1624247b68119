/**
 * Typed errors of the codec. Messages are one line and name the rule and offset so that a log line alone is
 * enough to find the bad byte in a capture.
 */

/** Rule ids, indexed by the numeric code the kernels return (the wasm kernel cannot build JS errors itself). */
export const DECODE_RULES = [
  'zrun-truncated', // fewer than 2 bytes left where a zrun length must start (includes one stray trailing byte)
  'zrun-uleb', // second uleb byte has its continuation bit set
  'zrun-zero', // zero-length zrun anywhere but at delta offset 0
  'zrun-overrun', // the zrun skips past the end of the page
  'nzrun-truncated', // fewer than 2 bytes left where an nzrun length must start
  'nzrun-uleb',
  'nzrun-zero', // an nzrun must carry at least one byte
  'nzrun-overrun', // the nzrun would write past the end of the page
  'nzrun-src', // the nzrun claims more bytes than the delta holds
] as const

export type DecodeRule = (typeof DECODE_RULES)[number]

/** A delta violated one of the rules of QEMU's `xbzrle_decode_buffer`. The page was left untouched. */
export class XbzrleDecodeError extends Error {
  override readonly name = 'XbzrleDecodeError'
  constructor(
    /** Short id of the violated rule, one of {@link DECODE_RULES}. */
    readonly rule: DecodeRule,
    /** Byte offset in the delta of the field that broke the rule. */
    readonly offset: number,
  ) {
    super(`invalid XBZRLE delta: rule ${rule} at delta offset ${offset}`)
  }
}

/** Kernels report a decode failure as `-(1 + rule + 16 * offset)`; this turns it back into an error. */
export function decodeErrorFromCode(code: number): XbzrleDecodeError {
  const c = -code - 1
  const rule = DECODE_RULES[c & 15]
  if (rule === undefined) throw new Error(`internal: bad decode error code ${code}`)
  return new XbzrleDecodeError(rule, Math.floor(c / 16))
}

/** The encoder and decoder page caches disagree: a delta/same frame names a page the decoder does not hold. */
export class CacheDesyncError extends Error {
  override readonly name = 'CacheDesyncError'
  constructor(
    readonly blockId: number,
    readonly pageIndex: number,
    readonly frame: 'delta' | 'same',
  ) {
    super(`page cache desync: ${frame} frame for block ${blockId} page ${pageIndex}, which is not cached`)
  }
}
