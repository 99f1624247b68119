// Golden vectors of format v3 (vectors/v3/), called by make-vectors.ts. Same rules as v1 and v2: FROZEN once
// committed, never overwritten. Stream ids are fixed (writer option streamId) so that the vectors are reproducible.
import { FrameWriter, type ProtocolErrorCode, type StreamHeader } from '../src/index.js'
import type { CodecName } from '../src/v2/codecs.js'
import { ByteWriter, readU32le } from '../src/wire/byte-writer.js'
import { crc32 } from '../src/wire/crc32.js'
import { ascii, cat, hex, noise, qhdr, type Vector, writeVectorFiles } from './vector-files.js'

const PAGE = 4096

/** Stream ids of the vectors: A is the stream read, B the stream whose records are spliced in. */
const ID_A = hex('00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff')
const ID_B = hex('0f 1e 2d 3c 4b 5a 69 78 87 96 a5 b4 c3 d2 e1 f0')

const base: StreamHeader = {
  pageSize: PAGE,
  cache: { cacheBytes: 64 * 1024 * 1024, ways: 1, policy: 'lru' },
  mode: 'canonical',
  source: 'qemu',
}
const hdrWith = (codec: CodecName, extra: Partial<StreamHeader> = {}): StreamHeader => ({
  ...base,
  compression: { codec },
  ...extra,
})

type Build = (w: FrameWriter, orig: Uint8Array[]) => void
function write(
  header: StreamHeader,
  build: Build,
  opts: { batchBytes?: number; streamId?: Uint8Array } = {},
) {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({
    onChunk: (c) => chunks.push(c),
    batchBytes: opts.batchBytes,
    streamId: opts.streamId ?? ID_A,
    version: 3,
  })
  const orig: Uint8Array[] = []
  w.header(header)
  build(w, orig)
  w.end({ cache: { hits: 0, misses: 0 } })
  return { chunks, xbz: cat(...chunks), orig: cat(...orig) }
}
const verb =
  (...parts: Uint8Array[]): Build =>
  (w, o) => {
    for (const b of parts) {
      w.verbatim(b)
      o.push(b)
    }
  }
/** A record with its CRC resealed after `edit` changed its bytes. */
function reseal(rec: Uint8Array, edit: (r: Uint8Array) => Uint8Array): Uint8Array {
  const r = edit(rec.slice())
  const bodyEnd = r.length - 4
  new DataView(r.buffer, r.byteOffset).setUint32(bodyEnd, crc32(r.subarray(0, bodyEnd)), true)
  return r
}

export function v3Vectors(): Vector[] {
  const vectors: Vector[] = []
  const valid = (name: string, description: string, r: { xbz: Uint8Array; orig: Uint8Array }) =>
    vectors.push({ name, description, xbz: r.xbz, orig: r.orig })
  const bad = (name: string, description: string, xbz: Uint8Array, expect: ProtocolErrorCode) =>
    vectors.push({ name, description, xbz, expect })

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
    (w, o) => {
      const v = ascii('QEVM\0\0\0\x03')
      w.verbatim(v)
      o.push(v)
      const p0 = Uint8Array.from({ length: PAGE }, (_, i) => (i % 64 === 0 ? i >> 6 : 0))
      const h0 = qhdr(0, 0x08, 'pc.ram')
      w.pageFull(0, 0, h0, p0)
      o.push(h0, p0)
      const p1 = p0.slice()
      p1[4095] = 1
      const h1 = qhdr(0, 0x08)
      w.pageDelta(0, 0, h1, hex('ff 1f 01 01'), p1)
      o.push(h1, p1)
      w.flush()
      const n = noise(3000, 5)
      w.verbatim(n) // stored plain: compression does not shrink it
      o.push(n)
      w.flush()
      w.pageSame(0, 0, h1, p1)
      o.push(h1, p1)
      const hz = qhdr(PAGE, 0x02)
      w.pageZero(0, 1, hz, 0)
      o.push(hz, Uint8Array.of(0))
      w.verbatim(text)
      o.push(text)
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
  const twoBatches: Build = (w, o) => {
    verb(text.subarray(0, 5000))(w, o)
    w.flush()
    verb(text.subarray(5000))(w, o)
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
  {
    const r = a0.slice()
    r[5] = r[5]! ^ 0x01 // first byte of the binding, CRC not resealed
    bad(
      'binding-bit-flip',
      'One bit flipped in the stream binding of batch 0 (CRC not resealed): CHECKSUM.',
      cat(aHead, r, a1, aEnd),
      'CHECKSUM',
    )
  }
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
  {
    const w = new ByteWriter()
    w.u8(0x42)
    w.u32le(3)
    w.bytes(a0.subarray(5, 8))
    w.u32le(crc32(w.view()))
    bad(
      'binding-truncated',
      'A batch whose body is 3 bytes (CRC valid): the 4-byte binding runs past the end of the record.',
      cat(aHead, w.take(), aEnd),
      'MALFORMED',
    )
  }
  {
    const over = reseal(a0, (r) => r)
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
    const bodyEnd = 14 + readU32le(h, 10)
    new DataView(h.buffer).setUint32(bodyEnd, crc32(h.subarray(0, bodyEnd)), true)
    bad(
      'header-stream-id-changed',
      'Stream A with one bit of the header stream id changed and the header CRC resealed: batch 0 no longer matches.',
      cat(h, a0, a1, aEnd),
      'STREAM_MISMATCH',
    )
  }
  return vectors
}

/** Writes the v3 vectors that do not exist yet into `out`; returns how many were written. */
export function writeV3Vectors(out: string): number {
  return writeVectorFiles(out, 3, v3Vectors())
}
