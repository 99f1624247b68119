// Frame writer / reader throughput on the filter's hot path (run:
//   node --conditions=@xbzrle/source --import tsx bench/filter-path.bench.ts).
//
// A FrameWriter is fed a realistic frame mix (60 % PAGE_FULL 4 KiB pages of pseudo-random content, 30 % PAGE_DELTA
// of ~40 bytes with their 4 KiB newPage for the output CRC, 10 % PAGE_ZERO; 8-byte CONTINUE headers, derived form)
// and the chunks it hands out are read back by FrameReader: every frame is iterated and the batch output
// reassembled as the decoder does, then checked with verifyBatchOutput(crc32(output)). Speed = original bytes per
// CPU second (user + system), median of RUNS runs. Only the protocol package is measured (no XBZRLE codec).
import { FrameReader, FrameWriter, verifyBatchOutput } from '../src/index.js'
import { crc32 } from '../src/wire/crc32.js'

const RUNS = Number(process.env.BENCH_RUNS ?? 7)
const PAGE = 4096
const FRAMES = Number(process.env.BENCH_FRAMES ?? 16384) // ≈ 44 MiB of original bytes
const POOL = 512

const now = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

// Pseudo-random pages with some structure (runs of repeated words), so zstd finds something but not everything.
let seed = 0x9e3779b9
const rnd = () => {
  seed ^= seed << 13
  seed ^= seed >>> 17
  seed ^= seed << 5
  return seed >>> 0
}
const pool: Uint8Array[] = []
for (let i = 0; i < POOL; i++) {
  const p = new Uint8Array(PAGE)
  for (let j = 0; j < PAGE; j += 4) {
    const v = (rnd() & 7) === 0 ? rnd() : (j >> 6) * 0x01010101
    p[j] = v
    p[j + 1] = v >>> 8
    p[j + 2] = v >>> 16
    p[j + 3] = v >>> 24
  }
  pool.push(p)
}
const deltas: Uint8Array[] = []
for (let i = 0; i < 64; i++) {
  const d = new Uint8Array(36 + (i % 9))
  for (let j = 0; j < d.length; j++) d[j] = rnd()
  deltas.push(d)
}

type Kind = 0 | 1 | 2 // full, delta, zero
const kinds: Kind[] = []
for (let i = 0; i < FRAMES; i++) {
  const r = rnd() % 10
  kinds.push(r < 6 ? 0 : r < 9 ? 1 : 2)
}
const FLAGS = [0x28, 0x60, 0x22] // CONTINUE|PAGE, CONTINUE|XBZRLE, CONTINUE|ZERO
const hdrs = kinds.map((k, i) => {
  const h = new Uint8Array(8)
  const off = i * PAGE + FLAGS[k]!
  new DataView(h.buffer).setUint32(0, Math.floor(off / 2 ** 32))
  new DataView(h.buffer).setUint32(4, off >>> 0)
  return h
})
const pageOf = (i: number) => pool[i % POOL]!
let originalBytes = 0
for (const k of kinds) originalBytes += 8 + (k === 2 ? 1 : PAGE)

type Config = { name: string; version: 1 | 2 | 3; codec?: 'none' | 'zstd' }
const configs: Config[] = [
  { name: 'v1', version: 1 },
  { name: 'v2 none', version: 2, codec: 'none' },
  { name: 'v2 zstd 1', version: 2, codec: 'zstd' },
  { name: 'v3 zstd 1', version: 3, codec: 'zstd' },
]

function write(cfg: Config): Uint8Array[] {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({
    version: cfg.version,
    onChunk: (c) => chunks.push(c),
    streamId: cfg.version === 3 ? new Uint8Array(16) : undefined,
  })
  w.header({
    pageSize: PAGE,
    cache: { cacheBytes: 64 * 1024 * 1024, ways: 1, policy: 'lru' },
    mode: 'canonical',
    source: 'qemu',
    ...(cfg.codec ? { compression: { codec: cfg.codec } } : {}),
  })
  for (let i = 0; i < FRAMES; i++) {
    const k = kinds[i]!
    if (k === 0) w.pageFull(0, i, hdrs[i]!, pageOf(i))
    else if (k === 1) w.pageDelta(0, i, hdrs[i]!, deltas[i & 63]!, pageOf(i))
    else w.pageZero(0, i, hdrs[i]!, 0)
  }
  w.end()
  return chunks
}

let sink = 0
function read(chunks: Uint8Array[]): void {
  const r = new FrameReader()
  let out = new Uint8Array(0)
  for (const c of chunks) {
    r.push(c)
    for (let item = r.next(); item !== undefined; item = r.next()) {
      if (item.type !== 'batch') continue
      const b = item.batch
      if (out.length < b.outputLength) out = new Uint8Array(b.outputLength)
      let n = 0
      for (const f of b.frames()) {
        switch (f.kind) {
          case 'full':
            out.set(f.hdr, n)
            out.set(f.page, n + f.hdr.length)
            n += f.hdr.length + f.page.length
            break
          case 'delta':
            out.set(f.hdr, n)
            out.set(pageOf(f.pageIndex), n + f.hdr.length) // stands in for applying the delta
            n += f.hdr.length + PAGE
            break
          case 'zero':
            out.set(f.hdr, n)
            out[n + f.hdr.length] = f.fill
            n += f.hdr.length + 1
            break
          default:
            throw new Error(`unexpected ${f.kind}`)
        }
      }
      verifyBatchOutput(b, crc32(out.subarray(0, n)), n)
      sink += n
    }
  }
  r.finish()
}

const mb = (ms: number) => (originalBytes / 1e6 / (ms / 1000)).toFixed(0)
console.log(
  `filter-path bench: ${FRAMES} frames, ${originalBytes} original bytes, Node ${process.version}, ${RUNS} runs (CPU time, median)`,
)
console.log('| format | wire bytes | wire CRC-32 | write MB/s | read MB/s |')
console.log('| ------ | ---------: | ----------- | ---------: | --------: |')
const only = process.env.BENCH_ONLY
for (const cfg of configs.filter((c) => only === undefined || c.name === only)) {
  const wt: number[] = []
  const rt: number[] = []
  // Writing and reading are timed in separate loops, so that neither pays for the other's garbage.
  let chunks: Uint8Array[] = []
  for (let run = 0; run < RUNS + 1; run++) {
    chunks = []
    const t0 = now()
    chunks = write(cfg)
    if (run > 0) wt.push(now() - t0) // run 0: warm-up
  }
  for (let run = 0; run < RUNS + 1; run++) {
    const t0 = now()
    read(chunks)
    if (run > 0) rt.push(now() - t0)
  }
  const wire = chunks.reduce((s, c) => s + c.length, 0)
  const wireCrc = chunks
    .reduce((crc, c) => crc32(c, crc), 0)
    .toString(16)
    .padStart(8, '0')
  console.log(`| ${cfg.name} | ${wire} | ${wireCrc} | ${mb(median(wt))} | ${mb(median(rt))} |`)
}
if (sink === 0) console.log('')
