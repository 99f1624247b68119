/** Constants of format version 3 (SPEC.md §12). Everything not listed here is v2's (`../v2/constants.ts`). */

export const VERSION = 3 as const

/** Bytes of the random stream id in the v3 header. */
export const STREAM_ID_BYTES = 16

/** Bytes of the stream binding (`CRC-32(streamId)`, u32le) that starts every v3 BATCH and END body. */
export const BINDING_BYTES = 4
