/**
 * Deterministic, set-associative cache of previous page versions, stored in ONE WebAssembly.Memory that is sized
 * once at construction and never grown (growing would detach every view and the kernel's pointers).
 *
 * Format promise (policy id 'lru-age-v1'): an encoder and a decoder built from equal {@link CacheParameters} and
 * fed the same operation sequence hold exactly the same (key -> bytes) contents. Everything below is part of it:
 *
 * - slots = the largest power of two with slots * pageSize <= cacheBytes; sets = slots / ways (ways: power of two).
 * - set(blockId, pageIndex) = fmix32((pageIndex ^ imul(blockId + 1, 0x9e3779b1)) >>> 0) & (sets - 1), where
 *   fmix32 is MurmurHash3's finaliser (x ^= x>>>16; x = imul(x, 0x85ebca6b); x ^= x>>>13;
 *   x = imul(x, 0xc2b2ae35); x ^= x>>>16). Mixing spreads strided and multi-block access over all sets.
 * - A logical clock `tick` counts lookup() calls. A lookup hit stamps the slot with tick; insert stamps it too.
 * - insert: the lowest-numbered empty way; if the set is full, the way with the oldest stamp (lowest way on a
 *   tie) is the victim, UNLESS it was stamped within the last 8 * slots ticks: then the insert is refused
 *   (returns -1, counted in `refused`) and the page is simply not cached.
 *   This is QEMU's own age rule (page_cache.c refuses to replace a page used in the current or previous
 *   dirty-sync generation) restated without generations, which a stream does not carry. It is what keeps
 *   re-dirtied pages cached while a sweep passes through; plain LRU/CLOCK lost to direct-mapped QEMU on the
 *   bench trace whenever the per-round dirty set exceeds the cache (see BENCHMARKS.md).
 * - invalidate empties the slot; reset empties every slot and sets tick to 0.
 *
 * Physical layout: [delta scratch][fill frame][frame 0]...[frame slots], one frame more than slots. The spare
 * frame receives an incoming page (staging). adoptSpare() lets a slot and the spare exchange frames instead of
 * copying; PageDeltaEncoder no longer uses it (it applies its own delta to the slot's frame in place, so the
 * staging frame stays one cache-hot frame instead of rotating through the slab; measured ~12% faster per dirty
 * page on a 64 MiB cache). None of this is part of the format.
 *
 * Lazy fill slots (not part of the format: only the logical (key -> bytes) contents are, and they are unchanged):
 * a slot can be marked "every byte = b" with {@link PageCache.setFill} instead of writing 4 KiB. Its frame is then
 * stale and is not touched (no memset, no first-touch page faults of the slab) until the slot is materialised:
 * {@link PageCache.pageView} / {@link PageCache.pageOffset} materialise on demand; `rawPageView` / `rawPageOffset`
 * do not (callers check {@link PageCache.fillOf} first). Comparing against a lazy slot uses the shared fill
 * frame ({@link PageCache.fillPageOffset}), which holds one fill byte at a time (rewritten when another byte is
 * asked for). A slot stops being lazy when its page is written (writePage, adoptSpare), materialised, evicted,
 * invalidated or reset. Replacement decisions are exactly those of an eager fill.
 */

/**
 * The replacement policies this codec implements: THE list (the CLI, the decoder's "unknown policy" check and the
 * protocol's `CliOptionsSchema` derive from it). A stream names its policy in the header; a reader refuses one
 * that is not here.
 */
export const CACHE_POLICIES = ['lru-age-v1'] as const
export type CachePolicy = (typeof CACHE_POLICIES)[number]
/** Defaults of {@link cacheParameters} (and so of every encoder that does not choose). */
export const DEFAULT_CACHE_POLICY: CachePolicy = 'lru-age-v1'
export const DEFAULT_WAYS = 8
export const DEFAULT_CACHE_PAGE_SIZE = 4096
/** Associativity: a power of two, 1..MAX_CACHE_WAYS. */
export const MAX_CACHE_WAYS = 128

const POLICY_SET: ReadonlySet<string> = new Set(CACHE_POLICIES)
/** Whether this codec implements `policy` (a name read from a stream header). */
export function isCachePolicy(policy: string): policy is CachePolicy {
  return POLICY_SET.has(policy)
}

