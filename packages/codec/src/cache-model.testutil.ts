/**
 * Test/bench helpers for the cache hit-rate comparison: a recorded page-access trace with re-dirtied pages and a
 * model of QEMU's direct-mapped page cache (migration/page_cache.c) including its age rule.
 */
import { PageCache } from './page-cache.js'

export interface TraceRound {
  /** Pages sent this dirty-sync generation, in RAM address order like QEMU's bitmap scan: [blockId, pageIndex]. */
  pages: [number, number][]
}

export interface Trace {
  blocks: number[] // pages per block, laid out contiguously in ram_addr space in this order
  rounds: TraceRound[]
}

function xorshift(seed: number): () => number {
  let x = seed | 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 2 ** 32
  }
}

/**
 * A guest with two RAM blocks; each generation re-dirties most of a scattered hot set, a sequential sweep
 * window that advances through RAM (a big memcpy / page-cache fill), and uniformly random pages.
 */
export function makeTrace(opts: {
  blocks?: number[]
  rounds?: number
  hot?: number
  sweep?: number
  random?: number
  seed?: number
}): Trace {
  const blocks = opts.blocks ?? [12288, 4096]
  const rounds = opts.rounds ?? 40
  const rnd = xorshift(opts.seed ?? 7)
  const total = blocks.reduce((a, b) => a + b, 0)
  const toKey = (g: number): [number, number] => {
    let b = 0
    while (g >= blocks[b]!) g -= blocks[b++]!
    return [b, g]
  }
  const hot = new Set<number>()
  while (hot.size < (opts.hot ?? 1500)) hot.add(Math.floor(rnd() * total))
  const hotList = [...hot]
  const out: TraceRound[] = []
  let sweepAt = 0
  for (let r = 0; r < rounds; r++) {
    const dirty = new Set<number>()
    for (const h of hotList) if (rnd() < 0.9) dirty.add(h)
    for (let i = 0; i < (opts.sweep ?? 1024); i++) dirty.add((sweepAt + i) % total)
    sweepAt = (sweepAt + (opts.sweep ?? 1024)) % total
    for (let i = 0; i < (opts.random ?? 500); i++) dirty.add(Math.floor(rnd() * total))
    out.push({ pages: [...dirty].sort((a, b) => a - b).map(toKey) })
  }
  return { blocks, rounds: out }
}

/** QEMU's direct-mapped cache: slot = ram page number & (num-1); replacement refused while it_age + 2 > age. */
export function directMappedHitRate(
  trace: Trace,
  slots: number,
): { hits: number; misses: number; rate: number } {
  const addr = new Float64Array(slots).fill(-1)
  const age = new Float64Array(slots)
  const blockBase: number[] = []
  let base = 0
  for (const n of trace.blocks) {
    blockBase.push(base)
    base += n
  }
  let hits = 0
  let misses = 0
  trace.rounds.forEach((round, gen) => {
    for (const [b, p] of round.pages) {
      const a = blockBase[b]! + p
      const pos = a & (slots - 1)
      if (addr[pos] === a) {
        hits++
        age[pos] = gen // cache_is_cached updates the age on a hit
        continue
      }
      misses++
      // cache_insert refuses to replace another page touched in this or the previous generation
      if (addr[pos] !== -1 && age[pos]! + 2 > gen) continue
      addr[pos] = a
      age[pos] = gen
    }
  })
  return { hits, misses, rate: hits / (hits + misses) }
}

/** Our cache on the same trace and memory (lookup, insert on miss). */
export function setAssociativeHitRate(
  trace: Trace,
  cacheBytes: number,
  ways = 8,
  pageSize = 4096,
): { hits: number; misses: number; rate: number } {
  const c = new PageCache({ pageSize, cacheBytes, ways })
  for (const round of trace.rounds) {
    for (const [b, p] of round.pages) if (c.lookup(b, p) < 0) c.insert(b, p)
  }
  const { hits, misses } = c.stats
  return { hits, misses, rate: hits / (hits + misses) }
}
