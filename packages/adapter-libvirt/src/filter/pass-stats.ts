/**
 * Per-pass statistics of a QEMU migration stream, shared by the encoder and the decoder.
 *
 * A QEMU precopy "pass" is the set of pages sent between two dirty-bitmap syncs (QEMU's `dirty-sync-count`).
 * The stream carries no marker for a sync, but between two syncs QEMU sends every page at most once (sending
 * clears its dirty bit; only a sync sets bits again). So the first page that repeats a (block, page) already
 * sent in the current pass proves that a sync happened: that page starts the next pass (so does a page the
 * search cursor could not reach without a sync, and the END section: QEMU syncs right before it).
 * `PassDetector` does this with one Uint32 stamp per guest page (the pass it was last sent in): a few array
 * reads and writes per page, no object per page.
 *
 * `PassRecorder` turns cumulative counters (plain numbers the filter keeps anyway) into per-pass figures by
 * taking a snapshot at each boundary, so the hot path pays nothing for the per-pass split.
 */
import { monotonicNs } from '@xbzrle/protocol/stream'

/** Cumulative counters of a filter, read at pass boundaries only. */
export interface PassCounters {
  /** Bytes consumed (encoder: QEMU bytes; decoder: xbzrle bytes). */
  bytesIn: number
  /** Bytes produced. */
  bytesOut: number
  full: number
  delta: number
  same: number
  zero: number
  foreign: number
  /** Page records not modelled (QEMU's compressed pages). */
  other: number
  /** Page records whose (block, page) had been sent in an earlier pass. */
  resent: number
  cacheHits: number
  cacheMisses: number
}

export interface PassPages {
  full: number
  delta: number
  same: number
  zero: number
  foreign: number
  other: number
  total: number
}

/** One pass of a migration stream. Figures are for this pass only, never cumulative. */
export interface PassStats {
  /** 1-based pass number. */
  pass: number
  /** Start of the pass, milliseconds since the filter started. */
  startMs: number
  /** Wall time of the pass in milliseconds (processing time for a file, the real pass time live). */
  wallMs: number
  bytesIn: number
  bytesOut: number
  /** bytesOut / bytesIn (0 for an empty pass). */
  ratio: number
  pages: PassPages
  /** Pages of this pass that had been sent in an earlier pass. */
  resentPages: number
  /** resentPages / pages.total (0 for a pass without pages). */
  resentShare: number
  cacheHits: number
  cacheMisses: number
  /** cacheHits / (cacheHits + cacheMisses); undefined when the cache was not asked. */
  hitRate: number | undefined
  /** True for the pass that ended with the stream. */
  final: boolean
}

export interface PassListener {
  /** A pass begins (pass 1 at the first byte). */
  passStart?(pass: number, startMs: number): void
  /** A pass ended; `stats` is also appended to `PassRecorder.passes`. */
  passEnd?(stats: PassStats): void
}

export function zeroCounters(): PassCounters {
  return {
    bytesIn: 0,
    bytesOut: 0,
    full: 0,
    delta: 0,
    same: 0,
    zero: 0,
    foreign: 0,
    other: 0,
    resent: 0,
    cacheHits: 0,
    cacheMisses: 0,
  }
}

/**
 * Finds pass boundaries in a stream of page records. Call `isRepeat` then `mark` for every page record, in
 * stream order; when `isRepeat` is true, close the pass (PassRecorder.cut) and call `next()` before `mark`.
 *
 * Two proofs that QEMU synced its dirty bitmap before a page (each alone never fires inside one sync interval):
 *  - the page was already sent in the current pass (sending clears the dirty bit, only a sync sets it again);
 *  - `ordered` (precopy): QEMU's search cursor only moves forward through the RAM blocks in block-list order and
 *    wraps around at most once per interval, after which it stays below where the interval began. A second
 *    wrap, or a page at or past the interval's first position after the wrap, needs a sync. Postcopy's
 *    requested pages jump around: turn `ordered` off there.
 */
