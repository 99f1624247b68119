/**
 * End-to-end codec benchmark on a synthetic migration-shaped page stream: `npm run bench:stream` (prints a
 * markdown table; the numbers in BENCHMARKS.md "Migration stream" were pasted from it).
 *
 * Stream: a guest of GUEST_PAGES pages (default 16384 = 64 MiB). First pass sends every page in address order:
 * ~30% (ZERO_PCT) are ZERO records (fill 0), the rest PAGE records with random contents. Then PASSES dirty passes each
 * re-send a random ~25% of the pages (address order) with 4 random 8-byte words changed (a page that was zero
 * becomes a PAGE record, a delta against the zero slot). Cache: 64 MiB, 8 ways, canonical mode (what the filter
 * picks for a 64 MiB guest).
 *
 * Throughput is MB/s (10^6 bytes) of the WHOLE stream's QEMU bytes (PAGE record = 8-byte header + 4096,
 * ZERO = 8 + 1) per CPU second of the timed codec calls (also for the partial rows, so that they compose with the
 * reader's own cost: 1/total = 1/reader + 1/codec) (process.cpuUsage user+system), median of TRIALS; every trial builds a fresh encoder/decoder, so
 * first-touch page faults of the cache memory are included, as in a real migration. Only codec calls are
 * timed: page views are created beforehand (the stream reader's work), frames for the decoder are recorded from
 * an untimed encoder run.
 */
import { PageDeltaDecoder, PageDeltaEncoder } from '../src/page-delta.js'

const PAGE = 4096
const GUEST_PAGES = Number(process.env.GUEST_PAGES ?? 16384)
const PASSES = Number(process.env.PASSES ?? 6)
const ZERO_PCT = Number(process.env.ZERO_PCT ?? 30)
const TRIALS = Number(process.env.BENCH_TRIALS ?? 11)
const CACHE = { pageSize: PAGE, cacheBytes: 64 << 20, ways: 8 }
const PAGE_REC = 8 + PAGE
const ZERO_REC = 8 + 1

let seed = 0x9e3779b9
function rnd(): number {
  seed ^= seed << 13
  seed ^= seed >>> 17
  seed ^= seed << 5
  return seed >>> 0
}

// ---- build the stream --------------------------------------------------------------------------------------
const K_PAGE = 0
const K_ZERO = 1
const kinds: number[] = []
const index: number[] = []
const bodies: Uint8Array[] = []
const ram = new Uint8Array(GUEST_PAGES * PAGE)
const ram32 = new Uint32Array(ram.buffer)
const isZero = new Uint8Array(GUEST_PAGES)
let snapshots: Uint8Array[] = []
function snapshot(p: number): Uint8Array {
  const s = ram.slice(p * PAGE, (p + 1) * PAGE)
  snapshots.push(s)
  return s
}
for (let p = 0; p < GUEST_PAGES; p++) {
  if (rnd() % 100 < ZERO_PCT) {
    isZero[p] = 1
    kinds.push(K_ZERO)
    index.push(p)
    bodies.push(new Uint8Array(0))
  } else {
    for (let w = (p * PAGE) / 4, e = w + PAGE / 4; w < e; w++) ram32[w] = rnd()
    kinds.push(K_PAGE)
    index.push(p)
    bodies.push(snapshot(p))
  }
}
for (let pass = 0; pass < PASSES; pass++) {
  for (let p = 0; p < GUEST_PAGES; p++) {
    if (rnd() % 100 >= 25) continue
    for (let w = 0; w < 4; w++) {
      const at = p * PAGE + (rnd() % (PAGE / 8)) * 8
      for (let b = 0; b < 8; b++) ram[at + b] = ram[at + b]! ^ ((rnd() % 255) + 1)
    }
    isZero[p] = 0
    kinds.push(K_PAGE)
    index.push(p)
    bodies.push(snapshot(p))
  }
}
const N = kinds.length
let pageRecs = 0
let zeroRecs = 0
for (const k of kinds) k === K_PAGE ? pageRecs++ : zeroRecs++
const streamBytes = pageRecs * PAGE_REC + zeroRecs * ZERO_REC
snapshots = []

