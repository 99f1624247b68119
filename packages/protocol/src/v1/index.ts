/**
 * `@xbzrle/protocol/v1`: format version 1, frozen. Byte layout and semantics are specified in SPEC.md; changes
 * here must not alter a single byte written or the verdict on a single byte read.
 */
export { ProtocolError, type ProtocolErrorCode } from '../errors.js'
export {
  DEFAULT_BATCH_BYTES,
  ExtensionType,
  FrameKind,
  LIMITS,
  type Limits,
  MAX_BLOCK_ID,
  MAX_PAGE_INDEX,
  MAX_PAGE_SIZE,
  MIN_PAGE_SIZE,
  RecordTag,
  VERSION,
} from './constants.js'
export { isValidPageSize } from './header.js'
export { FrameReader, verifyBatchOutput, verifyEndTotals } from './reader.js'
export type {
  Batch,
  CacheParams,
  EndFrame,
  EndStats,
  Frame,
  FrameKindName,
  FrameReaderOptions,
  FrameWriterOptions,
  HeaderExtension,
  Mode,
  PageCounts,
  PageKey,
  ReaderItem,
  SourceKind,
  StreamHeader,
} from './types.js'
export { FrameWriter } from './writer.js'
