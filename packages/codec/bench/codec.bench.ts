/**
 * Codec benchmark: `npm run bench` (writes BENCHMARKS.md). CPU time (process.cpuUsage) medians over interleaved
 * trials, on a ~16 MiB working set (2048 old/new page pairs) that lives in one WebAssembly.Memory, as the page
 * cache's pages do. GB/s = bytes of new pages per CPU second.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { directMappedHitRate, makeTrace, setAssociativeHitRate } from '../src/cache-model.testutil.js'
import { decodeTs, encodeTs } from '../src/kernel-ts.js'
import type { EncodeMode } from '../src/kernel-types.js'
import { WasmBinding } from '../src/kernel-wasm.js'
import { PageDeltaEncoder } from '../src/page-delta.js'

const PAGE = 4096
const PAIRS = 2048
const TRIALS = Number(process.env.BENCH_TRIALS ?? 7)
const BYTES_PER_RUN = 128 << 20

// Layout: [old pages][new pages][decode targets][deltas (PAGE each)][scratch dst]
const OLD = 0
const NEW = OLD + PAIRS * PAGE
const TGT = NEW + PAIRS * PAGE
const DEL = TGT + PAIRS * PAGE
const DST = DEL + PAIRS * PAGE
const TOTAL = DST + 2 * PAGE
const memory = new WebAssembly.Memory({
  initial: Math.ceil(TOTAL / 65536),
  maximum: Math.ceil(TOTAL / 65536),
})
const mem = new Uint8Array(memory.buffer)
const wasm = new WasmBinding(memory)

let seed = 0x2545f491
function rnd(): number {
  seed ^= seed << 13
  seed ^= seed >>> 17
  seed ^= seed << 5
  return seed >>> 0
}

type Pattern = 'unchanged' | 'sparse' | 'clustered' | 'scattered' | 'random'
const PATTERNS: Pattern[] = ['unchanged', 'sparse', 'clustered', 'scattered', 'random']

function fillPattern(p: Pattern): void {
  for (let i = 0; i < PAIRS * PAGE; i++) mem[OLD + i] = rnd() & 0xff
  mem.copyWithin(NEW, OLD, OLD + PAIRS * PAGE)
  for (let k = 0; k < PAIRS; k++) {
    const base = NEW + k * PAGE
    const flip = (i: number) => {
      mem[base + i] = mem[base + i]! ^ ((rnd() % 255) + 1)
    }
    if (p === 'sparse') {
      for (let w = 0; w < 4; w++) {
        const at = (rnd() % (PAGE / 8)) * 8
        for (let b = 0; b < 8; b++) flip(at + b)
      }
    } else if (p === 'clustered') {
      // ~1% (41 bytes) in 3–5 runs
      const runs = 3 + (rnd() % 3)
      let left = 41
      for (let r = 0; r < runs; r++) {
        const len = r === runs - 1 ? left : Math.max(1, Math.floor(left / (runs - r)))
        left -= len
        const at = rnd() % (PAGE - len)
        for (let b = 0; b < len; b++) flip(at + b)
      }
    } else if (p === 'scattered') {
      for (let b = 0; b < 41; b++) flip(rnd() % PAGE)
    } else if (p === 'random') {
      for (let b = 0; b < PAGE; b++) flip(b)
    }
  }
}

const views = {
  old: Array.from({ length: PAIRS }, (_, k) => mem.subarray(OLD + k * PAGE, OLD + (k + 1) * PAGE)),
  cur: Array.from({ length: PAIRS }, (_, k) => mem.subarray(NEW + k * PAGE, NEW + (k + 1) * PAGE)),
  tgt: Array.from({ length: PAIRS }, (_, k) => mem.subarray(TGT + k * PAGE, TGT + (k + 1) * PAGE)),
  bufOld: Array.from({ length: PAIRS }, (_, k) => Buffer.from(memory.buffer, OLD + k * PAGE, PAGE)),
  bufCur: Array.from({ length: PAIRS }, (_, k) => Buffer.from(memory.buffer, NEW + k * PAGE, PAGE)),
}
const dstView = mem.subarray(DST, DST + PAGE)
const deltaLen = new Int32Array(PAIRS)
const deltaViews: Uint8Array[] = new Array(PAIRS)
let sink = 0

type Impl = { name: string; run: () => void }

function encWasm(mode: EncodeMode): () => void {
  return () => {
    for (let k = 0; k < PAIRS; k++)
      sink += wasm.encodeAt(OLD + k * PAGE, NEW + k * PAGE, PAGE, DST, PAGE, mode)
  }
}
function encTs(mode: EncodeMode): () => void {
  return () => {
    for (let k = 0; k < PAIRS; k++) sink += encodeTs(views.old[k]!, views.cur[k]!, dstView, mode)
  }
}
const decWasm = () => {
  for (let k = 0; k < PAIRS; k++) {
    const n = deltaLen[k]!
    if (n > 0) sink += wasm.decodeAt(DEL + k * PAGE, n, TGT + k * PAGE, PAGE)
  }
}
const decTs = () => {
  for (let k = 0; k < PAIRS; k++) if (deltaLen[k]! > 0) sink += decodeTs(deltaViews[k]!, views.tgt[k]!)
}
const bufEquals = () => {
  for (let k = 0; k < PAIRS; k++) if (views.bufOld[k]!.equals(views.bufCur[k]!)) sink++
}
// End to end: PageDeltaEncoder with a cache pre-filled with the old pages, pages copied in from outside memory.
let pde: PageDeltaEncoder | null = null
const outside = new Uint8Array(PAIRS * PAGE)
const pdeRun = () => {
  const e = pde!
  for (let k = 0; k < PAIRS; k++) {
    const r = e.encodePage(0, k, outside.subarray(k * PAGE, (k + 1) * PAGE))
    sink += r.delta.length
  }
}
function preparePde(): void {
  pde = new PageDeltaEncoder({ cache: { cacheBytes: 8 * PAIRS * PAGE, ways: 8 }, kernel: 'wasm' })
  // Prime: send old pages (miss → stored), then each trial re-sends the same new pages (old→new deltas after
  // the first trial would become 'same'; so we alternate by restoring the old page through the cache).
  for (let k = 0; k < PAIRS; k++) pde.encodePage(0, k, views.old[k]!)
  outside.set(mem.subarray(NEW, NEW + PAIRS * PAGE))
}
// Restores cached pages to the old version (not timed) so every timed run encodes old→new.
function restorePde(): void {
  const c = pde!.cache
  for (let k = 0; k < PAIRS; k++) {
    let slot = c.find(0, k)
    if (slot < 0) slot = c.insert(0, k) // not expected: the cache has 8x the working set
    c.pageView(slot).set(views.old[k]!)
  }
}

const IMPLS: Impl[] = [
  { name: 'Buffer.equals (ceiling)', run: bufEquals },
  { name: 'wasm encode canonical', run: encWasm('canonical') },
  { name: 'wasm encode compact', run: encWasm('compact') },
  { name: 'TS encode canonical', run: encTs('canonical') },
  { name: 'TS encode compact', run: encTs('compact') },
  { name: 'wasm decode', run: decWasm },
  { name: 'TS decode', run: decTs },
  { name: 'PageDeltaEncoder (wasm, +copy in)', run: pdeRun },
]

function cpuSeconds(fn: () => void, reps: number, before?: () => void): number {
  let total = 0
  for (let r = 0; r < reps; r++) {
    before?.()
    const t0 = process.cpuUsage()
    fn()
    const t = process.cpuUsage(t0)
    total += (t.user + t.system) / 1e6
  }
  return total
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

interface PatternResult {
  gbps: Record<string, number>
  canonical: { bytes: number; overflow: number }
  compact: { bytes: number; overflow: number }
}

const results: Record<string, PatternResult> = {}
for (const p of PATTERNS) {
  fillPattern(p)
  // Sizes, and the canonical deltas for the decoders.
  const size = { canonical: { bytes: 0, overflow: 0 }, compact: { bytes: 0, overflow: 0 } }
  for (const mode of ['canonical', 'compact'] as const) {
    for (let k = 0; k < PAIRS; k++) {
      const n = wasm.encodeAt(OLD + k * PAGE, NEW + k * PAGE, PAGE, DEL + k * PAGE, PAGE, mode)
      const ts = encodeTs(views.old[k]!, views.cur[k]!, dstView, mode)
      if (ts !== n) throw new Error(`kernels disagree on ${p}/${mode} page ${k}`)
      if (n < 0) size[mode].overflow++
      else size[mode].bytes += n
      if (mode === 'canonical') {
        deltaLen[k] = n
        deltaViews[k] = mem.subarray(DEL + k * PAGE, DEL + k * PAGE + Math.max(n, 0))
      }
    }
  }
  // Deltas for decode are the canonical ones (last loop wrote compact into DEL; rewrite canonical).
  for (let k = 0; k < PAIRS; k++)
    wasm.encodeAt(OLD + k * PAGE, NEW + k * PAGE, PAGE, DEL + k * PAGE, PAGE, 'canonical')
  mem.copyWithin(TGT, OLD, OLD + PAIRS * PAGE)
  preparePde()
  const reps = Math.max(1, Math.round(BYTES_PER_RUN / (PAIRS * PAGE)))
  const samples: Record<string, number[]> = {}
  for (const impl of IMPLS) samples[impl.name] = []
  // Warm-up, then interleaved trials.
  for (const impl of IMPLS) cpuSeconds(impl.run, 2, impl.run === pdeRun ? restorePde : undefined)
  for (let t = 0; t < TRIALS; t++) {
    for (const impl of IMPLS) {
      const secs = cpuSeconds(impl.run, reps, impl.run === pdeRun ? restorePde : undefined)
      samples[impl.name]!.push((reps * PAIRS * PAGE) / secs / 1e9)
    }
  }
  const gbps: Record<string, number> = {}
  for (const impl of IMPLS) gbps[impl.name] = median(samples[impl.name]!)
  results[p] = { gbps, ...size }
  console.log(
    p,
    Object.entries(gbps)
      .map(([k, v]) => `${k}=${v.toFixed(2)}`)
      .join('  '),
  )
}

// Hit rates: our cache vs QEMU's direct-mapped cache with its age rule, same memory.
const trace = makeTrace({})
const sends = trace.rounds.reduce((a, r) => a + r.pages.length, 0)
const hitRows: string[] = []
for (const mib of [4, 8, 16, 32]) {
  const bytes = mib << 20
  const dm = directMappedHitRate(trace, bytes / PAGE)
  const s8 = setAssociativeHitRate(trace, bytes, 8)
  const s16 = setAssociativeHitRate(trace, bytes, 16)
  hitRows.push(
    `| ${mib} MiB (${bytes / PAGE} pages) | ${(dm.rate * 100).toFixed(1)}% | ${(s8.rate * 100).toFixed(1)}% | ${(s16.rate * 100).toFixed(1)}% |`,
  )
}
console.log(hitRows.join('\n'))

const f = (x: number | undefined) => (x === undefined ? 'n/a' : x.toFixed(2))
const header = `| implementation | ${PATTERNS.join(' | ')} |\n|---|${PATTERNS.map(() => '---:').join('|')}|`
const rows = IMPLS.map((impl) => {
  const cells = PATTERNS.map((p) => {
    // No deltas to decode for the random pattern (every page overflows).
    if (impl.name.includes('decode') && p === 'random') return 'n/a'
    if (impl.name.includes('decode') && p === 'unchanged') return 'n/a'
    return f(results[p]!.gbps[impl.name])
  })
  return `| ${impl.name} | ${cells.join(' | ')} |`
})
const sizeRows = PATTERNS.map((p) => {
  const r = results[p]!
  const okC = PAIRS - r.canonical.overflow
  const okK = PAIRS - r.compact.overflow
  const mc = okC ? r.canonical.bytes / okC : 0
  const mk = okK ? r.compact.bytes / okK : 0
  const saved = r.canonical.bytes ? ((1 - r.compact.bytes / r.canonical.bytes) * 100).toFixed(1) + '%' : 'n/a'
  return `| ${p} | ${mc.toFixed(1)} | ${r.canonical.overflow} | ${mk.toFixed(1)} | ${r.compact.overflow} | ${saved} |`
})

const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
const g = (p: Pattern, n: string) => results[p]!.gbps[n]!
const target = (ok: boolean) => (ok ? 'met' : '**missed**')
const sparseW = g('sparse', 'wasm encode canonical')
const unchW = g('unchanged', 'wasm encode canonical')
const unchEq = g('unchanged', 'Buffer.equals (ceiling)')
const decW = Math.min(
  g('sparse', 'wasm decode'),
  g('clustered', 'wasm decode'),
  g('scattered', 'wasm decode'),
)
const sparseT = g('sparse', 'TS encode canonical')

const missed: string[] = []
if (sparseW < 4) missed.push(`wasm encode sparse ${f(sparseW)} < 4 GB/s`)
if (unchW < 8)
  missed.push(`wasm encode unchanged ${f(unchW)} < 8 GB/s (Buffer.equals ${f(unchEq)} on the same pages)`)
if (unchW * 2 < unchEq) missed.push('wasm encode unchanged not within 2x of Buffer.equals')
if (decW < 3) missed.push(`decode ${f(decW)} < 3 GB/s on the worst pattern`)
if (sparseT < 1.2) missed.push(`TS encode sparse ${f(sparseT)} < 1.2 GB/s`)

const md = `# @xbzrle/codec benchmarks

Generated by \`npm run bench\` (bench/codec.bench.ts) on ${new Date().toISOString().slice(0, 10)}.

- Machine: ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.platform()} ${os.release()}
- Node ${process.version}, V8 ${process.versions.v8}
- Method: ${PAIRS} page pairs of ${PAGE} B (old + new = ${(2 * PAIRS * PAGE) / 2 ** 20} MiB working set) inside one
  WebAssembly.Memory; each measurement processes ${BYTES_PER_RUN / 2 ** 20} MiB of new pages; CPU time
  (process.cpuUsage user+system), median of ${TRIALS} trials, implementations interleaved within each trial.
  GB/s = bytes of new (input) pages per CPU second. Decoders apply the canonical delta of each pair onto a copy
  of the old page (validate pass + apply pass). The last row is the full PageDeltaEncoder.encodePage path
  (cache lookup, copy of the page from a JS buffer into wasm memory, encode, frame swap).

## Throughput (GB/s of input pages)

${header}
${rows.join('\n')}

Patterns: unchanged; sparse = 4 random 8-byte words changed per page; clustered = 41 bytes (~1%) in 3–5 runs;
scattered = 41 single bytes; random = every byte differs (the encoder scans the page, then overflows).
Decode has nothing to do for unchanged (no delta) and random (no delta fits), hence n/a.

## Targets

| target | measured | |
|---|---:|---|
| wasm encode sparse ≥ 4 GB/s | ${f(sparseW)} | ${target(sparseW >= 4)} |
| wasm encode unchanged ≥ 8 GB/s and within 2x of Buffer.equals (${f(unchEq)}) | ${f(unchW)} | ${target(unchW >= 8 && unchW * 2 >= unchEq)} |
| decode ≥ 3 GB/s (worst of sparse/clustered/scattered, wasm) | ${f(decW)} | ${target(decW >= 3)} |
| TS encode sparse ≥ 1.2 GB/s | ${f(sparseT)} | ${target(sparseT >= 1.2)} |

Missed targets: ${missed.length === 0 ? 'none in this run.' : missed.join('; ') + '.'}

Notes:
- Buffer.equals is the memory-speed ceiling only for unchanged pages; on changed pages memcmp stops at the first
  difference, so its numbers there are not a ceiling. Unchanged-page encode is memory-bound (16 MiB working set on
  2 cores): expect ±15% between runs, and the 8 GB/s target sits right at this machine's measured memcmp speed.
- scattered (41 single-byte runs) costs one vector scan restart per run: ~1.5 GB/s wasm is run-bound, not
  memory-bound (no target was set for it).
- The PageDeltaEncoder row includes copying each page from a JS buffer into wasm memory and a cache spread over
  a 64 MiB memory; the toolchain notes measured that one copy halves SIMD throughput at this working-set size.
  This copy is the one the API allows (the page has to end up in the cache); it is not optimised further.

## Output size: canonical vs compact (dlen = ${PAGE})

| pattern | canonical mean bytes | canonical overflows | compact mean bytes | compact overflows | compact saves |
|---|---:|---:|---:|---:|---:|
${sizeRows.join('\n')}

Compact mode only gains where a changed region contains 1–2 bytes that happen to equal the old value (for a
random rewrite, about 1 byte in 256; for counters and structs, much more often). These bench patterns change
every byte of a changed run, so the fold almost never applies here: measured savings are the column above.

## Page-cache hit rate: set-associative lru-age-v1 vs QEMU direct-mapped (same memory)

Trace (src/cache-model.testutil.ts \`makeTrace\`): a 64 MiB guest in two RAM blocks (12288 + 4096 pages), 40
dirty-sync generations; each generation re-dirties 90% of a 1500-page scattered hot set, a 1024-page sequential
sweep window that advances through RAM, and 500 random pages, sent in RAM address order (${sends} page sends).
QEMU model: slot = ram page number & (slots-1), hit refreshes the age, a slot holding another page is not replaced
while it was used in the current or previous generation (CACHED_PAGE_LIFETIME 2).

| cache | QEMU direct-mapped | lru-age-v1 8-way | lru-age-v1 16-way |
|---|---:|---:|---:|
${hitRows.join('\n')}
`
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'BENCHMARKS.md')
// Sections written by hand from other benches (bench/stream.bench.ts) follow this marker and are kept.
const KEEP = '<!-- kept by codec.bench.ts: hand-written sections below -->'
const old = existsSync(out) ? readFileSync(out, 'utf8') : ''
const at = old.indexOf(KEEP)
writeFileSync(out, at >= 0 ? `${md.trimEnd()}\n\n${old.slice(at)}` : md)
console.log(`wrote ${out} (sink ${sink & 1})`)
