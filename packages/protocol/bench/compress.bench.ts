// Second-stage compressor benchmark for format v2 (run: npm run bench -w @xbzrle/protocol).
//
// For every stream (the real QEMU 7.2 captures of adapter-libvirt/fixtures/qemu-7.2 and simulated guests):
//   1. XBZRLE-encode it once (the v1 frames, what v2 batches carry), timing the encoder;
//   2. per compressor, compress every batch's frame bytes, keep the smaller of plain/compressed (as the v2 writer
//      does), time compression and decompression (median of 5 runs, round trip checked);
//   3. run the Debian `lzop -1 -c` on the same original bytes as the baseline.
// Then writes the tables into BENCHMARKS.md (between the markers) and prints them.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SimulatedGuest, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { decompress as unzstd } from 'fzstd'
import { CODEC_LEVELS, type CodecName, findCompressor } from '../src/v2/codecs.js'
import { readU32le } from '../src/wire/byte-writer.js'
import { readVarint } from '../src/wire/varint.js'

const here = dirname(fileURLToPath(import.meta.url))
const fixtures = join(here, '..', '..', 'adapter-libvirt', 'fixtures', 'qemu-7.2')
const RUNS = Number(process.env.BENCH_RUNS ?? 5)

interface Input {
  name: string
  bytes: Uint8Array
}

