// Golden vectors of format v3 (vectors/v3/), written by make-vectors.ts. Same rules as v1 and v2: FROZEN once
// committed, never overwritten. Stream ids are fixed (writer option streamId) so that the vectors are reproducible.
import { FrameWriter, type StreamHeader } from '../src/index.js'
import type { CodecName } from '../src/v2/codecs.js'
import {
  ascii,
  BASE_HEADER,
  type Build,
  cat,
  flipped,
  hex,
  noise,
  PAGE,
  qemuStreamStart,
  qhdr,
  record,
  reseal,
  resealHeader,
  type Vector,
  vectorList,
  verb,
  writeStream,
  ZERO_F,
} from './vector-kit.js'

/** Stream ids of the vectors: A is the stream read, B the stream whose records are spliced in. */
const ID_A = hex('00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff')
const ID_B = hex('0f 1e 2d 3c 4b 5a 69 78 87 96 a5 b4 c3 d2 e1 f0')

const hdrWith = (codec: CodecName, extra: Partial<StreamHeader> = {}): StreamHeader => ({
  ...BASE_HEADER,
  compression: { codec },
  ...extra,
})
const write = (
  header: StreamHeader,
  build: Build,
  opts: { batchBytes?: number; streamId?: Uint8Array } = {},
) => writeStream(header, build, { version: 3, batchBytes: opts.batchBytes, streamId: opts.streamId ?? ID_A })

