/**
 * Page-level XBZRLE with a mirrored cache: the API a stream filter uses. It knows nothing of QEMU framing;
 * it turns (blockId, pageIndex, page) into full / delta / same frames and back.
 *
 * Mirroring: the encoder and the decoder perform the same cache operations for the same frame sequence
 * (lookup on every page frame, insert on a miss, the new bytes stored on a change), so their caches stay equal.
 * The shared operations (applyZero, applyForeignDelta, invalidate, reset) live in one base class.
 *
 * ZERO records make lazy fill slots (see page-cache.ts): the cache decisions and logical contents are those of
 * writing the fill page, but no page bytes are written. The encoder compares an incoming page against the shared
 * fill frame (an unchanged page stays lazy; a changed one is copied into the slot's frame); the decoder
 * materialises a lazy slot only to apply a delta (or a foreign delta) to it, and answers `same` with the fill
 * frame. Neither side changes which frames it sends.
 */
import { CacheDesyncError, decodeErrorFromCode, XbzrleDecodeError } from './errors.js'
import { kernelName } from './kernel.js'
import { decodeTs, encodeTs } from './kernel-ts.js'
import type { EncodeMode, KernelName } from './kernel-types.js'
import { WasmBinding } from './kernel-wasm.js'
import { type CacheParameters, type CacheStats, PageCache, type PageCacheOptions } from './page-cache.js'

export interface PageDeltaOptions {
  cache: PageCacheOptions | CacheParameters
  /** Default 'canonical' (QEMU's bytes). The decoder accepts both; the option only matters to the encoder. */
  mode?: EncodeMode
  /** Force a kernel (default: the selected one, see kernelName()). */
  kernel?: KernelName
}

export type PageFrameKind = 'full' | 'delta' | 'same'

export interface EncodeResult {
  kind: PageFrameKind
  /** The delta for kind 'delta' (empty otherwise). A view into scratch memory, valid until the next call. */
  delta: Uint8Array
}

/** Outcome of applyForeignDelta. */
export type ForeignDeltaOutcome = 'applied' | 'not-cached' | 'invalid'

const EMPTY = new Uint8Array(0)

abstract class PageDeltaState {
  readonly cache: PageCache
  readonly parameters: CacheParameters
  readonly kernel: KernelName
  protected readonly pageSize: number
  protected readonly wasm: WasmBinding | null

  constructor(options: PageDeltaOptions) {
    this.cache = new PageCache(options.cache)
    this.parameters = this.cache.parameters
    this.pageSize = this.cache.pageSize
    this.kernel = options.kernel ?? kernelName()
    this.wasm = this.kernel === 'wasm' ? new WasmBinding(this.cache.memory) : null
  }

  get stats(): CacheStats {
    return this.cache.stats
  }

  protected checkPage(page: Uint8Array): void {
    if (page.length !== this.pageSize)
      throw new RangeError(`page is ${page.length} bytes, the cache's pageSize is ${this.pageSize}`)
  }

  /**
   * Validates `delta` and applies it to the page in `slot`. Throws XbzrleDecodeError with the page untouched.
   * Wasm path: the delta is copied into the scratch (it is small; the page is not copied).
   */
  protected decodeInto(slot: number, delta: Uint8Array): number {
    const c = this.cache
    if (this.wasm !== null && delta.length <= c.deltaCapacity) {
      c.bytes.set(delta, c.deltaOffset)
      const r = this.wasm.decodeAt(c.deltaOffset, delta.length, c.pageOffset(slot), this.pageSize) // materialises
      if (r < 0) throw decodeErrorFromCode(r)
      return r
    }
    return decodeTs(delta, c.pageView(slot))
  }

  /**
   * A ZERO-style record (the whole page is `fill & 0xff`). If the key is cached its page becomes fill bytes; if
   * not, a fill page is inserted (unless the age rule refuses it) (like QEMU's xbzrle_cache_zero_page: a later
   * small write then encodes as a small delta). Uses find(), not lookup(): no hit/miss counted, no recency change.
   * The slot becomes a lazy fill slot: no page bytes are written here.
   */
  applyZero(blockId: number, pageIndex: number, fill = 0): void {
    const c = this.cache
    let slot = c.find(blockId, pageIndex)
    if (slot < 0) slot = c.insertMissing(blockId, pageIndex)
    if (slot >= 0) c.setFill(slot, fill)
    c.stats.pages.zero++
  }

  /**
   * QEMU's own XBZRLE record for this page: if cached, apply it to the cached page; if it is invalid, invalidate
   * the key (the cached page itself is left untouched by the validating decoder, but no longer trusted).
   * Not cached: nothing happens.
   */
  applyForeignDelta(blockId: number, pageIndex: number, qemuDelta: Uint8Array): ForeignDeltaOutcome {
    const c = this.cache
    const slot = c.find(blockId, pageIndex)
    if (slot < 0) return 'not-cached'
    try {
      this.decodeInto(slot, qemuDelta)
    } catch (e) {
      if (!(e instanceof XbzrleDecodeError)) throw e
      c.invalidate(blockId, pageIndex)
      c.stats.pages.foreignInvalid++
      return 'invalid'
    }
    c.stats.pages.foreign++
    return 'applied'
  }

  invalidate(blockId: number, pageIndex: number): boolean {
    return this.cache.invalidate(blockId, pageIndex)
  }

  reset(): void {
    this.cache.reset()
  }
}

