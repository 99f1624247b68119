// Generates the golden vectors under vectors/v1/, (scripts/vectors-v2.ts) vectors/v2/ and (scripts/vectors-v3.ts) vectors/v3/. Vectors are FROZEN once committed: this script never
// overwrites an existing file (it skips any vector whose files exist). To add a vector, add it below and rerun.
//
// NAME.xbz  the xbzrle stream
// NAME.orig the original bytes it decodes to (valid vectors only), built here from plain inputs, not by decoding
// NAME.json description; for malformed vectors the exact expected error code and message
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FrameReader, type ProtocolErrorCode, type StreamHeader } from '../src/index.js'
import { FrameWriter } from '../src/v1/writer.js'
import { ByteWriter } from '../src/wire/byte-writer.js'
import { crc32 } from '../src/wire/crc32.js'
import { ascii, cat, hex, qhdr, type Vector, writeVectorFiles } from './vector-files.js'
import { writeV2Vectors } from './vectors-v2.js'
import { writeV3Vectors } from './vectors-v3.js'

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'vectors', 'v1')
const PAGE = 4096

/** A bare be64 value (no CONTINUE flag added), for header look-alikes. */
function be64(value: number): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(value))
  return b
}
const PAGE_F = 0x08
const ZERO_F = 0x02
const XBZRLE_F = 0x40

const page = (f: (i: number) => number) => Uint8Array.from({ length: PAGE }, (_, i) => f(i))
const zeros = () => new Uint8Array(PAGE)
const withBytes = (base: Uint8Array, set: Record<number, number>) => {
  const p = base.slice()
  for (const [k, v] of Object.entries(set)) p[Number(k)] = v
  return p
}

const HDR: StreamHeader = {
  pageSize: PAGE,
  cache: { cacheBytes: 64 * 1024 * 1024, ways: 1, policy: 'lru' },
  mode: 'canonical',
  source: 'qemu',
}

type Build = (w: FrameWriter, orig: Uint8Array[]) => void
function write(build: Build, header: StreamHeader = HDR, batchBytes?: number) {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({ onChunk: (c) => chunks.push(c), batchBytes })
  const orig: Uint8Array[] = []
  w.header(header)
  build(w, orig)
  w.end({ cache: { hits: 0, misses: 0 } })
  return { chunks, xbz: cat(...chunks), orig: cat(...orig) }
}

// ---------- record-level surgery for malformed vectors ----------

function record(tag: number, body: Uint8Array): Uint8Array {
  const w = new ByteWriter()
  w.u8(tag)
  w.u32le(body.length)
  w.bytes(body)
  w.u32le(crc32(w.view()))
  return w.take()
}
function batchBody(seq: number, outLen: number, outCrc: number, frames: Uint8Array): Uint8Array {
  const w = new ByteWriter()
  w.varint(seq)
  w.u32le(outLen)
  w.u32le(outCrc)
  w.bytes(frames)
  return w.take()
}
function endBody(total: number, batches: number, pages = [0, 0, 0, 0, 0]): Uint8Array {
  const w = new ByteWriter()
  w.varint(total)
  w.varint(batches)
  for (const p of pages) w.varint(p)
  w.varint(0)
  return w.take()
}
// ---------- the vectors ----------

const vectors: Vector[] = []
const valid = (name: string, description: string, r: { xbz: Uint8Array; orig: Uint8Array }) =>
  vectors.push({ name, description, xbz: r.xbz, orig: r.orig })
const bad = (name: string, description: string, xbz: Uint8Array, expect: ProtocolErrorCode) =>
  vectors.push({ name, description, xbz, expect })

const QEVM = hex('51 45 56 4d 00 00 00 03')

valid(
  'empty',
  'Header and END only: decodes to zero bytes.',
  write(() => {}),
)

valid(
  'verbatim',
  'One VERBATIM frame in one batch.',
  write((w, o) => {
    const b = cat(QEVM, ascii('xbzrle golden vector\n'))
    w.verbatim(b)
    o.push(b)
  }),
)

