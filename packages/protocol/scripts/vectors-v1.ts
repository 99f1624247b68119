// Golden vectors of format v1 (vectors/v1/), written by make-vectors.ts. FROZEN once committed: never change a
// vector here that has files; add new ones.

import type { StreamHeader } from '../src/index.js'
import { FrameReader } from '../src/index.js'
import { ByteWriter } from '../src/wire/byte-writer.js'
import { crc32 } from '../src/wire/crc32.js'
import {
  ascii,
  BASE_HEADER,
  type Build,
  be64,
  cat,
  flipped,
  hex,
  PAGE,
  PAGE_F,
  page,
  QEVM,
  qhdr,
  record,
  resealHeader,
  type Vector,
  vectorList,
  verb,
  withBytes,
  writeStream,
  XBZRLE_F,
  ZERO_F,
  zeros,
} from './vector-kit.js'

const write = (build: Build, header: StreamHeader = BASE_HEADER, batchBytes?: number) =>
  writeStream(header, build, { version: 1, batchBytes })

/** A v1 batch body: seq, output length and CRC, then the frames. */
function batchBody(seq: number, outLen: number, outCrc: number, frames: Uint8Array): Uint8Array {
  const w = new ByteWriter()
  w.varint(seq)
  w.u32le(outLen)
  w.u32le(outCrc)
  w.bytes(frames)
  return w.take()
}
/** A v1 END body: total bytes, batches, the five page counts, no cache stats. */
function endBody(total: number, batches: number, pages = [0, 0, 0, 0, 0]): Uint8Array {
  const w = new ByteWriter()
  w.varint(total)
  w.varint(batches)
  for (const p of pages) w.varint(p)
  w.varint(0)
  return w.take()
}