export function v3Vectors(): Vector[] {
  const { vectors, valid, bad } = vectorList()

  const small = ascii('xbzrle '.repeat(8))
  valid(
    'deflate-small',
    'One 56-byte VERBATIM frame ("xbzrle " × 8) in a deflate-compressed batch, stream id 00112233…eeff ' +
      '(SPEC.md §12.6).',
    write(hdrWith('deflate'), verb(small)),
  )
  valid(
    'empty',
    'Header (codec none) and END only: decodes to zero bytes; END carries the binding.',
    write(hdrWith('none'), () => {}),
  )
  valid(
    'plain-batch',
    'Header compressor none: one plain batch (binding, then exactly a v2 plain batch body).',
    write(hdrWith('none'), verb(small)),
  )
  const text = ascii('The quick brown fox jumps over the lazy dog. '.repeat(200))
  const mixed = write(
    hdrWith('deflate'),
    (s) => {
      const { page: p1, hdr: h1 } = qemuStreamStart(s)
      s.flush()
      const n = noise(3000, 5)
      s.verbatim(n) // stored plain: compression does not shrink it
      s.flush()
      s.pageSame(0, 0, h1, p1)
      const hz = qhdr(PAGE, ZERO_F)
      s.pageZero(0, 1, hz, 0)
      s.verbatim(text)
    },
    { batchBytes: 16384 },
  )
  valid(
    'multi-batch',
    'Three batches of stream 00112233…eeff (deflate): VERBATIM + PAGE_FULL + PAGE_DELTA (compressed), random ' +
      'bytes (plain), PAGE_SAME + PAGE_ZERO + text (compressed).',
    mixed,
  )
  valid(
    'ignorable-extension',
    'Header with the ENCODER extension and an unknown ignorable extension (type 4660), as in v1 §4.3.',
    write(
      hdrWith('none', {
        encoder: 'xbzrle-vectors/3',
        extensions: [{ type: 4660, critical: false, data: hex('de ad 01') }],
      }),
      verb(small),
    ),
  )

  // ---- malformed ----
  // Streams A and B: the same parameters and content, two stream ids.
  const other = write(hdrWith('deflate'), () => {}, { streamId: ID_B })
  const twoBatches: Build = (s) => {
    verb(text.subarray(0, 5000))(s)
    s.flush()
    verb(text.subarray(5000))(s)
  }
  const a = write(hdrWith('deflate'), twoBatches, { streamId: ID_A })
  const b = write(hdrWith('deflate'), twoBatches, { streamId: ID_B })
  const [aHead, a0, a1, aEnd] = a.chunks as [Uint8Array, Uint8Array, Uint8Array, Uint8Array]
  const [, b0, b1, bEnd] = b.chunks as [Uint8Array, Uint8Array, Uint8Array, Uint8Array]
  bad(
    'spliced-stream',
    'The header of stream A (id 00112233…eeff) followed by every batch and the END of stream B (id 0f1e2d3c…e1f0, ' +
      'same parameters and content): valid CRCs and sequence numbers, but batch 0 is bound to B. A v1 or v2 ' +
      'reader cannot tell (issue #19 item 14).',
    cat(aHead, b0, b1, bEnd),
    'STREAM_MISMATCH',
  )
  bad(
    'spliced-mid-stream',
    'Stream A header and batch 0, then batch 1 and END of stream B (sequence continues): batch 1 belongs to B.',
    cat(aHead, a0, b1, bEnd),
    'STREAM_MISMATCH',
  )
  bad(
    'foreign-end',
    'Every batch of stream A, then the END of stream B (same totals): the END belongs to B.',
    cat(aHead, a0, a1, bEnd),
    'STREAM_MISMATCH',
  )
  bad(
    'foreign-end-empty',
    'The header of the empty stream A, then the END of the empty stream B.',
    cat(write(hdrWith('deflate'), () => {}).chunks[0]!, other.chunks[1]!),
    'STREAM_MISMATCH',
  )
  bad(
    'binding-bit-flip',
    'One bit flipped in the stream binding of batch 0 (CRC not resealed): CHECKSUM.',
    cat(aHead, flipped(a0, 5, 0x01), a1, aEnd), // byte 5: the first byte of the binding
    'CHECKSUM',
  )
  {
    // A v2 batch (no binding) after a v3 header: its first 4 body bytes are not the binding.
    const v2chunks: Uint8Array[] = []
    const w2 = new FrameWriter({ onChunk: (c) => v2chunks.push(c), version: 2 })
    w2.header(hdrWith('deflate'))
    w2.verbatim(text.subarray(0, 5000))
    w2.end()
    bad(
      'v2-batch',
      'A v3 header followed by a v2 batch and END (records without a binding, valid CRCs): refused at batch 0.',
      cat(aHead, v2chunks[1]!, v2chunks[2]!),
      'STREAM_MISMATCH',
    )
  }
  bad(
    'binding-truncated',
    'A batch whose body is 3 bytes (CRC valid): the 4-byte binding runs past the end of the record.',
    cat(aHead, record(0x42, a0.subarray(5, 8)), aEnd),
    'MALFORMED',
  )
  {
    const over = reseal(a0)
    new DataView(over.buffer).setUint32(1, 4259840 + 6, true) // stored limit: v1 batch limit + 1 + 4
    bad(
      'oversized-batch',
      'A batch declaring 4 259 846 bytes of body (max v1 batch limit + 5 = 4 259 845): refused on the length alone.',
      cat(aHead, over.subarray(0, 5)),
      'LIMIT',
    )
  }
  bad(
    'critical-extension',
    'Header with an unknown CRITICAL extension (type 2, reserved for the base-image fingerprint of issue #15): a ' +
      'reader that does not know it must refuse.',
    write(hdrWith('none', { extensions: [{ type: 2, critical: true, data: hex('01 02') }] }), () => {}).xbz,
    'CRITICAL_EXTENSION',
  )
  {
    // prelude (9) + 48 len (5) + codec level (2): the stream id starts at offset 16; the header CRC is resealed,
    // so the header is valid and names another stream than its records.
    const h = aHead.slice()
    h[16] = h[16]! ^ 0x80
    resealHeader(h)
    bad(
      'header-stream-id-changed',
      'Stream A with one bit of the header stream id changed and the header CRC resealed: batch 0 no longer matches.',
      cat(h, a0, a1, aEnd),
      'STREAM_MISMATCH',
    )
  }
  return vectors
}
