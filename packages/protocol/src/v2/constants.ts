/** Constants of format version 2 (SPEC.md §11). Everything not listed here is v1's (`../v1/constants.ts`). */

export const VERSION = 2 as const

/** The payload-encoding byte of a v2 BATCH record. 2–255 are MALFORMED. */
export const PayloadEncoding = {
  /** The frames follow as they are (exactly v1's frames). */
  PLAIN: 0,
  /** `framesLength:varint` then the frames compressed with the header's compressor. */
  COMPRESSED: 1,
} as const

/**
 * The default compressor of the v2 writer when the header names none (SPEC.md §11.5, BENCHMARKS.md): the first
 * one installed of zstd (level 1: the best ratio at about lz4's speed on VM streams), lz4, deflate (always there).
 */
export const DEFAULT_CODEC_ORDER = ['zstd', 'lz4', 'deflate'] as const