const pattern = Uint8Array.from({ length: 10000 }, (_, i) => (i * 31 + (i >> 8)) & 0xff)
valid(
  'verbatim-multi-batch',
  'A 10000-byte VERBATIM span with batchBytes 4096: split into three batches of 4096, 4096 and 1808 output bytes.',
  write(
    (w, o) => {
      w.verbatim(pattern)
      o.push(pattern)
    },
    HDR,
    4096,
  ),
)

valid(
  'full-pages',
  'Three PAGE_FULL frames of block 0 ("pc.ram"): the first header carries the block name, the others CONTINUE.',
  write((w, o) => {
    const pages = [page((i) => i & 0xff), page((i) => (i * 7) & 0xff), page(() => 0x5a)]
    pages.forEach((p, k) => {
      const h = k === 0 ? qhdr(0, PAGE_F, 'pc.ram') : qhdr(k * PAGE, PAGE_F)
      w.pageFull(0, k, h, p)
      o.push(h, p)
    })
  }),
)

valid(
  'delta-pages',
  'Real XBZRLE deltas from QEMU tests/unit/test-xbzrle.c (reference §5.6): ' +
    'page (0,0): zero page, then delta ff 1f 01 01 sets byte 4095 = 1; ' +
    'page (0,1): ZERO record, then delta 00 01 aa sets byte 0 = 0xaa; ' +
    'page (0,2): old page [1003]=107 [1005]=109, then delta eb 07 01 67 01 01 69 gives [1003]=103 [1005]=105.',
  write((w, o) => {
    const h0 = qhdr(0, PAGE_F, 'pc.ram')
    w.pageFull(0, 0, h0, zeros())
    o.push(h0, zeros())
    const h0b = qhdr(0, PAGE_F)
    const p0 = withBytes(zeros(), { 4095: 1 })
    w.pageDelta(0, 0, h0b, hex('ff 1f 01 01'), p0)
    o.push(h0b, p0)
    const hz = qhdr(PAGE, ZERO_F)
    w.pageZero(0, 1, hz, 0)
    o.push(hz, Uint8Array.of(0))
    const h1 = qhdr(PAGE, PAGE_F)
    const p1 = withBytes(zeros(), { 0: 0xaa })
    w.pageDelta(0, 1, h1, hex('00 01 aa'), p1)
    o.push(h1, p1)
    const h2 = qhdr(2 * PAGE, PAGE_F)
    const old2 = withBytes(zeros(), { 1003: 107, 1005: 109 })
    w.pageFull(0, 2, h2, old2)
    o.push(h2, old2)
    const new2 = withBytes(zeros(), { 1003: 103, 1005: 105 })
    w.pageDelta(0, 2, h2, hex('eb 07 01 67 01 01 69'), new2)
    o.push(h2, new2)
  }),
)

valid(
  'same-pages',
  'PAGE_FULL of (1,7) in block "vga.vram", then two PAGE_SAME of it: each outputs hdr + the cached page.',
  write((w, o) => {
    const p = page((i) => (i % 3) * 40)
    const h = qhdr(7 * PAGE, PAGE_F, 'vga.vram')
    w.pageFull(1, 7, h, p)
    o.push(h, p)
    const hc = qhdr(7 * PAGE, PAGE_F)
    for (let k = 0; k < 2; k++) {
      w.pageSame(1, 7, hc, p)
      o.push(hc, p)
    }
  }),
)

valid(
  'zero-pages',
  'Three PAGE_ZERO frames (QEMU ZERO records, fill 0); the first names block "pc.ram".',
  write((w, o) => {
    for (let k = 0; k < 3; k++) {
      const h = k === 0 ? qhdr(10 * PAGE, ZERO_F, 'pc.ram') : qhdr((10 + k) * PAGE, ZERO_F)
      w.pageZero(0, 10 + k, h, 0)
      o.push(h, Uint8Array.of(0))
    }
  }),
)