export function v1Vectors(): Vector[] {
  const { vectors, valid, bad } = vectorList()

  valid(
    'empty',
    'Header and END only: decodes to zero bytes.',
    write(() => {}),
  )

  valid(
    'verbatim',
    'One VERBATIM frame in one batch.',
    write(verb(cat(QEVM, ascii('xbzrle golden vector\n')))),
  )

  const pattern = Uint8Array.from({ length: 10000 }, (_, i) => (i * 31 + (i >> 8)) & 0xff)
  valid(
    'verbatim-multi-batch',
    'A 10000-byte VERBATIM span with batchBytes 4096: split into three batches of 4096, 4096 and 1808 output bytes.',
    write(verb(pattern), BASE_HEADER, 4096),
  )

  valid(
    'full-pages',
    'Three PAGE_FULL frames of block 0 ("pc.ram"): the first header carries the block name, the others CONTINUE.',
    write((s) => {
      const pages = [page((i) => i & 0xff), page((i) => (i * 7) & 0xff), page(() => 0x5a)]
      pages.forEach((p, k) => {
        const h = k === 0 ? qhdr(0, PAGE_F, 'pc.ram') : qhdr(k * PAGE, PAGE_F)
        s.pageFull(0, k, h, p)
      })
    }),
  )

  valid(
    'delta-pages',
    'Real XBZRLE deltas from QEMU tests/unit/test-xbzrle.c (reference §5.6): ' +
      'page (0,0): zero page, then delta ff 1f 01 01 sets byte 4095 = 1; ' +
      'page (0,1): ZERO record, then delta 00 01 aa sets byte 0 = 0xaa; ' +
      'page (0,2): old page [1003]=107 [1005]=109, then delta eb 07 01 67 01 01 69 gives [1003]=103 [1005]=105.',
    write((s) => {
      s.pageFull(0, 0, qhdr(0, PAGE_F, 'pc.ram'), zeros())
      s.pageDelta(0, 0, qhdr(0, PAGE_F), hex('ff 1f 01 01'), withBytes(zeros(), { 4095: 1 }))
      s.pageZero(0, 1, qhdr(PAGE, ZERO_F), 0)
      s.pageDelta(0, 1, qhdr(PAGE, PAGE_F), hex('00 01 aa'), withBytes(zeros(), { 0: 0xaa }))
      const h2 = qhdr(2 * PAGE, PAGE_F)
      s.pageFull(0, 2, h2, withBytes(zeros(), { 1003: 107, 1005: 109 }))
      s.pageDelta(0, 2, h2, hex('eb 07 01 67 01 01 69'), withBytes(zeros(), { 1003: 103, 1005: 105 }))
    }),
  )

  valid(
    'same-pages',
    'PAGE_FULL of (1,7) in block "vga.vram", then two PAGE_SAME of it: each outputs hdr + the cached page.',
    write((s) => {
      const p = page((i) => (i % 3) * 40)
      s.pageFull(1, 7, qhdr(7 * PAGE, PAGE_F, 'vga.vram'), p)
      for (let k = 0; k < 2; k++) s.pageSame(1, 7, qhdr(7 * PAGE, PAGE_F), p)
    }),
  )

  valid(
    'zero-pages',
    'Three PAGE_ZERO frames (QEMU ZERO records, fill 0); the first names block "pc.ram".',
    write((s) => {
      for (let k = 0; k < 3; k++) {
        const h = k === 0 ? qhdr(10 * PAGE, ZERO_F, 'pc.ram') : qhdr((10 + k) * PAGE, ZERO_F)
        s.pageZero(0, 10 + k, h, 0)
      }
    }),
  )

  valid(
    'foreign',
    "QEMU's own XBZRLE record carried verbatim (body 01 0004 ff1f0101) onto a cached zero page; the decoder applies " +
      'it to its cache, so the following PAGE_SAME outputs the page with byte 4095 = 1.',
    write((s) => {
      s.pageFull(0, 0, qhdr(0, PAGE_F, 'pc.ram'), zeros())
      s.pageForeign(0, 0, qhdr(0, XBZRLE_F), hex('01 00 04 ff 1f 01 01'))
      s.pageSame(0, 0, qhdr(0, PAGE_F), withBytes(zeros(), { 4095: 1 }))
    }),
  )

  valid(
    'invalidate-reset',
    'Cache operations without output: PAGE_FULL (0,0), INVALIDATE (0,0), PAGE_FULL (0,0) again, RESET, PAGE_FULL (1,5), PAGE_SAME (1,5).',
    write((s) => {
      s.pageFull(
        0,
        0,
        qhdr(0, PAGE_F, 'pc.ram'),
        page(() => 1),
      )
      s.invalidate(0, 0)
      s.pageFull(
        0,
        0,
        qhdr(0, PAGE_F),
        page(() => 2),
      )
      s.reset()
      const c = page((i) => i >> 4)
      s.pageFull(1, 5, qhdr(5 * PAGE, PAGE_F, 'pc.bios'), c)
      s.pageSame(1, 5, qhdr(5 * PAGE, PAGE_F), c)
    }),
  )

  valid(
    'header-compact-ignorable-ext',
    'Header with mode compact, source raw, 4-way "clock" cache, the ENCODER extension and an unknown IGNORABLE ' +
      'extension (type 4660, 3 bytes) that a v1 reader must skip.',
    write(verb(ascii('raw bytes, not a QEMU stream\n')), {
      pageSize: PAGE,
      cache: { cacheBytes: 1 << 20, ways: 4, policy: 'clock' },
      mode: 'compact',
      source: 'raw',
      encoder: 'xbzrle-vectors/1',
      extensions: [{ type: 4660, critical: false, data: hex('de ad 01') }],
    }),
  )

  valid(
    'hdr-forms',
    'Both page-record header forms (SPEC.md §5.2). Derived (h = flags + 1): PAGE_FULL (0,1) CONTINUE|PAGE (h 0x29), ' +
      'PAGE_ZERO (0,2) with flags 4095 (h 4096, the largest). Raw (h = 0): PAGE_FULL (0,0) whose header names block ' +
      '"pc.ram" (15 bytes); PAGE_SAME (0,1) with the 8-byte header of offset 0x3000 (not 1 * pageSize); PAGE_ZERO ' +
      '(0,3) with be64(4 * 4096) (flags 4096 would be ≥ pageSize for page 3); PAGE_ZERO (0,4) with an empty header.',
    write((s) => {
      const p0 = page((i) => (i * 5) & 0xff)
      const h0 = qhdr(0, PAGE_F, 'pc.ram')
      s.pageFull(0, 0, h0, p0)
      const p1 = page((i) => (i >> 3) & 0xff)
      s.pageFull(0, 1, qhdr(PAGE, PAGE_F), p1)
      s.pageSame(0, 1, qhdr(3 * PAGE, PAGE_F), p1) // raw: not the header of page 1
      s.pageZero(0, 2, be64(2 * PAGE + 4095), 0) // derived, the largest flags
      s.pageZero(0, 3, be64(4 * PAGE), 0) // raw: flags 4096 would be ≥ pageSize
      s.pageZero(0, 4, new Uint8Array(0), 0xff) // raw, empty
    }),
  )

  valid(
    'page-index-order',
    'pageIndex delta coding (zigzag of pageIndex − (previous + 1)) in one batch, over blocks 0 and 1: ' +
      'PAGE_ZERO pages 5, 6, 7 (deltas 5, 0, 0), 3 (−5), 1000 (996), 999 (−2), 2^40 − 1, 0 (−2^40, the most ' +
      'negative), block 1 page 1 (0), INVALIDATE block 0 page 1 (−1), block 0 page 1 again (−1).',
    write((s) => {
      const zero = (b: number, i: number) => s.pageZero(b, i, qhdr(i * PAGE, ZERO_F), 0)
      for (const i of [5, 6, 7, 3, 1000, 999, 2 ** 40 - 1, 0]) zero(0, i)
      zero(1, 1)
      s.invalidate(0, 1)
      zero(0, 1)
    }),
  )

  valid(
    'page-index-batch-reset',
    'The pageIndex delta restarts at every batch (previous = −1): batch 0 holds PAGE_ZERO (0,100) (field ' +
      'zigzag(100) = c8 01); batch 1 holds PAGE_ZERO (0,101) (field zigzag(101) = ca 01, not 00) and (0,102) ' +
      '(field 00); batch 2 holds INVALIDATE (0,100) (field zigzag(100)) and PAGE_ZERO (0,100) (field zigzag(−1) = 01).',
    write((s) => {
      const zero = (i: number) => s.pageZero(0, i, qhdr(i * PAGE, ZERO_F), 0)
      zero(100)
      s.flush()
      zero(101)
      zero(102)
      s.flush()
      s.invalidate(0, 100)
      zero(100)
    }),
  )

  const mixed = write(
    (s) => {
      s.verbatim(QEVM)
      const base = page((i) => (i * 13) & 0xff)
      for (let k = 0; k < 4; k++) {
        const h = k === 0 ? qhdr(0, PAGE_F, 'pc.ram') : qhdr(k * PAGE, PAGE_F)
        s.pageFull(0, k, h, base)
      }
      s.flush()
      const h1 = qhdr(PAGE, PAGE_F)
      const p1 = withBytes(base, { 0: 0xaa })
      // base[0] is 0: delta "00 01 aa" (reference §5.6)
      s.pageDelta(0, 1, h1, hex('00 01 aa'), p1)
      s.pageSame(0, 2, qhdr(2 * PAGE, PAGE_F), base)
      s.pageZero(0, 3, qhdr(3 * PAGE, ZERO_F), 0)
      s.verbatim(ascii('\x10 section footer and friends'))
    },
    BASE_HEADER,
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
    resealHeader(fixed)
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
    write(() => {}, { ...BASE_HEADER, extensions: [{ type: 4661, critical: true, data: hex('01') }] }).xbz,
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
  bad(
    'bit-flip',
    'mixed-multi-batch with one bit flipped inside the first batch.',
    flipped(mixed.xbz, headerLen + 5 + 1 + 8 + 200, 0x04),
    'CHECKSUM',
  )
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
  bad(
    'header-bit-flip',
    'The empty vector with one bit flipped in the header record.',
    flipped(write(() => {}).xbz, 20, 0x01),
    'CHECKSUM',
  )

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

  return vectors
}
