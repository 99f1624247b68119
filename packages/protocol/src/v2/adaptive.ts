/**
 * The adaptive second stage (`--compress auto`, SPEC.md §11.5): per batch, store the frames plain or compress
 * them with the header's compressor at a fast or a strong level, whichever moves the most original bytes per
 * second through the slower of the two resources of a live migration, this CPU and the output link.
 *
 * The wire needs nothing new: a batch says whether it is compressed (`enc`), the compressor is the header's, and
 * the level is not on the wire (any level decodes the same). With zstd installed the ladder is plain /
 * zstd --fast=7 (about lz4's speed and ratio) / zstd 1; with only lz4 it is plain / lz4; otherwise plain /
 * deflate 1. Choosing lz4 for one batch and zstd for the next would need a codec per batch on the wire (a new
 * format version); a negative zstd level gives the same speed class within the existing format.
 *
 * `chooseBatchCodec` is the rule, pure and deterministic. `AdaptiveCompression` measures what the rule needs
 * (compressor cost and ratio per option, the encoder's own cost, the drain rate told by the output side) and
 * applies it batch by batch; its clock is injectable so that a test can replay a run exactly.
 */
import { type CodecName, type Compressor, findCompressor, isCompressorInstalled } from './codecs.js'
import type { Compression } from './types.js'

/** One rung of the ladder: plain (`none`) or the stream's compressor at a level. */
export interface BatchCodecOption {
  readonly codec: CodecName
  readonly level: number
}

/** What one option costs: CPU nanoseconds per frame byte, and stored bytes per frame byte. */
export interface CodecMeasure {
  nsPerByte: number
  ratio: number
}

export interface ChoiceInput {
  /** Bytes per second the output accepts while it has a backlog; undefined or Infinity: the link is not the limit. */
  drainRate: number | undefined
  /** CPU nanoseconds the encoder spends per frame byte before the second stage (parsing, deltas, framing). */
  upstreamNsPerByte: number
  /** One measure per ladder option, in ladder order. */
  options: readonly CodecMeasure[]
  /** Safety factor on CPU time, so that the filter stays ahead of the link rather than level with it. */
  headroom: number
}

/** Two options whose times are within this factor count as equally fast; the smaller output then wins. */
export const TIE_FACTOR = 1.03

/**
 * The rule. For option i, per frame byte: CPU time `(upstream + ns_i) × headroom`, link time `ratio_i / drain`.
 * The pipeline runs at the slower of the two, so the option with the smallest `max(cpu, link)` moves the most
 * bytes; among options within TIE_FACTOR of the best, the one with the smallest ratio (less on the link, more
 * margin), then the lowest index. On a link that is not the limit every option is CPU-bound and the cheapest
 * (plain) wins; on a slow link the strongest compressor the CPU can keep up with wins.
 */
export function chooseBatchCodec(m: ChoiceInput): number {
  const cost = m.options.map((o) =>
    pathNsPerByte((m.upstreamNsPerByte + o.nsPerByte) * m.headroom, o.ratio, m.drainRate),
  )
  const best = Math.min(...cost)
  let pick = -1
  for (let i = 0; i < cost.length; i++) {
    if (cost[i]! > best * TIE_FACTOR) continue
    if (pick < 0 || m.options[i]!.ratio < m.options[pick]!.ratio) pick = i
  }
  return pick
}

/**
 * What one byte costs a path of a live pipeline: the slower of its CPU time (`cpuNs`, ns) and its link time,
 * `ratio` output bytes at `drainRate` bytes/s (undefined, not finite or not positive: the link is not the limit,
 * no link time). The adaptive second stage and the encoder's bypass (adapter-libvirt) both judge by it.
 */
export function pathNsPerByte(cpuNs: number, ratio: number, drainRate: number | undefined): number {
  const link =
    drainRate !== undefined && Number.isFinite(drainRate) && drainRate > 0 ? (ratio * 1e9) / drainRate : 0
  return Math.max(cpuNs, link)
}

/** Starting estimates (measured on 1 MiB batches of guest RAM, BENCHMARKS.md), replaced as batches are measured. */
const PRIORS: Readonly<Record<CodecName, CodecMeasure>> = {
  none: { nsPerByte: 0, ratio: 1 },
  lz4: { nsPerByte: 5, ratio: 0.55 },
  zstd: { nsPerByte: 9, ratio: 0.45 },
  deflate: { nsPerByte: 40, ratio: 0.45 },
}
/** zstd at negative levels: faster and weaker than level 1, about lz4. */
const ZSTD_FAST_PRIOR: CodecMeasure = { nsPerByte: 5, ratio: 0.58 }
export const ZSTD_FAST_LEVEL = -7

