/**
 * `@xbzrle/protocol`: the versioned wire format of xbzrle streams (SPEC.md).
 * Top-level API = the current version plus version dispatch: `FrameReader` reads every supported version,
 * `FrameWriter` takes `{ version }` to write another one. Per-version modules: `@xbzrle/protocol/v1` (frozen),
 * `@xbzrle/protocol/v2`, `@xbzrle/protocol/v3`.
 */
export {
  ERROR_HINTS,
  ProtocolError,
  type ProtocolErrorCode,
  type ProtocolErrorDetails,
  streamError,
} from './errors.js'
export { FrameReader, type FrameReaderOptions, type ReaderItem } from './reader.js'
export * from './schema.js'
export { describeNotXbzrle, isXbzrleStream } from './sniff.js'
export {
  type CacheParams,
  DEFAULT_BATCH_BYTES,
  type EndFrame,
  type EndStats,
  ExtensionType,
  type Frame,
  FrameKind,
  type FrameKindName,
  type HeaderExtension,
  isValidPageSize,
  LIMITS,
  type Limits,
  MAX_BLOCK_ID,
  MAX_PAGE_INDEX,
  MAX_PAGE_SIZE,
  MIN_PAGE_SIZE,
  type Mode,
  type PageCounts,
  type PageKey,
  type SourceKind,
  verifyBatchOutput,
  verifyEndTotals,
} from './v1/index.js'
export { monotonicNs, pathNsPerByte } from './v2/adaptive.js'
export { type BatchCompressor, CompressPool, type PooledResult } from './v2/compress-pool.js'
export {
  AdaptiveCompression,
  type AdaptiveOptions,
  type Batch,
  type BatchCodecOption,
  type ChoiceInput,
  CODEC_NAMES,
  type CodecMeasure,
  type CodecName,
  type Compression,
  CompressorUnavailableError,
  chooseBatchCodec,
  defaultLadder,
  isCompressorAvailable,
  PayloadEncoding,
} from './v2/index.js'
export * from './v3/base-image.js'
export { STREAM_ID_BYTES, type StreamHeader, streamBinding } from './v3/index.js'
export { CURRENT_VERSION, formatVersions, negotiateVersion, SUPPORTED_VERSIONS } from './versions.js'
export { crc32, crc32Byte } from './wire/crc32.js'
export { MAGIC } from './wire/magic.js'
export { FrameWriter, type FrameWriterOptions } from './writer.js'