// ---- record the frames the decoder will see ---------------------------------------------------------------
const F_FULL = 0
const F_DELTA = 1
const F_SAME = 2
let sink = 0
const frameKind = new Uint8Array(N)
const deltas: Uint8Array[] = new Array(N)
{
  const enc = new PageDeltaEncoder({ cache: CACHE, kernel: 'wasm' })
  for (let i = 0; i < N; i++) {
    if (kinds[i] === K_ZERO) {
      enc.applyZero(0, index[i]!, 0)
      continue
    }
    const r = enc.encodePage(0, index[i]!, bodies[i]!)
    frameKind[i] = r.kind === 'full' ? F_FULL : r.kind === 'delta' ? F_DELTA : F_SAME
    if (r.kind === 'delta') deltas[i] = r.delta.slice()
  }
  const dec = new PageDeltaDecoder({ cache: CACHE, kernel: 'wasm' })
  runDecoder(dec)
  if (!enc.cache.sameContents(dec.cache)) throw new Error('bench: encoder and decoder caches differ')
  const s = enc.stats
  console.log(
    `stream: ${N} records (${pageRecs} PAGE, ${zeroRecs} ZERO), ${(streamBytes / 1e6).toFixed(1)} MB; ` +
      `frames full ${s.pages.full} delta ${s.pages.delta} same ${s.pages.same}; hits ${s.hits} misses ${s.misses} ` +
      `refused ${s.refused} evictions ${s.evictions}`,
  )
}

function runEncoder(enc: PageDeltaEncoder, which: 'all' | 'page' | 'zero'): void {
  for (let i = 0; i < N; i++) {
    if (kinds[i] === K_ZERO) {
      if (which !== 'page') enc.applyZero(0, index[i]!, 0)
    } else if (which !== 'zero') {
      sink += enc.encodePage(0, index[i]!, bodies[i]!).delta.length
    }
  }
}
function runDecoder(dec: PageDeltaDecoder, which: 'all' | 'zero' = 'all'): void {
  for (let i = 0; i < N; i++) {
    const p = index[i]!
    if (kinds[i] === K_ZERO) {
      dec.applyZero(0, p, 0)
      continue
    }
    if (which === 'zero') continue
    const f = frameKind[i]!
    if (f === F_FULL) dec.full(0, p, bodies[i]!)
    else if (f === F_DELTA) sink += dec.delta(0, p, deltas[i]!)[0]!
    else sink += dec.same(0, p)[0]!
  }
}

function cpu(): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}
const gc = (globalThis as { gc?: () => void }).gc

type Case = { name: string; records: number; run: () => void }
let encFresh: PageDeltaEncoder | null = null
let decFresh: PageDeltaDecoder | null = null
const cases: Case[] = [
  {
    name: 'construct PageDeltaEncoder + PageDeltaDecoder (64 MiB caches, once per stream)',
    records: N,
    run: () => {
      encFresh = new PageDeltaEncoder({ cache: CACHE, kernel: 'wasm' })
      decFresh = new PageDeltaDecoder({ cache: CACHE, kernel: 'wasm' })
    },
  },
  {
    name: 'encoder: encodePage + applyZero (whole stream)',
    records: N,
    run: () => runEncoder(encFresh!, 'all'),
  },
  {
    name: 'encoder: encodePage only (PAGE records)',
    records: pageRecs,
    run: () => runEncoder(encFresh!, 'page'),
  },
  {
    name: 'applyZero only (ZERO records)',
    records: zeroRecs,
    run: () => runEncoder(encFresh!, 'zero'),
  },
  {
    name: 'decoder: full/delta/same + applyZero (whole stream)',
    records: N,
    run: () => runDecoder(decFresh!),
  },
]

const times: number[][] = cases.map(() => [])
for (let t = 0; t < TRIALS; t++) {
  for (let c = 0; c < cases.length; c++) {
    encFresh = null
    decFresh = null
    gc?.()
    // Construction is timed once, in its own row; the other rows get fresh (untouched) caches built untimed.
    if (c > 0) {
      encFresh = new PageDeltaEncoder({ cache: CACHE, kernel: 'wasm' })
      decFresh = new PageDeltaDecoder({ cache: CACHE, kernel: 'wasm' })
    }
    const t0 = cpu()
    cases[c]!.run()
    times[c]!.push(cpu() - t0)
  }
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!

console.log(`\nNode ${process.version}, ${TRIALS} trials, median CPU time\n`)
console.log(
  '| codec path | records | CPU ms (median) | ns/record | MB/s of the whole stream (median) | MB/s (best) |',
)
console.log('| --- | ---: | ---: | ---: | ---: | ---: |')
cases.forEach((c, i) => {
  const s = median(times[i]!)
  const best = Math.min(...times[i]!)
  console.log(
    `| ${c.name} | ${c.records} | ${(s * 1e3).toFixed(1)} | ${((s * 1e9) / c.records).toFixed(0)} | ${(streamBytes / 1e6 / s).toFixed(0)} | ${(streamBytes / 1e6 / best).toFixed(0)} |`,
  )
})
if (sink === 0.5) console.log(sink)
