/**
 * Bypass for links faster than the encoder (issue #14: never slow a fast link). The page path (cache lookup,
 * XBZRLE delta, one frame per page) costs CPU per page. When the link takes bytes faster than that path makes
 * them, the filter itself is the bottleneck, and sending pages as they are moves more of QEMU's stream per second.
 *
 * Bypassed pages go out inside VERBATIM frames, QEMU's records unchanged, and the encoder drops its cached copy of
 * each one with an INVALIDATE frame (only when it had one), so both caches keep the same contents and the decoder
 * needs nothing new: any format version with those frames reads it. A later delta of such a page is a miss, and
 * QEMU's own XBZRLE record of it passes through as PAGE_FOREIGN on a miss (SPEC.md §5.2). The cost is that the next
 * send of a bypassed page is a full page; that is why the rule below wants a clear gain before it bypasses.
 *
 * `chooseBypass` is the rule, pure: each path's time per input byte as the second stage's rule counts it
 * (pathNsPerByte). `BypassMeter` measures what it needs per mode (CPU per input byte, output per input byte) over
 * windows of input, with an injectable clock so that a test can replay a run exactly.
 */
import { monotonicNs, pathNsPerByte } from '@xbzrle/protocol/stream'

export interface BypassInput {
  /** Bytes/s the output drains while it has a backlog; undefined: the link has never been the limit. */
  drainRate: number | undefined
  /** CPU nanoseconds per input byte on the page path and on the bypass (second stage included). */
  pagesNsPerByte: number
  bypassNsPerByte: number
  /** Output bytes per input byte on each path. */
  pagesRatio: number
  bypassRatio: number
  /** Safety factor on CPU time (as the second stage's rule). */
  headroom: number
}

/** The bypass must move the stream at least this much faster than the page path: a bypassed page loses its cache. */
export const BYPASS_MARGIN = 1.5

/**
 * Per input byte, a path takes `max(cpu × headroom, ratio / drain)`: the slower of the CPU and the link. Bypass
 * when its time is at most 1 / BYPASS_MARGIN of the page path's. On a link that is the limit the page path sends
 * fewer bytes and wins; only a filter that is clearly CPU-bound bypasses.
 */
export function chooseBypass(m: BypassInput): boolean {
  const time = (ns: number, ratio: number) => pathNsPerByte(ns * m.headroom, ratio, m.drainRate)
  return time(m.bypassNsPerByte, m.bypassRatio) * BYPASS_MARGIN <= time(m.pagesNsPerByte, m.pagesRatio)
}

export interface BypassOptions {
  /** Monotonic clock in nanoseconds (tests inject one). */
  now?: () => number
  /** Input bytes per decision window (default 1 MiB). */
  windowBytes?: number
  /** While bypassing, every this many windows one goes through the page path to keep its measure current. */
  probeEvery?: number
  /** Page-path windows measured before the first bypass (the first one, start-up, is not counted). */
  warmup?: number
  headroom?: number
  /**
   * Forced modes (`--bypass`): every window bypasses or none does. A function picks the mode of window n (0-based;
   * tests that mix both modes).
   */
  force?: 'always' | 'never' | ((window: number) => boolean)
}

/** What one path has cost so far: running averages per input byte. */
interface PathMeasure {
  ns: number
  ratio: number
  windows: number
}

const EWMA = 0.3
/** Prior of the bypass's CPU cost relative to the page path's (measured in process on real streams: 0.55–0.6). */
const BYPASS_COST_PRIOR = 0.5