export class PassDetector {
  /** The current pass, 1-based. */
  pass = 1
  /** Cumulative page records sent in an earlier pass. */
  resent = 0
  /** Page records marked in the current pass (known blocks or not). */
  pagesInPass = 0
  /** Use the cursor-order proof (see above). */
  ordered = true
  /** One stamp per page of each block: the pass the page was last sent in (0: never). */
  private readonly stamps: (Uint32Array | undefined)[] = []
  /** Position of each block's first page in the search order (blocks in block-list order). */
  private readonly bases: number[] = []
  private nextBase = 0
  /** Stamps allocated in growing mode (bounded by `maxTrackedPages`). */
  private tracked = 0
  private first = -1
  private last = -1
  private wrapped = false

  /**
   * `growing`: the block sizes are not known (the decoder sees page keys, not QEMU's block list). Stamps grow
   * on demand and only the repeat proof is used (positions need the block sizes). `maxTrackedPages` bounds the
   * stamps a growing detector allocates (4 bytes each) whatever keys the stream holds: a page beyond the budget
   * is counted but not tracked (it never proves a boundary), like a page of an unknown block.
   */
  constructor(
    private readonly growing = false,
    private readonly maxTrackedPages = Number.POSITIVE_INFINITY,
  ) {
    if (growing) this.ordered = false
  }

  /**
   * Declares a RAM block's size in pages (from the stream's block list), in block-list order. Unknown blocks
   * are not tracked.
   */
  setBlock(blockId: number, pages: number): void {
    if (this.stamps[blockId] !== undefined) return
    this.stamps[blockId] = new Uint32Array(pages)
    this.bases[blockId] = this.nextBase
    this.nextBase += pages
  }

  hasBlock(blockId: number): boolean {
    return this.stamps[blockId] !== undefined
  }

  /** True when this page cannot belong to the current pass: it begins the next one. */
  isRepeat(blockId: number, pageIndex: number): boolean {
    if (this.growing) this.grow(blockId, pageIndex)
    const s = this.stamps[blockId]
    if (s === undefined || pageIndex >= s.length) return false
    if (s[pageIndex] === this.pass) return true
    if (!this.ordered || this.first < 0) return false
    const g = this.bases[blockId]! + pageIndex
    if (this.wrapped) return g < this.last || g >= this.first
    return false
  }

  /** Records that the page is sent in the current pass. */
  mark(blockId: number, pageIndex: number): void {
    this.pagesInPass++
    const s = this.stamps[blockId]
    if (s === undefined || pageIndex >= s.length) return
    if (s[pageIndex] !== 0) this.resent++
    s[pageIndex] = this.pass
    const g = this.bases[blockId]! + pageIndex
    if (this.first < 0) this.first = g
    else if (g < this.last) this.wrapped = true
    this.last = g
  }

  private grow(blockId: number, pageIndex: number): void {
    const s = this.stamps[blockId]
    if (s !== undefined && pageIndex < s.length) return
    const old = s?.length ?? 0
    let n = 2 ** Math.ceil(Math.log2(Math.max(1024, pageIndex + 1)))
    // Within the budget: the power of two if it fits, else just enough for this page, else nothing.
    if (this.tracked - old + n > this.maxTrackedPages) n = pageIndex + 1
    if (this.tracked - old + n > this.maxTrackedPages) return
    const t = new Uint32Array(n)
    if (s) t.set(s)
    this.tracked += n - old
    this.stamps[blockId] = t
    this.bases[blockId] = 0
  }

  /** Opens the next pass. */
  next(): number {
    this.pagesInPass = 0
    this.first = -1
    this.last = -1
    this.wrapped = false
    return ++this.pass
  }
}

