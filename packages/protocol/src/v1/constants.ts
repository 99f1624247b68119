/** Frozen constants of format version 1. Never change a value here: streams on disk depend on them. */

export const VERSION = 1 as const

/** Record tags (first byte of every record after the prelude). Pairwise Hamming distance ≥ 2. */
export const RecordTag = {
  HEADER: 0x48, // 'H'
  BATCH: 0x42, // 'B'
  END: 0x45, // 'E'
} as const

/** Frame kind bytes inside a batch body. 0x00 and 0x09–0xff are invalid in v1. */
export const FrameKind = {
  VERBATIM: 0x01,
  PAGE_FULL: 0x02,
  PAGE_DELTA: 0x03,
  PAGE_SAME: 0x04,
  PAGE_ZERO: 0x05,
  PAGE_FOREIGN: 0x06,
  INVALIDATE: 0x07,
  RESET: 0x08,
} as const

/** Header extension types known to v1. */
export const ExtensionType = {
  /** UTF-8 name/version of the encoder, informational (e.g. "xbzrle/0.1.0"). */
  ENCODER: 1,
} as const

export const MODE_CODES = { canonical: 0, compact: 1 } as const
export const MODES = ['canonical', 'compact'] as const
export const SOURCE_CODES = { qemu: 0, raw: 1, 'libvirt-save': 2 } as const
export const SOURCES = ['qemu', 'raw', 'libvirt-save'] as const

export interface Limits {
  /** Max body bytes of the header record. */
  maxHeaderBytes: number
  /** Max body bytes of a batch record (the wire size of a batch). */
  maxBatchWireBytes: number
  /** Max original (output) bytes one batch decodes to. */
  maxBatchOutputBytes: number
  /** Max payload bytes of one VERBATIM frame. */
  maxVerbatimBytes: number
  /** Max length of a QEMU page-record header (`hdr`) carried in raw form (a derived one is always 8 bytes). */
  maxHdrBytes: number
  /** Max body bytes of the END record. */
  maxEndBytes: number
}

const MiB = 1024 * 1024

/** The normative limits of v1 (SPEC.md §7). A reader may be configured with lower values, never higher. */
export const LIMITS: Readonly<Limits> = Object.freeze({
  maxHeaderBytes: 64 * 1024,
  maxBatchWireBytes: 4 * MiB + 64 * 1024,
  maxBatchOutputBytes: 4 * MiB,
  maxVerbatimBytes: 1 * MiB,
  maxHdrBytes: 8 + 1 + 255,
  maxEndBytes: 4096,
})

export const MIN_PAGE_SIZE = 512
export const MAX_PAGE_SIZE = 65536
export const MAX_BLOCK_ID = 0xffff
export const MAX_PAGE_INDEX = 2 ** 40 - 1
/**
 * Page-record header form (SPEC.md §5.2): `h = 0` is followed by the raw header (`len:varint bytes[len]`);
 * `h ≥ 1` stands for the 8-byte header `be64(pageIndex * pageSize + (h - 1))`, with `h - 1 < pageSize`.
 */
export const HDR_RAW = 0
/** Length of a derived page-record header (QEMU's `be64 offset|flags` without a block name). */
export const DERIVED_HDR_BYTES = 8
export const MAX_WAYS = 0xffff
export const MAX_POLICY_BYTES = 64
export const MAX_ENCODER_BYTES = 255
export const MAX_EXTENSIONS = 64
export const MAX_EXTENSION_BYTES = 16 * 1024
export const MAX_EXTENSION_TYPE = 0xffff
export const MAX_CACHE_STATS = 32
export const CACHE_STAT_NAME = /^[a-z][A-Za-z0-9]{0,31}$/
export const POLICY_NAME = /^[\x21-\x7e]{1,64}$/

export const DEFAULT_BATCH_BYTES = 1 * MiB