/** The measuring, stateful side of the rule: one per encoder. Modes change only at window boundaries. */
export class BypassMeter {
  /** The mode of the current window. */
  bypass = false
  /** Windows run in each mode (tests, stats). */
  readonly windows = { pages: 0, bypass: 0 }
  /** The modes chosen, in window order, while `trace` is on (tests). */
  trace: boolean[] | undefined
  private readonly now: () => number
  private readonly windowBytes: number
  private readonly probeEvery: number
  private readonly warmup: number
  private readonly headroom: number
  private readonly force: BypassOptions['force']
  private window = 0
  private readonly pages: PathMeasure = { ns: 0, ratio: 1, windows: 0 }
  private readonly direct: PathMeasure = { ns: 0, ratio: 1, windows: 0 }
  /** The open window: input and output bytes and busy time so far. */
  private inBytes = 0
  /** The encoder's output when the window opened. */
  private outMark = 0
  private busyNs = 0
  private sinceProbe = 0

  constructor(o: BypassOptions = {}) {
    this.now = o.now ?? monotonicNs
    this.windowBytes = o.windowBytes ?? 1 << 20
    this.probeEvery = o.probeEvery ?? 16
    this.warmup = o.warmup ?? 2
    this.headroom = o.headroom ?? 1.25
    this.force = o.force
    this.bypass = typeof this.force === 'function' ? this.force(0) : this.force === 'always'
  }

  /** The clock, for the encoder's push timing. */
  time(): number {
    return this.now()
  }

  /**
   * Before a push: once the window is full, picks the next mode and closes the window. On a change of mode,
   * `flush` runs first, so that each window's output is its own. `output` is the encoder's output so far (bytes);
   * batches close between pushes too, so a window's output is counted from it, not per push. Decides on the
   * measures up to the previous window.
   */
  beginPush(drainRate: number | undefined, output: () => number, flush: () => void): void {
    if (this.inBytes < this.windowBytes) return
    const next = this.decide(drainRate)
    this.trace?.push(next)
    if (next !== this.bypass) flush()
    this.closeWindow(output())
    this.bypass = next
  }

  /** After a push: the input it took and the time it was busy. */
  endPush(inBytes: number, busyNs: number): void {
    this.inBytes += inBytes
    this.busyNs += Math.max(0, busyNs)
  }

  /** Busy time outside a push (closing a batch: the second stage). */
  addBusy(ns: number): void {
    this.busyNs += Math.max(0, ns)
  }

  /** The rule's input right now (also what tests compare). */
  input(drainRate: number | undefined): BypassInput {
    const p = this.pages
    const d = this.direct
    return {
      drainRate,
      pagesNsPerByte: p.ns,
      bypassNsPerByte: d.windows > 0 ? d.ns : p.ns * BYPASS_COST_PRIOR,
      pagesRatio: p.ratio,
      // Until measured, assume the bypass saves nothing on the wire: it bypasses only where the CPU is the limit.
      bypassRatio: d.windows > 0 ? d.ratio : 1,
      headroom: this.headroom,
    }
  }

  private decide(drainRate: number | undefined): boolean {
    this.window++
    if (typeof this.force === 'function') return this.force(this.window)
    if (this.force) return this.force === 'always'
    if (this.pages.windows < this.warmup) return false
    if (this.bypass && ++this.sinceProbe >= this.probeEvery) {
      this.sinceProbe = 0
      return false
    }
    return chooseBypass(this.input(drainRate))
  }

  private closeWindow(output: number): void {
    const m = this.bypass ? this.direct : this.pages
    // The very first window carries the start-up (wasm compile, first cache pages): not the steady cost.
    const first = this.windows.pages + this.windows.bypass === 0
    this.windows[this.bypass ? 'bypass' : 'pages']++
    if (!first && this.inBytes > 0) {
      const ns = this.busyNs / this.inBytes
      const ratio = (output - this.outMark) / this.inBytes
      if (m.windows === 0) {
        m.ns = ns
        m.ratio = ratio
      } else {
        m.ns += EWMA * (ns - m.ns)
        m.ratio += EWMA * (ratio - m.ratio)
      }
      m.windows++
    }
    this.inBytes = 0
    this.outMark = output
    this.busyNs = 0
  }
}