valid(
  'foreign',
  "QEMU's own XBZRLE record carried verbatim (body 01 0004 ff1f0101) onto a cached zero page; the decoder applies " +
    'it to its cache, so the following PAGE_SAME outputs the page with byte 4095 = 1.',
  write((w, o) => {
    const h = qhdr(0, PAGE_F, 'pc.ram')
    w.pageFull(0, 0, h, zeros())
    o.push(h, zeros())
    const hx = qhdr(0, XBZRLE_F)
    const body = hex('01 00 04 ff 1f 01 01')
    w.pageForeign(0, 0, hx, body)
    o.push(hx, body)
    const hs = qhdr(0, PAGE_F)
    const p = withBytes(zeros(), { 4095: 1 })
    w.pageSame(0, 0, hs, p)
    o.push(hs, p)
  }),
)

valid(
  'invalidate-reset',
  'Cache operations without output: PAGE_FULL (0,0), INVALIDATE (0,0), PAGE_FULL (0,0) again, RESET, PAGE_FULL (1,5), PAGE_SAME (1,5).',
  write((w, o) => {
    const a = page(() => 1)
    const b = page(() => 2)
    const c = page((i) => i >> 4)
    const h = qhdr(0, PAGE_F, 'pc.ram')
    w.pageFull(0, 0, h, a)
    o.push(h, a)
    w.invalidate(0, 0)
    const hc = qhdr(0, PAGE_F)
    w.pageFull(0, 0, hc, b)
    o.push(hc, b)
    w.reset()
    const h5 = qhdr(5 * PAGE, PAGE_F, 'pc.bios')
    w.pageFull(1, 5, h5, c)
    o.push(h5, c)
    const h5c = qhdr(5 * PAGE, PAGE_F)
    w.pageSame(1, 5, h5c, c)
    o.push(h5c, c)
  }),
)

valid(
  'header-compact-ignorable-ext',
  'Header with mode compact, source raw, 4-way "clock" cache, the ENCODER extension and an unknown IGNORABLE ' +
    'extension (type 4660, 3 bytes) that a v1 reader must skip.',
  write(
    (w, o) => {
      const b = ascii('raw bytes, not a QEMU stream\n')
      w.verbatim(b)
      o.push(b)
    },
    {
      pageSize: PAGE,
      cache: { cacheBytes: 1 << 20, ways: 4, policy: 'clock' },
      mode: 'compact',
      source: 'raw',
      encoder: 'xbzrle-vectors/1',
      extensions: [{ type: 4660, critical: false, data: hex('de ad 01') }],
    },
  ),
)

valid(
  'hdr-forms',
  'Both page-record header forms (SPEC.md §5.2). Derived (h = flags + 1): PAGE_FULL (0,1) CONTINUE|PAGE (h 0x29), ' +
    'PAGE_ZERO (0,2) with flags 4095 (h 4096, the largest). Raw (h = 0): PAGE_FULL (0,0) whose header names block ' +
    '"pc.ram" (15 bytes); PAGE_SAME (0,1) with the 8-byte header of offset 0x3000 (not 1 * pageSize); PAGE_ZERO ' +
    '(0,3) with be64(4 * 4096) (flags 4096 would be ≥ pageSize for page 3); PAGE_ZERO (0,4) with an empty header.',
  write((w, o) => {
    const p0 = page((i) => (i * 5) & 0xff)
    const h0 = qhdr(0, PAGE_F, 'pc.ram')
    w.pageFull(0, 0, h0, p0)
    o.push(h0, p0)
    const p1 = page((i) => (i >> 3) & 0xff)
    const h1 = qhdr(PAGE, PAGE_F)
    w.pageFull(0, 1, h1, p1)
    o.push(h1, p1)
    const hOff = qhdr(3 * PAGE, PAGE_F)
    w.pageSame(0, 1, hOff, p1)
    o.push(hOff, p1)
    const hMax = be64(2 * PAGE + 4095)
    w.pageZero(0, 2, hMax, 0)
    o.push(hMax, Uint8Array.of(0))
    const hNext = be64(4 * PAGE)
    w.pageZero(0, 3, hNext, 0)
    o.push(hNext, Uint8Array.of(0))
    const hEmpty = new Uint8Array(0)
    w.pageZero(0, 4, hEmpty, 0xff)
    o.push(hEmpty, Uint8Array.of(0xff))
  }),
)