export class PageDeltaEncoder extends PageDeltaState {
  readonly mode: EncodeMode
  private readonly result: EncodeResult = { kind: 'full', delta: EMPTY }
  private readonly deltaDst: Uint8Array
  private readonly dlen: number
  private readonly compact: number
  /** deltaDst.subarray(0, n), created once per length n. */
  private readonly deltaViews: (Uint8Array | undefined)[]

  constructor(options: PageDeltaOptions) {
    super(options)
    this.mode = options.mode ?? 'canonical'
    // A delta is only worth sending when strictly smaller than the page.
    this.dlen = this.pageSize - 1
    this.deltaDst = this.cache.bytes.subarray(this.cache.deltaOffset, this.cache.deltaOffset + this.dlen)
    this.compact = this.mode === 'compact' ? 1 : 0
    this.deltaViews = new Array(this.dlen + 1)
  }

  /**
   * Encodes one page. On a miss the page is copied into its new slot. On a hit it is copied into the staging
   * (spare) frame and encoded against the cached page (or against the shared fill frame for a lazy fill slot);
   * if it changed, the delta just produced is applied to the slot's frame in place (an overflow, or a lazy fill
   * slot, copies the staged page instead). The returned object and its delta are reused.
   */
  encodePage(blockId: number, pageIndex: number, page: Uint8Array): EncodeResult {
    this.checkPage(page)
    const c = this.cache
    const r = this.result
    let slot = c.lookup(blockId, pageIndex)
    if (slot < 0) {
      slot = c.insertMissing(blockId, pageIndex)
      // Refused by the age rule: not cached, nothing copied (the decoder's insert is refused the same way).
      if (slot >= 0) c.writePage(slot, page)
      c.stats.pages.full++
      r.kind = 'full'
      r.delta = EMPTY
      return r
    }
    const staged = c.spareView()
    staged.set(page)
    // A lazy fill slot is compared against the shared fill frame: its own frame is not touched.
    const fill = c.fillOf(slot)
    let n: number
    if (this.wasm !== null) {
      const oldOff = fill < 0 ? c.rawPageOffset(slot) : c.fillPageOffset(fill)
      n = this.wasm.ex.encode(oldOff, c.spareOffset(), this.pageSize, c.deltaOffset, this.dlen, this.compact)
    } else {
      const old = fill < 0 ? c.rawPageView(slot) : c.fillPageView(fill)
      n = encodeTs(old, staged, this.deltaDst, this.mode)
    }
    if (n === 0) {
      c.stats.pages.same++
      c.stats.bytesSaved += this.pageSize
      r.kind = 'same'
      r.delta = EMPTY
      return r
    }
    // The slot takes the staged bytes. A delta is applied in place (a few cache lines) rather than swapping in
    // the staging frame: the staging frame stays one hot frame, and the slot's frame, just read by the encode, is
    // not replaced by a cold one. A lazy fill slot or an overflow copies the page from the staging frame.
    if (n > 0 && fill < 0 && this.wasm !== null)
      this.wasm.ex.decode(c.deltaOffset, n, c.rawPageOffset(slot), this.pageSize)
    else c.writePage(slot, staged)
    if (n < 0) {
      c.stats.overflows++
      c.stats.pages.full++
      r.kind = 'full'
      r.delta = EMPTY
      return r
    }
    c.stats.pages.delta++
    c.stats.bytesSaved += this.pageSize - n
    r.kind = 'delta'
    let v = this.deltaViews[n]
    if (v === undefined) {
      v = this.deltaDst.subarray(0, n)
      this.deltaViews[n] = v
    }
    r.delta = v
    return r
  }
}

export class PageDeltaDecoder extends PageDeltaState {
  /** A full page frame: mirrors the encoder's miss (insert) or overflow (replace). */
  full(blockId: number, pageIndex: number, page: Uint8Array): void {
    this.checkPage(page)
    const c = this.cache
    let slot = c.lookup(blockId, pageIndex)
    // A full frame for a cached page means the encoder's delta overflowed: count it the same way.
    if (slot < 0) slot = c.insertMissing(blockId, pageIndex)
    else c.stats.overflows++
    if (slot >= 0) c.writePage(slot, page)
    c.stats.pages.full++
  }

  /**
   * A delta frame: applied to the cached page in place. Returns the reconstructed page (a view into the cache,
   * valid until the next call). Throws CacheDesyncError if not cached, XbzrleDecodeError (page untouched) if the
   * delta is invalid.
   */
  delta(blockId: number, pageIndex: number, delta: Uint8Array): Uint8Array {
    const c = this.cache
    const slot = c.lookup(blockId, pageIndex)
    if (slot < 0) throw new CacheDesyncError(blockId, pageIndex, 'delta')
    this.decodeInto(slot, delta)
    c.stats.pages.delta++
    c.stats.bytesSaved += this.pageSize - delta.length
    return c.rawPageView(slot) // decodeInto materialised it
  }

  /**
   * An unchanged-page frame: returns the cached page (valid until the next call; for a lazy fill slot it is the
   * shared fill frame, so do not write to it). Throws CacheDesyncError if not cached.
   */
  same(blockId: number, pageIndex: number): Uint8Array {
    const c = this.cache
    const slot = c.lookup(blockId, pageIndex)
    if (slot < 0) throw new CacheDesyncError(blockId, pageIndex, 'same')
    c.stats.pages.same++
    c.stats.bytesSaved += this.pageSize
    const fill = c.fillOf(slot)
    return fill < 0 ? c.rawPageView(slot) : c.fillPageView(fill)
  }
}