function passOf(pass: number, startMs: number, wallMs: number, a: PassCounters, b: PassCounters): PassStats {
  const full = b.full - a.full
  const delta = b.delta - a.delta
  const same = b.same - a.same
  const zero = b.zero - a.zero
  const foreign = b.foreign - a.foreign
  const other = b.other - a.other
  const total = full + delta + same + zero + foreign + other
  const bytesIn = b.bytesIn - a.bytesIn
  const bytesOut = b.bytesOut - a.bytesOut
  const resentPages = b.resent - a.resent
  const cacheHits = b.cacheHits - a.cacheHits
  const cacheMisses = b.cacheMisses - a.cacheMisses
  return {
    pass,
    startMs,
    wallMs,
    bytesIn,
    bytesOut,
    ratio: bytesIn > 0 ? bytesOut / bytesIn : 0,
    pages: { full, delta, same, zero, foreign, other, total },
    resentPages,
    resentShare: total > 0 ? resentPages / total : 0,
    cacheHits,
    cacheMisses,
    hitRate: cacheHits + cacheMisses > 0 ? cacheHits / (cacheHits + cacheMisses) : undefined,
    final: false,
  }
}

/**
 * A monotonic clock in ms. Not performance.now(): its first use loads perf_hooks (~2 ms), which `xbzrle -c` would
 * pay before its first output byte.
 */
function monotonicMs(): number {
  return monotonicNs() / 1e6
}

/** Turns snapshots of cumulative counters at pass boundaries into PassStats. */
export class PassRecorder {
  /** Every finished pass, in order. */
  readonly passes: PassStats[] = []
  private startCounters: PassCounters = zeroCounters()
  private passStartMs = 0
  private pass = 1
  private readonly t0: number
  private started = false
  private done = false

  constructor(
    private readonly listener: PassListener = {},
    private readonly now: () => number = monotonicMs,
  ) {
    this.t0 = now()
  }

  /** Milliseconds since the recorder was made. */
  elapsedMs(): number {
    return this.now() - this.t0
  }

  /** Opens pass 1 (idempotent; `cut` and `finish` call it). */
  start(): void {
    if (this.started) return
    this.started = true
    this.passStartMs = this.elapsedMs()
    this.listener.passStart?.(this.pass, this.passStartMs)
  }

  /** The pass in progress. */
  get currentPass(): number {
    return this.pass
  }

  /** Closes the current pass at counters `c` and opens the next one. */
  cut(c: PassCounters): PassStats {
    this.start()
    const now = this.elapsedMs()
    const p = passOf(this.pass, this.passStartMs, now - this.passStartMs, this.startCounters, c)
    this.passes.push(p)
    this.listener.passEnd?.(p)
    this.startCounters = { ...c }
    this.passStartMs = now
    this.pass++
    this.listener.passStart?.(this.pass, now)
    return p
  }

  /** The current pass so far (not recorded). */
  current(c: PassCounters): PassStats {
    const now = this.elapsedMs()
    return passOf(this.pass, this.passStartMs, now - this.passStartMs, this.startCounters, c)
  }

  /** Closes the last pass at the end of the stream (idempotent). */
  finish(c: PassCounters): PassStats | undefined {
    if (this.done) return this.passes[this.passes.length - 1]
    this.start()
    this.done = true
    const now = this.elapsedMs()
    const p = passOf(this.pass, this.passStartMs, now - this.passStartMs, this.startCounters, c)
    p.final = true
    this.passes.push(p)
    this.listener.passEnd?.(p)
    return p
  }
}

/** Sums passes (for a check against the totals, and for summaries). */
export function sumPasses(passes: readonly PassStats[]): PassCounters {
  const s = zeroCounters()
  for (const p of passes) {
    s.bytesIn += p.bytesIn
    s.bytesOut += p.bytesOut
    s.full += p.pages.full
    s.delta += p.pages.delta
    s.same += p.pages.same
    s.zero += p.pages.zero
    s.foreign += p.pages.foreign
    s.other += p.pages.other
    s.resent += p.resentPages
    s.cacheHits += p.cacheHits
    s.cacheMisses += p.cacheMisses
  }
  return s
}