valid(
  'page-index-order',
  'pageIndex delta coding (zigzag of pageIndex − (previous + 1)) in one batch, over blocks 0 and 1: ' +
    'PAGE_ZERO pages 5, 6, 7 (deltas 5, 0, 0), 3 (−5), 1000 (996), 999 (−2), 2^40 − 1, 0 (−2^40, the most ' +
    'negative), block 1 page 1 (0), INVALIDATE block 0 page 1 (−1), block 0 page 1 again (−1).',
  write((w, o) => {
    const zero = (b: number, i: number) => {
      const h = qhdr(i * PAGE, ZERO_F)
      w.pageZero(b, i, h, 0)
      o.push(h, Uint8Array.of(0))
    }
    for (const i of [5, 6, 7, 3, 1000, 999, 2 ** 40 - 1, 0]) zero(0, i)
    zero(1, 1)
    w.invalidate(0, 1)
    zero(0, 1)
  }),
)

valid(
  'page-index-batch-reset',
  'The pageIndex delta restarts at every batch (previous = −1): batch 0 holds PAGE_ZERO (0,100) (field ' +
    'zigzag(100) = c8 01); batch 1 holds PAGE_ZERO (0,101) (field zigzag(101) = ca 01, not 00) and (0,102) ' +
    '(field 00); batch 2 holds INVALIDATE (0,100) (field zigzag(100)) and PAGE_ZERO (0,100) (field zigzag(−1) = 01).',
  write((w, o) => {
    const zero = (i: number) => {
      const h = qhdr(i * PAGE, ZERO_F)
      w.pageZero(0, i, h, 0)
      o.push(h, Uint8Array.of(0))
    }
    zero(100)
    w.flush()
    zero(101)
    zero(102)
    w.flush()
    w.invalidate(0, 100)
    zero(100)
  }),
)

const mixed = write(
  (w, o) => {
    o.push(QEVM)
    w.verbatim(QEVM)
    const base = page((i) => (i * 13) & 0xff)
    for (let k = 0; k < 4; k++) {
      const h = k === 0 ? qhdr(0, PAGE_F, 'pc.ram') : qhdr(k * PAGE, PAGE_F)
      w.pageFull(0, k, h, base)
      o.push(h, base)
    }
    w.flush()
    const h1 = qhdr(PAGE, PAGE_F)
    const p1 = withBytes(base, { 0: 0xaa })
    // base[0] is 0: delta "00 01 aa" (reference §5.6)
    w.pageDelta(0, 1, h1, hex('00 01 aa'), p1)
    o.push(h1, p1)
    const h2 = qhdr(2 * PAGE, PAGE_F)
    w.pageSame(0, 2, h2, base)
    o.push(h2, base)
    const hz = qhdr(3 * PAGE, ZERO_F)
    w.pageZero(0, 3, hz, 0)
    o.push(hz, Uint8Array.of(0))
    const tail = ascii('\x10 section footer and friends')
    w.verbatim(tail)
    o.push(tail)
  },
  HDR,
  8192,
)
valid(
  'mixed-multi-batch',
  'VERBATIM, FULL, DELTA, SAME and ZERO frames over several batches (batchBytes 8192, one flush).',
  mixed,
)

// ---------- malformed ----------

const headerLen = mixed.chunks[0]!.length
const recs = mixed.chunks.slice(1) // batches ..., END
const batches = recs.slice(0, -1)
const endRec = recs.at(-1)!

