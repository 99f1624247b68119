/**
 * canonical: byte-identical to QEMU's scalar `xbzrle_encode_buffer`, overflow rule included.
 * compact: also folds 1–2 byte unchanged runs into the neighbouring changed runs when that is strictly smaller;
 * overflow is then simply "final length > dst.length".
 */
export type EncodeMode = 'canonical' | 'compact'

export type KernelName = 'wasm' | 'ts'

/** One interface for both kernels; both pass the same test suites. */
export interface XbzrleKernel {
  readonly name: KernelName
  /**
   * Encodes `cur` against `old` (same length, a multiple of 8) into `dst`, using at most `dst.length` bytes.
   * Returns the delta length (> 0), 0 when the pages are equal, or -1 on overflow.
   */
  encode(old: Uint8Array, cur: Uint8Array, dst: Uint8Array, mode?: EncodeMode): number
  /**
   * Validates `delta` completely, then applies it to `page` in place. Returns the end offset of the last nzrun
   * (0 for an empty delta). Throws `XbzrleDecodeError` on an invalid delta; `page` is then unchanged.
   */
  decode(delta: Uint8Array, page: Uint8Array): number
}

/** Longest run the uleb128-small length field can carry. */
export const MAX_RUN = 0x3fff
/** Compact mode folds unchanged runs of at most this many bytes (with 2-byte ulebs 3 never pays; see README). */
export const FOLD_MAX = 2
