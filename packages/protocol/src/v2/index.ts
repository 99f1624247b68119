/**
 * `@xbzrle/protocol/v2`: format version 2 = v1 plus a second-stage compressor per batch (SPEC.md §11). Frame
 * kinds and layouts are v1's (`@xbzrle/protocol/v1`), reused by importing v1's writer and reader.
 */
export { ProtocolError, type ProtocolErrorCode } from '../errors.js'
export { verifyBatchOutput, verifyEndTotals } from '../v1/reader.js'
export type { EndFrame, EndStats, Frame, PageCounts } from '../v1/types.js'
export {
  AdaptiveCompression,
  type AdaptiveOptions,
  type BatchCodecOption,
  type ChoiceInput,
  type CodecMeasure,
  chooseBatchCodec,
  defaultLadder,
} from './adaptive.js'
export {
  CODEC_LEVELS,
  CODEC_NAMES,
  CODEC_PACKAGES,
  CodecId,
  type CodecName,
  type Compressor,
  CompressorUnavailableError,
  findCompressor,
  getCompressor,
  isCompressorAvailable,
} from './codecs.js'
export { DEFAULT_CODEC_ORDER, PayloadEncoding, VERSION } from './constants.js'
export { FrameReader } from './reader.js'
export type {
  Batch,
  Compression,
  FrameReaderOptions,
  FrameWriterOptions,
  ReaderItem,
  StreamHeader,
} from './types.js'
export { FrameWriter, resolveCompression, v2Write, type WriterBatchStats } from './writer.js'