{
  const s = mixed.xbz.slice()
  bad(
    'bad-magic',
    'mixed-multi-batch after a CRLF→LF text-mode conversion of the magic (byte 4 removed).',
    cat(s.subarray(0, 4), s.subarray(5)),
    'BAD_MAGIC',
  )
}
{
  const fixed = mixed.xbz.slice()
  fixed[8] = 9
  const hLen = new DataView(fixed.buffer).getUint32(10, true)
  new DataView(fixed.buffer).setUint32(14 + hLen, crc32(fixed.subarray(0, 14 + hLen)), true)
  bad(
    'future-version',
    'Format version 9 (header CRC valid): a v1 reader must refuse it with UNSUPPORTED_VERSION.',
    fixed,
    'UNSUPPORTED_VERSION',
  )
}
bad(
  'critical-extension',
  'Header with an unknown CRITICAL extension (type 4661): a v1 reader must refuse.',
  write(() => {}, { ...HDR, extensions: [{ type: 4661, critical: true, data: hex('01') }] }).xbz,
  'CRITICAL_EXTENSION',
)
bad(
  'truncated-no-end',
  'mixed-multi-batch without its END record.',
  mixed.xbz.subarray(0, mixed.xbz.length - endRec.length),
  'TRUNCATED',
)
bad(
  'truncated-mid-batch',
  'mixed-multi-batch cut 100 bytes into its second batch.',
  mixed.xbz.subarray(0, headerLen + batches[0]!.length + 100),
  'TRUNCATED',
)
{
  const s = mixed.xbz.slice()
  s[headerLen + 5 + 1 + 8 + 200] ^= 0x04
  bad('bit-flip', 'mixed-multi-batch with one bit flipped inside the first batch.', s, 'CHECKSUM')
}
bad(
  'reordered-batches',
  'mixed-multi-batch with its first two batches swapped.',
  cat(mixed.chunks[0]!, batches[1]!, batches[0]!, ...batches.slice(2), endRec),
  'SEQUENCE',
)
bad(
  'replayed-batch',
  'mixed-multi-batch with its first batch sent twice.',
  cat(mixed.chunks[0]!, batches[0]!, batches[0]!, ...batches.slice(1), endRec),
  'SEQUENCE',
)
{
  const r = new FrameReader()
  r.push(mixed.xbz)
  let end: { totalBytes: number; batches: number; pages: Record<string, number> } | undefined
  for (let it = r.next(); it; it = r.next()) if (it.type === 'end') end = it.end
  const p = end!.pages
  const wrong = record(
    0x45,
    endBody(end!.totalBytes + 1, end!.batches, [p.full!, p.delta!, p.same!, p.zero!, p.foreign!]),
  )
  bad(
    'wrong-totals',
    'mixed-multi-batch whose END (valid CRC) declares one output byte more than the batches hold.',
    cat(...mixed.chunks.slice(0, -1), wrong),
    'TOTALS',
  )
}
const head = write(() => {}).chunks[0]!
{
  const rec = Uint8Array.of(0x42, 0x00, 0x00, 0x50, 0x00) // declares a 5 MiB batch; nothing follows
  bad(
    'oversized-batch',
    'A batch record declaring 5 MiB of body (max 4 MiB + 64 KiB): refused on the length alone.',
    cat(head, rec),
    'LIMIT',
  )
}
{
  const hdr = new Uint8Array(300)
  const fw = new ByteWriter()
  fw.u8(0x05) // PAGE_ZERO
  fw.varint(0) // blockId
  fw.varint(0) // pageIndex 0
  fw.varint(0) // raw header
  fw.varint(300)
  fw.bytes(hdr)
  fw.u8(0)
  const frames = fw.take()
  const out = cat(hdr, Uint8Array.of(0))
  const b = record(0x42, batchBody(0, out.length, crc32(out), frames))
  bad(
    'oversized-hdr',
    'A PAGE_ZERO frame whose page-record header is 300 bytes (max 264).',
    cat(head, b, record(0x45, endBody(301, 1, [0, 0, 0, 1, 0]))),
    'LIMIT',
  )
}
{
  const fw = new ByteWriter()
  fw.u8(0x01)
  fw.varint(1024 * 1024 + 1)
  fw.bytes(ascii('x'))
  const b = record(0x42, batchBody(0, 1024 * 1024 + 1, 0, fw.take()))
  bad(
    'oversized-verbatim',
    'A VERBATIM frame declaring 1 MiB + 1 bytes (max 1 MiB): refused on the declared length.',
    cat(head, b),
    'LIMIT',
  )
}
bad(
  'trailing-garbage',
  'mixed-multi-batch followed by one extra newline byte.',
  cat(mixed.xbz, Uint8Array.of(0x0a)),
  'TRAILING_DATA',
)
{
  const b = record(0x42, batchBody(0, 0, 0, Uint8Array.of(0x09)))
  bad(
    'unknown-frame-kind',
    'A batch (valid CRC) holding frame kind 0x09, unknown in v1.',
    cat(head, b, record(0x45, endBody(0, 1))),
    'MALFORMED',
  )
}
{
  const b = record(0x42, batchBody(0, 0, 0, Uint8Array.of(0x07, 0x80, 0x00, 0x00)))
  bad(
    'overlong-varint',
    'An INVALIDATE frame whose blockId is the overlong varint 80 00.',
    cat(head, b, record(0x45, endBody(0, 1))),
    'MALFORMED',
  )
}
{
  const b = record(0x42, batchBody(0, 4, crc32(ascii('abc')), Uint8Array.of(0x01, 0x03, 0x61, 0x62, 0x63)))
  bad(
    'output-length-mismatch',
    'A batch declaring 4 output bytes whose frames produce 3.',
    cat(head, b, record(0x45, endBody(4, 1))),
    'MALFORMED',
  )
}
{
  const s = write(() => {}).xbz.slice()
  s[20] ^= 0x01
  bad('header-bit-flip', 'The empty vector with one bit flipped in the header record.', s, 'CHECKSUM')
}

