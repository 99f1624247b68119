// Golden vectors of format v2 (vectors/v2/), written by make-vectors.ts. Same rules as v1: FROZEN once committed,
// never overwritten (a vector whose files exist is skipped).
import { deflateRawSync } from 'node:zlib'
import type { StreamHeader } from '../src/index.js'
import { type CodecName, isCompressorAvailable } from '../src/v2/codecs.js'
import { readU32le } from '../src/wire/byte-writer.js'
import { readVarint } from '../src/wire/varint.js'
import {
  ascii,
  BASE_HEADER,
  type Build,
  cat,
  flipped,
  hex,
  noise,
  PAGE,
  PAGE_F,
  qemuStreamStart,
  qhdr,
  record,
  resealHeader,
  type Vector,
  varint,
  vectorList,
  verb,
  writeStream,
  XBZRLE_F,
  ZERO_F,
} from './vector-kit.js'

const hdrWith = (codec: CodecName, level?: number): StreamHeader => ({
  ...BASE_HEADER,
  compression: level === undefined ? { codec } : { codec, level },
})
const write = (header: StreamHeader, build: Build, batchBytes?: number) =>
  writeStream(header, build, { version: 2, batchBytes })

/** A v2 batch record rebuilt from its parts, CRC sealed. */
const batchRecord = (head: Uint8Array, enc: number, payload: Uint8Array) =>
  record(0x42, cat(head, Uint8Array.of(enc), payload))

/** Splits a v2 batch record into head (seq, outputLength, outputCrc), encoding and payload. */
function splitBatch(rec: Uint8Array) {
  const bodyEnd = 5 + readU32le(rec, 1)
  const seq = readVarint(rec, 5, bodyEnd)
  const headEnd = 5 + (seq.ok ? seq.length : 0) + 8
  return { head: rec.subarray(5, headEnd), enc: rec[headEnd]!, payload: rec.subarray(headEnd + 1, bodyEnd) }
}