/** The ladder for the compressors installed here (the first one is always plain); loads none of them. */
export function defaultLadder(
  available: (c: 'zstd' | 'lz4') => boolean = isCompressorInstalled,
): BatchCodecOption[] {
  const none = { codec: 'none', level: 0 } as const
  if (available('zstd')) return [none, { codec: 'zstd', level: ZSTD_FAST_LEVEL }, { codec: 'zstd', level: 1 }]
  if (available('lz4')) return [none, { codec: 'lz4', level: 1 }]
  return [none, { codec: 'deflate', level: 1 }]
}

export interface AdaptiveOptions {
  /** Plain first, then options of one compressor (default: defaultLadder()). */
  ladder?: readonly BatchCodecOption[]
  /** Monotonic clock in nanoseconds (tests inject one). */
  now?: () => number
  /** Compressor lookup (tests may inject one); undefined: not loadable, the option is never chosen again. */
  compressor?: (name: Exclude<CodecName, 'none'>) => Compressor | undefined
  headroom?: number
  /** Every this many batches, an option not used for as long is tried once, so its measure stays current. */
  probeEvery?: number
  /** Starting measures per option (default: the priors above). */
  priors?: readonly CodecMeasure[]
}

/** Weight of a new sample in the running averages. */
const EWMA = 0.3
/** Weight of a new sample in an option's own factor (the data's scale moves faster). */
const SLOW = 0.1
const DEFAULT_HEADROOM = 1.25
const DEFAULT_PROBE_EVERY = 16

/** A monotonic clock in nanoseconds, without loading perf_hooks (performance.now() would, before a first byte). */
export function monotonicNs(): number {
  return Number(process.hrtime.bigint())
}

/** The measuring, stateful side of the rule: one per stream. */
export class AdaptiveCompression {
  readonly ladder: readonly BatchCodecOption[]
  /** Batches given to each option so far (ladder order). */
  readonly counts: number[]
  /** The options chosen, in batch order, while `trace` is on (tests). */
  trace: number[] | undefined
  /**
   * Per option, its cost and ratio relative to the data at hand (`factor`), and the data's shared scale: one
   * measured batch of any option updates the estimate of every option (text and zero pages differ for all of
   * them alike), and each option's own factor is corrected slowly when it is measured.
   */
  private readonly factor: CodecMeasure[]
  private readonly scale: CodecMeasure = { nsPerByte: 1, ratio: 1 }
  private readonly lastUsed: number[]
  private readonly now: () => number
  /** Loaded on first use (start-up stays off the native modules); null: failed to load. */
  private readonly compressors: (Compressor | null | undefined)[]
  private readonly lookup: (name: Exclude<CodecName, 'none'>) => Compressor | undefined
  private readonly headroom: number
  private readonly probeEvery: number
  private drain: number | undefined
  private upstream = 0
  private windows = 0
  private batches = 0
  /** Totals for the upstream cost (busy time told by the stream minus compressing, per frame byte), and a mark. */
  private readonly total = { busy: 0, compress: 0, frames: 0 }
  private mark = { ...this.total }

  constructor(o: AdaptiveOptions = {}) {
    this.ladder = o.ladder ?? defaultLadder()
    if (this.ladder.length === 0 || this.ladder[0]!.codec !== 'none')
      throw new RangeError('an adaptive ladder starts with plain (codec none)')
    const codecs = new Set(this.ladder.slice(1).map((x) => x.codec))
    if (codecs.size > 1 || codecs.has('none'))
      throw new RangeError('the options of an adaptive ladder share one compressor (the header names it)')
    this.now = o.now ?? monotonicNs
    this.lookup = o.compressor ?? findCompressor
    this.compressors = this.ladder.map(() => undefined)
    this.factor = this.ladder.map((x, i) => ({
      ...(o.priors?.[i] ?? (x.codec === 'zstd' && x.level < 0 ? ZSTD_FAST_PRIOR : PRIORS[x.codec])),
    }))
    this.counts = this.ladder.map(() => 0)
    this.lastUsed = this.ladder.map(() => 0)
    this.headroom = o.headroom ?? DEFAULT_HEADROOM
    this.probeEvery = o.probeEvery ?? DEFAULT_PROBE_EVERY
  }