/** A hand-made stream holding one batch of `frames` that decodes to `out`, and a matching END. */
function oneBatch(frames: Uint8Array, out: Uint8Array, pages = [0, 0, 0, 0, 0]): Uint8Array {
  const b = record(0x42, batchBody(0, out.length, crc32(out), frames))
  return cat(head, b, record(0x45, endBody(out.length, 1, pages)))
}
{
  const out = cat(be64(4096), Uint8Array.of(0))
  bad(
    'hdr-flags-too-large',
    'A PAGE_ZERO frame (0,0) with derived header h = 4097: flags h − 1 = 4096 is not below pageSize 4096 ' +
      '(the header be64(4096) would belong to page 1; a writer sends it raw).',
    oneBatch(hex('05 00 00 81 20 00'), out, [0, 0, 0, 1, 0]),
    'MALFORMED',
  )
}
bad(
  'page-index-below-zero',
  'INVALIDATE (0,2) (field 04), then an INVALIDATE whose pageIndex field 07 = zigzag(−4) gives 3 − 4 = −1.',
  oneBatch(hex('07 00 04 07 00 07'), new Uint8Array(0)),
  'MALFORMED',
)
bad(
  'page-index-too-large',
  'An INVALIDATE whose pageIndex field is zigzag(2^40) = 80 80 80 80 80 40: page 2^40 is above 2^40 − 1.',
  oneBatch(hex('07 00 80 80 80 80 80 40'), new Uint8Array(0)),
  'LIMIT',
)
{
  const h = qhdr(0, ZERO_F)
  bad(
    'raw-hdr-derivable',
    'A PAGE_ZERO frame (0,0) carrying its CONTINUE|ZERO header be64(0x22) raw (h = 0, len 8): that header has the ' +
      'derived form h = 0x23, the only valid encoding of it.',
    oneBatch(cat(hex('05 00 00 00 08'), h, hex('00')), cat(h, Uint8Array.of(0)), [0, 0, 0, 1, 0]),
    'MALFORMED',
  )
}

// ---------- write (never overwrite) ----------

console.log(`${writeVectorFiles(OUT, 1, vectors)} vector(s) written to ${OUT}`)

const v2Out = join(OUT, '..', 'v2')
console.log(`${writeV2Vectors(v2Out)} vector(s) written to ${v2Out}`)

const v3Out = join(OUT, '..', 'v3')
console.log(`${writeV3Vectors(v3Out)} vector(s) written to ${v3Out}`)