/** Everything a stream header must carry for a decoder to build an identical cache. */
export type CacheParameters = { pageSize: number; cacheBytes: number; ways: number; policy: CachePolicy }

export interface PageCacheOptions {
  pageSize?: number
  cacheBytes: number
  ways?: number
  policy?: CachePolicy
}

/** Counters in the spirit of QEMU's `xbzrle-cache` statistics (query-migrate). */
export interface CacheStats {
  hits: number
  misses: number
  evictions: number
  /** Misses not cached because every way of the set was used too recently (the age rule). */
  refused: number
  /** Hits whose delta did not fit (sent as a full page). */
  overflows: number
  /** Sum of (pageSize - delta length) over delta pages, plus pageSize per unchanged page. */
  bytesSaved: number
  pages: { full: number; delta: number; same: number; zero: number; foreign: number; foreignInvalid: number }
}

export function emptyStats(): CacheStats {
  return {
    hits: 0,
    misses: 0,
    evictions: 0,
    refused: 0,
    overflows: 0,
    bytesSaved: 0,
    pages: { full: 0, delta: 0, same: 0, zero: 0, foreign: 0, foreignInvalid: 0 },
  }
}

const WASM_PAGE = 65536
const MAX_MEMORY = 2 ** 31 // keep offsets in i32 range for the kernel
const EMPTY = -1
const BLOCK_MUL = 2 ** 32
/** fills[slot] when the slot's frame holds its real bytes. */
const NOT_LAZY = -1

