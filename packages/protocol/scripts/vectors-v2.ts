// Golden vectors of format v2 (vectors/v2/), called by make-vectors.ts. Same rules as v1: FROZEN once committed,
// never overwritten (a vector whose files exist is skipped).
import { deflateRawSync } from 'node:zlib'
import { FrameWriter, type ProtocolErrorCode, type StreamHeader } from '../src/index.js'
import { type CodecName, isCompressorAvailable } from '../src/v2/codecs.js'
import { ByteWriter, readU32le } from '../src/wire/byte-writer.js'
import { crc32 } from '../src/wire/crc32.js'
import { readVarint } from '../src/wire/varint.js'
import { ascii, cat, noise, qhdr, type Vector, writeVectorFiles } from './vector-files.js'

const PAGE = 4096
const PAGE_F = 0x08
const ZERO_F = 0x02
const XBZRLE_F = 0x40

const base: StreamHeader = {
  pageSize: PAGE,
  cache: { cacheBytes: 64 * 1024 * 1024, ways: 1, policy: 'lru' },
  mode: 'canonical',
  source: 'qemu',
}
const hdrWith = (codec: CodecName, level?: number): StreamHeader => ({
  ...base,
  compression: level === undefined ? { codec } : { codec, level },
})

type Build = (w: FrameWriter, orig: Uint8Array[]) => void
function write(header: StreamHeader, build: Build, batchBytes?: number) {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({ onChunk: (c) => chunks.push(c), batchBytes, version: 2 })
  const orig: Uint8Array[] = []
  w.header(header)
  build(w, orig)
  w.end({ cache: { hits: 0, misses: 0 } })
  return { chunks, xbz: cat(...chunks), orig: cat(...orig), stats: w.batchStats! }
}

/** A v2 batch record rebuilt from its parts, CRC sealed. */
function batchRecord(head: Uint8Array, enc: number, payload: Uint8Array): Uint8Array {
  const w = new ByteWriter()
  w.u8(0x42)
  w.u32le(head.length + 1 + payload.length)
  w.bytes(head)
  w.u8(enc)
  w.bytes(payload)
  w.u32le(crc32(w.view()))
  return w.take()
}
/** Splits a v2 batch record into head (seq, outputLength, outputCrc), encoding and payload. */
function splitBatch(rec: Uint8Array) {
  const bodyEnd = 5 + readU32le(rec, 1)
  const seq = readVarint(rec, 5, bodyEnd)
  const headEnd = 5 + (seq.ok ? seq.length : 0) + 8
  return { head: rec.subarray(5, headEnd), enc: rec[headEnd]!, payload: rec.subarray(headEnd + 1, bodyEnd) }
}

export function v2Vectors(): Vector[] {
  const vectors: Vector[] = []
  const valid = (name: string, description: string, r: { xbz: Uint8Array; orig: Uint8Array }) =>
    vectors.push({ name, description, xbz: r.xbz, orig: r.orig })
  const bad = (name: string, description: string, xbz: Uint8Array, expect: ProtocolErrorCode) =>
    vectors.push({ name, description, xbz, expect })
  const verb =
    (b: Uint8Array): Build =>
    (w, o) => {
      w.verbatim(b)
      o.push(b)
    }

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
      (w, o) => {
        const parts = [text.subarray(0, 4096), noise(4096, 7), text.subarray(4096, 8192)]
        for (const p of parts) {
          w.verbatim(p)
          o.push(p)
        }
      },
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
    write(hdrWith(codec), (w, o) => {
      const v = ascii('QEVM\0\0\0\x03')
      w.verbatim(v)
      o.push(v)
      const p0 = Uint8Array.from({ length: PAGE }, (_, i) => (i % 64 === 0 ? i >> 6 : 0))
      const h0 = qhdr(0, PAGE_F, 'pc.ram')
      w.pageFull(0, 0, h0, p0)
      o.push(h0, p0)
      const p1 = p0.slice()
      p1[4095] = 1
      const h1 = qhdr(0, PAGE_F)
      w.pageDelta(0, 0, h1, Uint8Array.of(0xff, 0x1f, 0x01, 0x01), p1)
      o.push(h1, p1)
      w.pageSame(0, 0, h1, p1)
      o.push(h1, p1)
      const hz = qhdr(PAGE, ZERO_F)
      w.pageZero(0, 1, hz, 0)
      o.push(hz, Uint8Array.of(0))
      // foreign: QEMU XBZRLE record body 01 | be16 n | n bytes, applied to the cached zero page 1
      const body = Uint8Array.of(0x01, 0x00, 0x04, 0x00, 0x02, 0xab, 0xcd)
      const hx = qhdr(PAGE, XBZRLE_F)
      w.pageForeign(0, 1, hx, body)
      o.push(hx, body)
      w.invalidate(0, 1)
      w.reset()
      const hf = qhdr(2 * PAGE, PAGE_F)
      w.pageFull(0, 2, hf, p0)
      o.push(hf, p0)
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
  const varint = (n: number) => {
    const w = new ByteWriter()
    w.varint(n)
    return w.take()
  }
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
    const bodyEnd = 14 + readU32le(h, 10)
    new DataView(h.buffer).setUint32(bodyEnd, crc32(h.subarray(0, bodyEnd)), true)
    bad('unknown-compressor-id', 'Header compressor id 9 (CRC resealed).', cat(h, dBatch, dEnd), 'MALFORMED')
  }
  {
    // An unknown frame kind inside the decompressed frames: v1's frame rules apply, the error names the batch.
    const frames = cat(Uint8Array.of(0x09), ascii('x'.repeat(200)))
    const w = new ByteWriter()
    w.varint(0)
    w.u32le(0)
    w.u32le(0)
    const zz = deflateRawSync(frames, { level: 1 })
    bad(
      'compressed-unknown-frame-kind',
      'A compressed batch whose decompressed frames start with kind 0x09 (unknown in v1 and v2).',
      cat(dHead, batchRecord(w.take(), 1, cat(varint(frames.length), zz)), dEnd),
      'MALFORMED',
    )
  }
  bad(
    'bit-flip-compressed',
    'One bit flipped inside the compressed payload (CRC not resealed): CHECKSUM.',
    cat(
      dHead,
      (() => {
        const r = dBatch.slice()
        r[r.length - 10] = r[r.length - 10]! ^ 0x10
        return r
      })(),
      dEnd,
    ),
    'CHECKSUM',
  )
  return vectors
}

/** Writes the v2 vectors that do not exist yet into `out`; returns how many were written. */
export function writeV2Vectors(out: string): number {
  return writeVectorFiles(out, 2, v2Vectors())
}
