/**
 * `@xbzrle/protocol/v3`: format version 3 = v2 plus stream binding (SPEC.md §12): the header carries a random
 * 128-bit stream id and every BATCH and END record is bound to it, so records of another stream are refused
 * (STREAM_MISMATCH). Frames are v1's, batch payloads v2's.
 */
export { ProtocolError, type ProtocolErrorCode } from '../errors.js'
export { verifyBatchOutput, verifyEndTotals } from '../record/reader.js'
export type { EndFrame, EndStats, Frame, PageCounts } from '../v1/types.js'
export type { Batch, Compression } from '../v2/types.js'
export {
  BASE_DIGEST_SHA256,
  BASE_IMAGE_EXTENSION,
  BASE_SEED_LAST_VERSION,
  type BaseRequirement,
  baseFingerprint,
  baseRequirementExtension,
  baseRequirementOf,
  describeBaseRequirement,
  hexDigest,
  parseBaseRequirement,
} from './base-image.js'
export { BINDING_BYTES, STREAM_ID_BYTES, VERSION } from './constants.js'
export { FrameReader, streamBinding } from './reader.js'
export type { FrameReaderOptions, FrameWriterOptions, ReaderItem, StreamHeader } from './types.js'
export { FrameWriter } from './writer.js'