/** The fixed (blockId, pageIndex) → 32-bit hash of policy lru-age-v1. */
export function hashKey(blockId: number, pageIndex: number): number {
  let x = (pageIndex ^ Math.imul(blockId + 1, 0x9e3779b1)) >>> 0
  x ^= x >>> 16
  x = Math.imul(x, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return x >>> 0
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
}

/** Normalises options into the parameters that go on the wire (validating them). */
export function cacheParameters(o: PageCacheOptions | CacheParameters): CacheParameters {
  const pageSize = o.pageSize ?? DEFAULT_CACHE_PAGE_SIZE
  const ways = o.ways ?? DEFAULT_WAYS
  const policy = o.policy ?? DEFAULT_CACHE_POLICY
  if (!isCachePolicy(policy)) throw new RangeError(`page cache: unknown policy ${JSON.stringify(policy)}`)
  if (!Number.isInteger(pageSize) || pageSize < 8 || pageSize % 8 !== 0 || pageSize > 65536)
    throw new RangeError(`page cache: pageSize ${pageSize} must be a multiple of 8 in 8..65536`)
  if (!isPow2(ways) || ways > MAX_CACHE_WAYS)
    throw new RangeError(`page cache: ways ${ways} must be a power of two <= ${MAX_CACHE_WAYS}`)
  if (!Number.isSafeInteger(o.cacheBytes) || o.cacheBytes < pageSize * ways)
    throw new RangeError(`page cache: cacheBytes ${o.cacheBytes} must hold at least ways (${ways}) pages`)
  return { pageSize, cacheBytes: o.cacheBytes, ways, policy }
}

/**
 * Whether two parameter sets build the same cache (what a decoder must mirror: SPEC.md §5.2). `b` may come from a
 * stream header, whose policy is any name.
 */
export function sameCacheParameters(
  a: CacheParameters,
  b: Omit<CacheParameters, 'policy'> & { policy: string },
): boolean {
  return (
    a.pageSize === b.pageSize && a.cacheBytes === b.cacheBytes && a.ways === b.ways && a.policy === b.policy
  )
}

export class PageCache {
  readonly parameters: CacheParameters
  readonly pageSize: number
  readonly slots: number
  readonly sets: number
  readonly ways: number
  /** The single buffer holding every cached page and the scratch areas. Never grown. */
  readonly memory: WebAssembly.Memory
  /** View over the whole memory. */
  readonly bytes: Uint8Array
  /** Byte offset and capacity of the delta scratch (encoder output / decoder input). */
  readonly deltaOffset = 0
  readonly deltaCapacity: number
  readonly stats: CacheStats = emptyStats()

  private readonly setMask: number
  private readonly framesOffset: number
  /** blockId * 2^32 + pageIndex, or -1: one compare per way. */
  private readonly keys: Float64Array
  /** Logical time of each slot's last use; see the policy above. */
  private readonly stamps: Float64Array
  private tick = 0
  /** Set base of the last find()/lookup(), for insertMissing(). */
  private lastBase = 0
  /** Per slot: NOT_LAZY, or the byte every position of the (logical) page holds; the frame is then stale. */
  private readonly fills: Int16Array
  private readonly fillOffset: number
  /** Byte currently held by the fill frame (the memory starts zeroed). */
  private fillByte = 0
  private fillFrameView: Uint8Array | undefined
  /** Age rule window in lookups. */
  readonly protectTicks: number
  /** Physical frame of each slot; frame `spare` is the incoming-page scratch. */
  private readonly frameOf: Int32Array
  private spare: number
  private readonly views: (Uint8Array | undefined)[]

  constructor(options: PageCacheOptions | CacheParameters) {
    const p = cacheParameters(options)
    this.parameters = p
    this.pageSize = p.pageSize
    this.ways = p.ways
    let slots = 1
    while (slots * 2 * p.pageSize <= p.cacheBytes) slots *= 2
    this.slots = slots
    this.sets = slots / p.ways
    this.setMask = this.sets - 1
    // A valid QEMU-format delta can exceed the page (1-byte runs cost 3 bytes per 2); 2 pages covers any
    // delta our encoder writes and most foreign ones (larger ones are decoded without the scratch).
    this.deltaCapacity = 2 * p.pageSize
    this.fillOffset = this.deltaCapacity
    this.framesOffset = this.fillOffset + p.pageSize
    const total = this.framesOffset + (slots + 1) * p.pageSize
    if (total > MAX_MEMORY) throw new RangeError(`page cache: ${total} bytes exceeds the 2 GiB limit`)
    const pages = Math.ceil(total / WASM_PAGE)
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages })
    this.bytes = new Uint8Array(this.memory.buffer)
    this.keys = new Float64Array(slots).fill(EMPTY)
    this.stamps = new Float64Array(slots)
    this.fills = new Int16Array(slots).fill(NOT_LAZY)
    this.protectTicks = 8 * slots
    this.frameOf = new Int32Array(slots)
    for (let s = 0; s < slots; s++) this.frameOf[s] = s
    this.spare = slots
    this.views = new Array(slots + 1)
  }

  private setOf(blockId: number, pageIndex: number): number {
    return (hashKey(blockId, pageIndex) & this.setMask) * this.ways
  }

  private static key(blockId: number, pageIndex: number): number {
    if (!Number.isInteger(blockId) || blockId < 0 || blockId > 0xffff)
      throw new RangeError(`page cache: blockId ${blockId} must be an integer in 0..65535`)
    if (!Number.isInteger(pageIndex) || pageIndex < 0 || pageIndex > 0xffffffff)
      throw new RangeError(`page cache: pageIndex ${pageIndex} must be an integer in 0..2^32-1`)
    return blockId * BLOCK_MUL + pageIndex
  }

  /** Slot holding the key, or -1. No statistics, no recency update. */
  find(blockId: number, pageIndex: number): number {
    const k = PageCache.key(blockId, pageIndex)
    const base = this.setOf(blockId, pageIndex)
    this.lastBase = base
    const keys = this.keys
    for (let s = base, end = base + this.ways; s < end; s++) if (keys[s] === k) return s
    return -1
  }

  /** Slot holding the key, or -1; counts a hit or a miss, advances the clock and stamps a hit. */
  lookup(blockId: number, pageIndex: number): number {
    const s = this.find(blockId, pageIndex)
    this.tick++
    if (s < 0) {
      this.stats.misses++
    } else {
      this.stats.hits++
      this.stamps[s] = this.tick
    }
    return s
  }

  /**
   * Claims a slot for the key and returns it; the caller fills pageView(slot). Evicts the set's least recently
   * used page, or returns -1 (refused) when that page is still protected by the age rule. If the key is already
   * cached its slot is returned unchanged.
   */
  insert(blockId: number, pageIndex: number): number {
    const existing = this.find(blockId, pageIndex)
    if (existing >= 0) return existing
    return this.insertMissing(blockId, pageIndex)
  }

  /**
   * insert() for a key that the immediately preceding find() or lookup() (same key, no other cache call in
   * between) did not find: skips the second hash and set scan. Same decisions as insert().
   */
  insertMissing(blockId: number, pageIndex: number): number {
    const base = this.lastBase
    const keys = this.keys
    const stamps = this.stamps
    const ways = this.ways
    let victim = -1
    for (let w = 0; w < ways; w++) {
      if (keys[base + w] === EMPTY) {
        victim = base + w
        break
      }
    }
    if (victim < 0) {
      victim = base
      for (let s = base + 1, end = base + ways; s < end; s++) if (stamps[s]! < stamps[victim]!) victim = s
      if (this.tick - stamps[victim]! < this.protectTicks) {
        this.stats.refused++
        return -1
      }
      this.stats.evictions++
    }
    keys[victim] = blockId * BLOCK_MUL + pageIndex
    stamps[victim] = this.tick
    this.fills[victim] = NOT_LAZY
    return victim
  }

  /**
   * Claims the key's slot while seeding the cache from a base image (issue #15; part of the format, SPEC.md
   * §12.7): the slot already holding the key, else the set's lowest empty way, else the set's least recently
   * used page is evicted — the age rule does not apply, so a base bigger than the cache keeps its most recent
   * pages. Advances the clock and stamps the slot like a lookup hit; counts neither a hit nor a miss (an
   * eviction is counted). The caller writes the page (writePage or setFill).
   */
  seedSlot(blockId: number, pageIndex: number): number {
    let s = this.find(blockId, pageIndex)
    this.tick++
    if (s < 0) {
      const base = this.lastBase
      const keys = this.keys
      const stamps = this.stamps
      for (let w = 0; w < this.ways && s < 0; w++) if (keys[base + w] === EMPTY) s = base + w
      if (s < 0) {
        s = base
        for (let v = base + 1, end = base + this.ways; v < end; v++) if (stamps[v]! < stamps[s]!) s = v
        this.stats.evictions++
      }
      keys[s] = blockId * BLOCK_MUL + pageIndex
    }
    this.stamps[s] = this.tick
    this.fills[s] = NOT_LAZY
    return s
  }

  /** Forgets the key; returns whether it was cached. */
  invalidate(blockId: number, pageIndex: number): boolean {
    const s = this.find(blockId, pageIndex)
    if (s < 0) return false
    this.keys[s] = EMPTY
    this.stamps[s] = 0
    this.fills[s] = NOT_LAZY
    return true
  }

  /** Empties the cache (counters are kept; they are cumulative like QEMU's). */
  reset(): void {
    this.keys.fill(EMPTY)
    this.stamps.fill(0)
    this.fills.fill(NOT_LAZY)
    this.tick = 0
  }

  /** Byte offset of a slot's page in `memory` (materialises a lazy fill slot first). */
  pageOffset(slot: number): number {
    if (this.fills[slot]! !== NOT_LAZY) this.materialise(slot)
    return this.framesOffset + this.frameOf[slot]! * this.pageSize
  }

  /**
   * View of a slot's page (stable until that slot is swapped with the spare frame). Materialises a lazy fill
   * slot first, so the bytes are always the logical contents.
   */
  pageView(slot: number): Uint8Array {
    if (this.fills[slot]! !== NOT_LAZY) this.materialise(slot)
    return this.frameView(this.frameOf[slot]!)
  }

  /** Offset of the slot's frame without materialising: stale while fillOf(slot) >= 0. */
  rawPageOffset(slot: number): number {
    return this.framesOffset + this.frameOf[slot]! * this.pageSize
  }

  /** View of the slot's frame without materialising: stale while fillOf(slot) >= 0. */
  rawPageView(slot: number): Uint8Array {
    return this.frameView(this.frameOf[slot]!)
  }

  /** The fill byte of a lazy fill slot, or -1 when the slot's frame holds its bytes. */
  fillOf(slot: number): number {
    return this.fills[slot]!
  }

  /** Logically sets every byte of the slot's page to `fill & 0xff` without touching its frame. */
  setFill(slot: number, fill: number): void {
    this.fills[slot] = fill & 0xff
  }

  /** Copies `page` into the slot's frame (the slot stops being a lazy fill slot). */
  writePage(slot: number, page: Uint8Array): void {
    this.frameView(this.frameOf[slot]!).set(page)
    this.fills[slot] = NOT_LAZY
  }

  /** Writes a lazy fill slot's bytes into its frame (no-op for other slots). */
  materialise(slot: number): void {
    const f = this.fills[slot]!
    if (f === NOT_LAZY) return
    const off = this.framesOffset + this.frameOf[slot]! * this.pageSize
    this.bytes.fill(f, off, off + this.pageSize)
    this.fills[slot] = NOT_LAZY
  }

  /** Offset of a page whose bytes all equal `fill` (the shared fill frame; rewritten if it held another byte). */
  fillPageOffset(fill: number): number {
    if (fill !== this.fillByte) {
      this.bytes.fill(fill, this.fillOffset, this.fillOffset + this.pageSize)
      this.fillByte = fill
    }
    return this.fillOffset
  }

  /** View of the shared fill frame holding `fill` (valid until a fill page of another byte is asked for). */
  fillPageView(fill: number): Uint8Array {
    this.fillPageOffset(fill)
    this.fillFrameView ??= this.bytes.subarray(this.fillOffset, this.fillOffset + this.pageSize)
    return this.fillFrameView
  }

  /** Byte offset / view of the spare frame, where an incoming page is staged. */
  spareOffset(): number {
    return this.framesOffset + this.spare * this.pageSize
  }

  spareView(): Uint8Array {
    return this.frameView(this.spare)
  }

  /** The staged page becomes the slot's page; the old frame becomes the spare. No bytes move. */
  adoptSpare(slot: number): void {
    const f = this.frameOf[slot]!
    this.frameOf[slot] = this.spare
    this.spare = f
    this.fills[slot] = NOT_LAZY
  }

  private frameView(frame: number): Uint8Array {
    let v = this.views[frame]
    if (v === undefined) {
      v = this.bytes.subarray(
        this.framesOffset + frame * this.pageSize,
        this.framesOffset + (frame + 1) * this.pageSize,
      )
      this.views[frame] = v
    }
    return v
  }

  /** Occupied slots as [slot, blockId, pageIndex] (for tests, debugging and equality checks). */
  *entries(): IterableIterator<[slot: number, blockId: number, pageIndex: number]> {
    for (let s = 0; s < this.slots; s++) {
      const k = this.keys[s]!
      if (k !== EMPTY) yield [s, Math.floor(k / BLOCK_MUL), k % BLOCK_MUL]
    }
  }

  /** Number of occupied slots. */
  get size(): number {
    let n = 0
    for (let s = 0; s < this.slots; s++) if (this.keys[s] !== EMPTY) n++
    return n
  }

  /** Number of occupied slots that are lazy fill slots. */
  get lazyFillCount(): number {
    let n = 0
    for (let s = 0; s < this.slots; s++) if (this.keys[s] !== EMPTY && this.fills[s] !== NOT_LAZY) n++
    return n
  }

  /**
   * True when both caches hold the same keys in the same slots with the same (logical) bytes. Lazy fill slots
   * compare by their fill byte, without materialising either side.
   */
  sameContents(other: PageCache): boolean {
    if (other.slots !== this.slots || other.pageSize !== this.pageSize) return false
    for (let s = 0; s < this.slots; s++) {
      if (this.keys[s] !== other.keys[s]) return false
      if (this.keys[s] === EMPTY) continue
      const fa = this.fills[s]!
      const fb = other.fills[s]!
      if (fa !== NOT_LAZY && fb !== NOT_LAZY) {
        if (fa !== fb) return false
        continue
      }
      const a = this.rawPageView(s)
      const b = other.rawPageView(s)
      if (fa !== NOT_LAZY) {
        for (let i = 0; i < b.length; i++) if (b[i] !== fa) return false
      } else if (fb !== NOT_LAZY) {
        for (let i = 0; i < a.length; i++) if (a[i] !== fb) return false
      } else {
        for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
      }
    }
    return true
  }
}