function inputs(): Input[] {
  const out: Input[] = []
  for (const f of readdirSync(fixtures).sort()) {
    if (!f.endsWith('.zst')) continue
    const bytes = unzstd(new Uint8Array(readFileSync(join(fixtures, f))))
    if (bytes.length < 4096) continue // postcopy-c0.d2s: a 40-byte return path
    out.push({ name: f.slice(0, -4), bytes })
  }
  const sim = (name: string, opts: ConstructorParameters<typeof SimulatedGuest>[0]) => {
    const parts = [...new SimulatedGuest(opts).stream()]
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
    let o = 0
    for (const p of parts) {
      bytes.set(p, o)
      o += p.length
    }
    out.push({ name, bytes })
  }
  sim('sim-64M-save (passes 0)', { memMiB: 64, passes: 0 })
  sim('sim-64M-migrate (passes 4)', { memMiB: 64, passes: 4 })
  return out
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
/** CPU time of this process in ms (user + system): the machine may be shared, wall time would measure the neighbours. */
const now = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

/** XBZRLE-encodes `input` as v1 and returns the frame bytes of each batch, the v1 size and the encode time. */
function encodeV1(input: Uint8Array) {
  let best = Number.POSITIVE_INFINITY
  let chunks: Uint8Array[] = []
  for (let run = 0; run < Math.max(1, Math.min(RUNS, 3)); run++) {
    chunks = []
    const t0 = now()
    const enc = new XbzrleEncoder((c) => chunks.push(c), { formatVersion: 1 })
    for (let o = 0; o < input.length; o += 1 << 20) enc.push(input.subarray(o, o + (1 << 20)))
    enc.finish()
    best = Math.min(best, now() - t0)
  }
  const frames: Uint8Array[] = []
  let size = 0
  for (const c of chunks) {
    size += c.length
    if (c[0] !== 0x42) continue // header and END records
    const len = readU32le(c, 1)
    const seq = readVarint(c, 5, 5 + len)
    if (!seq.ok) throw new Error('bad batch')
    frames.push(c.subarray(5 + seq.length + 8, 5 + len))
  }
  return { frames, size, ms: best }
}

interface Row {
  stream: string
  input: number
  codec: string
  out: number
  compressMBs: number
  encodeMBs: number
  decompressMBs: number
  compressedBatches: string
}

function lzop(input: Uint8Array): { out: number; ms: number } {
  const dir = mkdtempSync(join(tmpdir(), 'lzop-'))
  const file = join(dir, 'in')
  writeFileSync(file, input)
  let best = Number.POSITIVE_INFINITY
  let out = 0
  for (let run = 0; run < RUNS; run++) {
    // CPU time of the child (bash's `times`: user and system time of its children), output to /dev/null.
    const r = spawnSync('bash', ['-c', 'lzop -1 -c "$1" > /dev/null && times', '_', file], {
      encoding: 'utf8',
    })
    if (r.status !== 0) throw new Error(`lzop failed: ${r.stderr}`)
    const t = [
      ...r.stdout
        .trim()
        .split('\n')
        .at(-1)!
        .matchAll(/(\d+)m([\d.]+)s/g),
    ]
    best = Math.min(
      best,
      t.reduce((ms, m) => ms + (Number(m[1]) * 60 + Number(m[2])) * 1000, 0),
    )
  }
  out = spawnSync('lzop', ['-1', '-c', file], { maxBuffer: 1 << 30 }).stdout.length
  rmSync(dir, { recursive: true })
  return { out, ms: best }
}

const mbs = (bytes: number, ms: number) => (ms > 0 ? bytes / 1e6 / (ms / 1000) : Number.POSITIVE_INFINITY)

function main(): void {
  const codecs: CodecName[] = ['none', 'lz4', 'zstd', 'deflate']
  const rows: Row[] = []
  for (const { name, bytes } of inputs()) {
    const v1 = encodeV1(bytes)
    const frameBytes = v1.frames.reduce((n, f) => n + f.length, 0)
    const base = lzop(bytes)
    rows.push({
      stream: name,
      input: bytes.length,
      codec: 'lzop -1 (CLI)',
      out: base.out,
      compressMBs: mbs(bytes.length, base.ms),
      encodeMBs: mbs(bytes.length, base.ms),
      decompressMBs: Number.NaN,
      compressedBatches: '',
    })
    for (const codec of codecs) {
      // v2 = v1 + 1 byte per batch (payload encoding), + the varint framesLength of compressed batches.
      let out = v1.size + v1.frames.length + 1
      if (codec === 'none') {
        rows.push({
          stream: name,
          input: bytes.length,
          codec: 'v2 none (= v1 frames)',
          out,
          compressMBs: Number.NaN,
          encodeMBs: mbs(bytes.length, v1.ms),
          decompressMBs: Number.NaN,
          compressedBatches: `0/${v1.frames.length}`,
        })
        continue
      }
      const c = findCompressor(codec)
      if (!c) {
        console.error(`${codec}: not installed, skipped`)
        continue
      }
      const level = CODEC_LEVELS[codec].default
      const ct: number[] = []
      const dt: number[] = []
      let packed: (Uint8Array | undefined)[] = []
      for (let run = 0; run < RUNS; run++) {
        const t0 = now()
        packed = v1.frames.map((f) => {
          const z = c.compress(f, level)
          return z.length + 4 < f.length ? z : undefined
        })
        ct.push(now() - t0)
        const t1 = now()
        for (let i = 0; i < packed.length; i++) {
          const z = packed[i]
          if (z) c.decompress(z, v1.frames[i]!.length)
        }
        dt.push(now() - t1)
      }
      let kept = 0
      let decompressed = 0
      for (let i = 0; i < packed.length; i++) {
        const z = packed[i]
        const f = v1.frames[i]!
        if (!z) continue
        const back = c.decompress(z, f.length)
        if (Buffer.compare(back, f) !== 0) throw new Error(`${codec}: round trip failed`)
        out -= f.length - z.length - (f.length < 128 ? 1 : f.length < 16384 ? 2 : f.length < 2097152 ? 3 : 4)
        kept++
        decompressed += f.length
      }
      rows.push({
        stream: name,
        input: bytes.length,
        codec: `v2 ${codec} ${level}`,
        out,
        compressMBs: mbs(frameBytes, median(ct)),
        encodeMBs: mbs(bytes.length, v1.ms + median(ct)),
        decompressMBs: mbs(decompressed, median(dt)),
        compressedBatches: `${kept}/${v1.frames.length}`,
      })
    }
  }
  const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–')
  const lines = [
    '| stream | input bytes | encoder | output bytes | ratio | vs lzop -1 | 2nd stage MB/s | encode MB/s (input) | decompress MB/s | compressed batches |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const r of rows) {
    const lz = rows.find((x) => x.stream === r.stream && x.codec.startsWith('lzop'))!
    lines.push(
      `| ${r.stream} | ${r.input} | ${r.codec} | ${r.out} | ${fmt(r.out / r.input, 3)} | ${fmt(r.out / lz.out, 2)} | ${fmt(r.compressMBs)} | ${fmt(r.encodeMBs)} | ${fmt(r.decompressMBs)} | ${r.compressedBatches} |`,
    )
  }
  const table = lines.join('\n')
  console.log(table)
  const path = join(here, '..', 'BENCHMARKS.md')
  let doc: string
  try {
    doc = readFileSync(path, 'utf8')
  } catch {
    doc = '# Benchmarks\n\n<!-- bench:start -->\n<!-- bench:end -->\n'
  }
  const stamp = `Generated by \`npm run bench -w @xbzrle/protocol\` on ${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${RUNS} runs (CPU time, user + system: median for the compressors, best run for lzop and the XBZRLE encoder).`
  doc = doc.replace(
    /<!-- bench:start -->[\s\S]*<!-- bench:end -->/,
    `<!-- bench:start -->\n${stamp}\n\n${table}\n<!-- bench:end -->`,
  )
  writeFileSync(path, doc)
}

main()
