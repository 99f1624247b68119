/**
 * `@xbzrle/protocol/stream`: what a filter needs to write and read xbzrle streams, without the zod schemas of the
 * main entry (the control plane, JSON forms). Loading zod costs ~100 ms of start-up, which `xbzrle -c` in QEMU's
 * `exec:` pipe must not spend before its first byte. Everything here is also exported by `@xbzrle/protocol`.
 */
export { ProtocolError, type ProtocolErrorCode } from './errors.js'
export { FrameReader, type FrameReaderOptions, type ReaderItem } from './reader.js'
export { describeNotXbzrle, isXbzrleStream } from './sniff.js'
export {
  DEFAULT_BATCH_BYTES,
  type EndFrame,
  type Mode,
  type SourceKind,
  verifyBatchOutput,
  verifyEndTotals,
} from './v1/index.js'
export { monotonicNs, pathNsPerByte } from './v2/adaptive.js'
export { CODEC_NAMES, isCompressorAvailable } from './v2/codecs.js'
export { type BatchCompressor, CompressPool, type PooledResult } from './v2/compress-pool.js'
export { AdaptiveCompression, type Batch, type Compression } from './v2/index.js'
export {
  BASE_IMAGE_EXTENSION,
  type BaseRequirement,
  baseFingerprint,
  baseRequirementExtension,
  baseRequirementOf,
  describeBaseRequirement,
} from './v3/base-image.js'
export type { StreamHeader } from './v3/index.js'
export { CURRENT_VERSION, SUPPORTED_VERSIONS } from './versions.js'
export { crc32 } from './wire/crc32.js'
export { FrameWriter, type FrameWriterOptions } from './writer.js'