  /** What the stream header names: the ladder's compressor at its strongest level (informational). */
  get header(): Required<Compression> {
    const last = this.ladder[this.ladder.length - 1]!
    return { codec: last.codec, level: last.level }
  }

  /** The output side's measured drain rate (bytes/s), or undefined when the output keeps up with everything. */
  setDrainRate(bytesPerSec: number | undefined): void {
    this.drain = bytesPerSec
  }

  get drainRate(): number | undefined {
    return this.drain
  }

  /** The stream tells how long it was busy encoding (compressing included); gives the upstream cost. */
  noteBusy(ns: number): void {
    const t = this.total
    t.busy += ns
    const frames = t.frames - this.mark.frames
    if (frames < 64 * 1024) return
    const own = Math.max(0, t.busy - this.mark.busy - (t.compress - this.mark.compress))
    // The first window carries the start-up (wasm compile, first cache pages): not the steady cost.
    if (this.windows++ > 0)
      this.upstream =
        this.windows === 2 ? own / frames : this.upstream + EWMA * (own / frames - this.upstream)
    this.mark = { ...t }
  }

  /** The input of the rule right now (also what tests compare). */
  choiceInput(): ChoiceInput {
    return {
      drainRate: this.drain,
      upstreamNsPerByte: this.upstream,
      options: this.factor.map((f, i) =>
        i === 0
          ? { nsPerByte: 0, ratio: 1 }
          : { nsPerByte: f.nsPerByte * this.scale.nsPerByte, ratio: Math.min(1, f.ratio * this.scale.ratio) },
      ),
      headroom: this.headroom,
    }
  }

  /** The option for the next batch: the rule's, or once in a while one that has not been measured lately. */
  next(): number {
    const pick = chooseBatchCodec(this.choiceInput())
    if (this.probeEvery > 0 && this.batches > 0 && this.batches % this.probeEvery === 0) {
      for (let i = 1; i < this.ladder.length; i++)
        if (i !== pick && this.batches - this.lastUsed[i]! >= this.probeEvery) return i
    }
    return pick
  }

  /**
   * The writer's hook: compresses one batch's frames with the chosen option and measures it; undefined stores
   * the batch plain (the writer still keeps a compressed batch only when it is smaller, SPEC.md §11.5).
   */
  compress(frames: Uint8Array): Uint8Array | undefined {
    const i = this.next()
    this.lastUsed[i] = this.batches
    this.batches++
    this.counts[i]!++
    this.trace?.push(i)
    this.total.frames += frames.length
    const c = this.compressorOf(i)
    if (c === undefined || frames.length === 0) return undefined
    const t0 = this.now()
    const level = this.ladder[i]!.level
    // a view is enough: the writer copies the bytes out before the next batch
    const z = c.compressView ? c.compressView(frames, level) : c.compress(frames, level)
    const ns = Math.max(0, this.now() - t0)
    this.total.compress += ns
    this.learn(i, ns / frames.length, Math.min(1, z.length / frames.length))
    return z
  }

  private compressorOf(i: number): Compressor | undefined {
    const codec = this.ladder[i]!.codec
    if (codec === 'none') return undefined
    let c = this.compressors[i]
    if (c === undefined) {
      c = this.lookup(codec) ?? null
      this.compressors[i] = c
      // A compressor that does not load leaves the batch plain (always valid) and is not chosen again.
      if (c === null) this.factor[i] = { nsPerByte: Number.POSITIVE_INFINITY, ratio: 1 }
    }
    return c ?? undefined
  }

  private learn(i: number, nsPerByte: number, ratio: number): void {
    const f = this.factor[i]!
    const s = this.scale
    if (f.nsPerByte > 0) s.nsPerByte += EWMA * (nsPerByte / f.nsPerByte - s.nsPerByte)
    if (f.ratio > 0) s.ratio += EWMA * (ratio / f.ratio - s.ratio)
    if (s.nsPerByte > 0) f.nsPerByte += SLOW * (nsPerByte / s.nsPerByte - f.nsPerByte)
    if (s.ratio > 0) f.ratio += SLOW * (ratio / s.ratio - f.ratio)
  }
}
