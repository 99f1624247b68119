/** BENCHMARKS.md section of the `compress` stage: format v2's second-stage compressors against lzop -1. */
import type { CompressRow } from './compress.js'
import { type MachineInfo, shortVersion } from './machine.js'
import { mdTable } from './util.js'

export interface CompressResults {
  machine: MachineInfo
  runs: number
  rows: CompressRow[]
  stageS?: number
}

/** Fixed digits, '–' for what was not measured (JSON stores NaN and Infinity as null). */
const fmt = (x: number | null, d = 0): string => (x !== null && Number.isFinite(x) ? x.toFixed(d) : '–')

export function renderCompress(c: CompressResults): string[] {
  const m = c.machine
  const rows = c.rows.map((r) => {
    const lz = c.rows.find((x) => x.stream === r.stream && x.codec.startsWith('lzop'))
    return [
      r.stream,
      String(r.input),
      r.codec,
      String(r.out),
      fmt(r.out / r.input, 3),
      lz ? fmt(r.out / lz.out, 2) : '–',
      fmt(r.compressMBs),
      fmt(r.encodeMBs),
      fmt(r.decompressMBs),
      r.compressedBatches,
    ]
  })
  return [
    '## Second-stage compressors (format v2)',
    '',
    "What v2's per-batch compressor buys and costs against `lzop -1` on the same original bytes (`--only compress`,",
    `bench/src/compress.ts; measured on ${m.date}, commit \`${m.commit}\`, ${m.cpu}, ${m.cores} cores, Node ${m.node},`,
    `QEMU ${shortVersion(m.versions.qemu)} captures, lzop ${m.versions.lzop}). Streams: the real QEMU captures of`,
    '`packages/adapter-libvirt/fixtures/qemu-7.2` (the 40-byte return path is skipped) and `SimulatedGuest` streams',
    '(`passes 0`: a save-like single first pass; `passes 4`: a migration with re-sent pages). Each stream is',
    'XBZRLE-encoded once as format v1 (the frames a v2 batch carries); every compressor then compresses every batch',
    'and the smaller of plain/compressed is kept, as the v2 writer does.',
    '',
    '**output bytes** = the v2 stream size; **vs lzop -1** = output / `lzop -1 -c` output; **2nd stage MB/s** = frame',
    'bytes compressed per CPU second (for lzop: input bytes); **encode MB/s (input)** = input bytes per CPU second of',
    'XBZRLE encoder + second stage; **decompress MB/s** = decompressed frame bytes per CPU second. CPU time (user +',
    `system), median of ${c.runs} runs for the compressors, best run for lzop and the XBZRLE encoder. The ~1 MB captures`,
    'are one batch each: their speeds are dominated by per-run setup and timer resolution; read the speed columns on',
    'the large streams.',
    '',
    mdTable(
      [
        'stream',
        'input bytes',
        'encoder',
        'output bytes',
        'ratio',
        'vs lzop -1',
        '2nd stage MB/s',
        'encode MB/s (input)',
        'decompress MB/s',
        'compressed batches',
      ],
      rows,
      ['l', 'r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  ]
}