export function v2Vectors(): Vector[] {
  const { vectors, valid, bad } = vectorList()

  const small = ascii('xbzrle '.repeat(8)) // 56 bytes: the worked example of SPEC.md §11.7
  valid(
    'deflate-small',
    'One 56-byte VERBATIM frame ("xbzrle " × 8) in a deflate-compressed batch (SPEC.md §11.7).',
    write(hdrWith('deflate'), verb(small)),
  )
  valid(
    'plain-batch',
    'Header compressor none: one plain batch (payload encoding 0), i.e. exactly the v1 frames.',
    write(hdrWith('none'), verb(small)),
  )

  // Compressible, page-like content: zero pages, text and a repeated structure.
  const text = ascii('The quick brown fox jumps over the lazy dog. '.repeat(400))
  for (const codec of ['deflate', 'lz4', 'zstd'] as const) {
    if (!isCompressorAvailable(codec)) throw new Error(`${codec} is needed to generate the v2 vectors`)
    valid(
      `compressed-${codec}`,
      `Header compressor ${codec}; one batch of ${text.length} bytes of text in VERBATIM frames, stored compressed.`,
      write(hdrWith(codec), verb(text)),
    )
  }

  valid(
    'mixed-plain-compressed',
    'deflate, batchBytes 4096: batch 0 text (compressed), batch 1 random bytes (stored plain: compression would ' +
      'not shrink it), batch 2 text (compressed).',
    write(
      hdrWith('deflate', 6),
      verb(text.subarray(0, 4096), noise(4096, 7), text.subarray(4096, 8192)),
      4096,
    ),
  )
  valid(
    'incompressible',
    'zstd header, three batches of random bytes: every batch is stored plain (payload encoding 0).',
    write(hdrWith('zstd'), verb(noise(3 * 4096, 99)), 4096),
  )

  // Every v1 frame kind inside one compressed batch.
  const kinds = (codec: CodecName) =>
    write(hdrWith(codec), (s) => {
      const { full: p0, page: p1, hdr: h1 } = qemuStreamStart(s)
      s.pageSame(0, 0, h1, p1)
      s.pageZero(0, 1, qhdr(PAGE, ZERO_F), 0)
      // foreign: QEMU XBZRLE record body 01 | be16 n | n bytes, applied to the cached zero page 1
      s.pageForeign(0, 1, qhdr(PAGE, XBZRLE_F), hex('01 00 04 00 02 ab cd'))
      s.invalidate(0, 1)
      s.reset()
      s.pageFull(0, 2, qhdr(2 * PAGE, PAGE_F), p0)
    })
  valid(
    'frame-kinds-compressed',
    'Every v1 frame kind (VERBATIM, PAGE_FULL, PAGE_DELTA, PAGE_SAME, PAGE_ZERO, PAGE_FOREIGN, INVALIDATE, RESET) ' +
      'inside one deflate-compressed batch.',
    kinds('deflate'),
  )
  valid('frame-kinds-compressed-zstd', 'The frame-kinds-compressed content with zstd.', kinds('zstd'))
  valid('frame-kinds-compressed-lz4', 'The frame-kinds-compressed content with lz4.', kinds('lz4'))

  // ---- malformed ----
  const d = write(hdrWith('deflate'), verb(text))
  const [dHead, dBatch, dEnd] = d.chunks as [Uint8Array, Uint8Array, Uint8Array]
  const sb = splitBatch(dBatch)
  if (sb.enc !== 1) throw new Error('expected a compressed batch')
  const lenV = readVarint(sb.payload, 0, sb.payload.length)
  if (!lenV.ok) throw new Error('bad framesLength')
  const framesLength = lenV.value
  const z = sb.payload.subarray(lenV.length)
  {
    const broken = z.slice()
    broken[0] = broken[0]! | 0x06 // BTYPE = 11: reserved block type
    bad(
      'corrupt-compressed-payload',
      'The deflate payload of a compressed batch has a reserved block type (BTYPE 11); the record CRC is resealed ' +
        'so only decompression can notice.',
      cat(dHead, batchRecord(sb.head, 1, cat(varint(framesLength), broken)), dEnd),
      'MALFORMED',
    )
  }
  bad(
    'frames-length-over-limit',
    'A compressed batch declares 4259841 decompressed frame bytes: above the limit, refused before decompressing.',
    cat(dHead, batchRecord(sb.head, 1, cat(varint(4259841), z)), dEnd),
    'LIMIT',
  )
  bad(
    'frames-length-mismatch',
    'A compressed batch declares one byte more than its payload decompresses to.',
    cat(dHead, batchRecord(sb.head, 1, cat(varint(framesLength + 1), z)), dEnd),
    'MALFORMED',
  )
  bad(
    'trailing-after-compressed',
    'A deflate payload followed by two extra bytes inside the batch.',
    cat(dHead, batchRecord(sb.head, 1, cat(sb.payload, Uint8Array.of(0, 0))), dEnd),
    'MALFORMED',
  )
  bad(
    'unknown-payload-encoding',
    'A batch whose payload-encoding byte is 2.',
    cat(dHead, batchRecord(sb.head, 2, sb.payload), dEnd),
    'MALFORMED',
  )
  {
    const n = write(hdrWith('none'), verb(text))
    const nb = splitBatch(n.chunks[1]!)
    bad(
      'compressed-without-compressor',
      'Header compressor none, but the batch says compressed (encoding 1, a valid deflate payload).',
      cat(n.chunks[0]!, batchRecord(nb.head, 1, sb.payload), n.chunks[2]!),
      'MALFORMED',
    )
  }
  {
    // prelude (9) + 48 len (5): the compressor id is the first header body byte, at offset 14
    const h = dHead.slice()
    h[14] = 9
    resealHeader(h)
    bad('unknown-compressor-id', 'Header compressor id 9 (CRC resealed).', cat(h, dBatch, dEnd), 'MALFORMED')
  }
  {
    // An unknown frame kind inside the decompressed frames: v1's frame rules apply, the error names the batch.
    const frames = cat(Uint8Array.of(0x09), ascii('x'.repeat(200)))
    const head = cat(varint(0), new Uint8Array(8)) // seq 0, outputLength 0, outputCrc 0
    const zz = deflateRawSync(frames, { level: 1 })
    bad(
      'compressed-unknown-frame-kind',
      'A compressed batch whose decompressed frames start with kind 0x09 (unknown in v1 and v2).',
      cat(dHead, batchRecord(head, 1, cat(varint(frames.length), zz)), dEnd),
      'MALFORMED',
    )
  }
  bad(
    'bit-flip-compressed',
    'One bit flipped inside the compressed payload (CRC not resealed): CHECKSUM.',
    cat(dHead, flipped(dBatch, dBatch.length - 10, 0x10), dEnd),
    'CHECKSUM',
  )
  return vectors
}
