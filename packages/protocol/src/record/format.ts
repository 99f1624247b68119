/**
 * What a format version adds to the shared record layer (`RecordReader`, `RecordWriter`): the prelude, the record
 * envelope (tag, length, CRC), the sequence numbers, the frames and the END record are the same in every version;
 * a version defines its header body, what its BATCH and END bodies carry besides v1's fields, and how a batch's
 * frames are stored (the batch-payload strategy).
 */
import type { Limits } from '../v1/constants.js'
import type { Compression, StreamHeader } from '../v2/types.js'
import type { ByteWriter } from '../wire/byte-writer.js'
import type { Cursor } from '../wire/cursor.js'

/** The frames of one batch as stored: a cursor over them and whether they were compressed. */
export interface StoredFrames {
  frames: Cursor
  compressed: boolean
}

/** Reading one stream of a version, once its header is parsed. */
export interface StreamReading {
  readonly header: StreamHeader
  /**
   * Reads what a BATCH or END body holds before v1's fields (v3: the stream binding), right after the record CRC
   * was verified. Absent: nothing.
   */
  readPrefix?(c: Cursor, record: string): void
  /**
   * Reads the rest of a BATCH body after outputCrc. `c` is over the record; `headLen` is the length of the v1
   * batch head (seq, outputLength, outputCrc) for the decoded-size limit.
   */
  readPayload(c: Cursor, headLen: number, lim: Limits, ctx: string): StoredFrames
}

export interface ReadFormat {
  readonly version: number
  /** Bytes a stored BATCH body may hold beyond the (configured) v1 batch limit. */
  readonly batchExtra: number
  /** Bytes a stored END body may hold beyond the (configured) v1 END limit. */
  readonly endExtra: number
  /**
   * Parses the header body (`c` covers exactly it); throws ProtocolError. `acceptCritical`: critical extension
   * types the caller understands (FrameReaderOptions); versions before 3 ignore it. `reuseBatchBuffer`: see
   * FrameReaderOptions; versions without compressed batches ignore it.
   */
  readHeader(c: Cursor, acceptCritical?: readonly number[], reuseBatchBuffer?: boolean): StreamReading
}

/** Writing one stream of a version, once its header is known. */
export interface StreamWriting {
  /** The compressor in use (`none` for v1). */
  readonly compression: Required<Compression>
  /** Writes the header body. */
  writeHeaderBody(w: ByteWriter): void
  /** Bytes every BATCH and END body starts with (v3: the stream binding); empty for v1 and v2. */
  readonly prefix: Uint8Array
  /** Whether a payload-encoding byte follows outputCrc (v2 and later). */
  readonly payloadEncoding: boolean
  /** The stream id written in the header (v3). */
  readonly streamId?: Uint8Array
  /** Compresses a batch's frames; returns the compressed bytes, or undefined to store them plain. */
  compress?(frames: Uint8Array): Uint8Array | undefined
  /** `compress` is the header's compressor at its level for every batch (not the adaptive choice): a pool may do it. */
  readonly fixed?: boolean
}

export interface WriteFormat {
  readonly version: number
  /** Validates the header (RangeError on misuse) and prepares writing the stream. */
  begin(h: StreamHeader): StreamWriting
}
