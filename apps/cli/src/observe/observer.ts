/**
 * One place that turns a running filter into the three operator views: `--progress json` lines, Prometheus
 * metrics and the `--stats-json` document. encode/decode use it now; send/receive/proxy call the same
 * `RunObserver` (see docs/observability.md, "Wiring").
 *
 * Cost: nothing per page. Pass boundaries arrive through the encoder's `passListener`; totals are read from
 * the filter's cumulative counters on a timer (default 1 s) and at each scrape.
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import { type PassCounters, zeroCounters } from '@xbzrle/adapter-libvirt'
import { CliError, ExitCode } from '../errors.js'
import type { MigrationMetrics, MigrationRole } from './metrics.js'
import {
  type Convergence,
  OBSERVE_SCHEMA_VERSION,
  type ObservedCommand,
  type PassStatsJson,
  type ProgressEvent,
  ProgressEventSchema,
  type StatsReport,
  type Totals,
} from './schemas.js'

/** Cumulative counters of a filter: the encoder's and decoder's own pass counters. */
export type FilterCounters = PassCounters

/** What the observer reads from a filter. */
export interface ObservedFilter {
  counters(): FilterCounters
  /** The pass in progress (1 when the filter does not find passes). */
  pass(): number
  /** Finished passes. */
  passes(): readonly PassStatsJson[]
  /** Who found the passes: 'encoder' (exact), 'decoder' (the passes the page keys prove), 'none'. */
  passDetection: 'encoder' | 'decoder' | 'none'
}

/** The encoder as an ObservedFilter (XbzrleEncoder, or anything with its pass API). */
export function encoderSource(enc: {
  passCounters(): FilterCounters
  readonly passes: readonly PassStatsJson[]
  readonly stats: { pass: number }
}): ObservedFilter {
  return {
    counters: () => enc.passCounters(),
    pass: () => enc.stats.pass,
    passes: () => enc.passes,
    passDetection: 'encoder',
  }
}

/**
 * The decoder as an ObservedFilter (XbzrleDecoder): bytes in are xbzrle bytes, bytes out QEMU's. Its passes
 * are the ones page repeats prove, without QEMU's empty pre-completion pass (docs/observability.md).
 */
export function decoderSource(dec: {
  passCounters(): FilterCounters
  readonly passes: readonly PassStatsJson[]
  readonly stats: { pass: number }
}): ObservedFilter {
  return { ...encoderSource(dec), passDetection: 'decoder' }
}

/** A filter that only knows bytes (e.g. send --encoded): one pass, no page kinds. */
export function bytesSource(stats: () => { bytesIn: number; bytesOut: number }): ObservedFilter {
  return {
    counters: () => {
      const s = stats()
      return { ...zeroCounters(), bytesIn: s.bytesIn, bytesOut: s.bytesOut }
    },
    pass: () => 1,
    passes: () => [],
    passDetection: 'none',
  }
}

export function totalsOf(c: FilterCounters, passes: number, wallMs: number): Totals {
  const total = c.full + c.delta + c.same + c.zero + c.foreign + c.other
  const t: Totals = {
    bytesIn: c.bytesIn,
    bytesOut: c.bytesOut,
    ratio: c.bytesIn > 0 ? c.bytesOut / c.bytesIn : 0,
    pages: {
      full: c.full,
      delta: c.delta,
      same: c.same,
      zero: c.zero,
      foreign: c.foreign,
      other: c.other,
      total,
    },
    resentPages: c.resent,
    cacheHits: c.cacheHits,
    cacheMisses: c.cacheMisses,
    passes,
    wallMs: Math.max(0, wallMs),
  }
  if (c.cacheHits + c.cacheMisses > 0) t.hitRate = c.cacheHits / (c.cacheHits + c.cacheMisses)
  return t
}

/**
 * Dirty trend and convergence estimate from the finished passes. Pass 1 sends all of RAM and the empty pass
 * before QEMU's completion says nothing about the guest, so both are left out; the shrink factor is the
 * geometric mean of the last (up to 3) pass-to-pass ratios of dirty bytes. If passes keep shrinking by that
 * factor s, what is left is a geometric series: last × s / (1 − s).
 */
export function convergence(passes: readonly PassStatsJson[], linkRate: number): Convergence {
  const dirty = passes
    .slice(1)
    .filter((p) => p.pages.total > 0)
    .map((p) => p.bytesIn)
  const shown = dirty.slice(-8)
  const ratios: number[] = []
  for (let i = Math.max(1, dirty.length - 3); i < dirty.length; i++) {
    if (dirty[i - 1]! > 0) ratios.push(dirty[i]! / dirty[i - 1]!)
  }
  if (ratios.length === 0) return { dirtyBytes: shown, trend: 'unknown' }
  const s = ratios.some((r) => r === 0)
    ? 0
    : Math.exp(ratios.reduce((a, r) => a + Math.log(r), 0) / ratios.length)
  const trend = s < 0.95 ? 'shrinking' : s > 1.05 ? 'growing' : 'flat'
  const c: Convergence = { dirtyBytes: shown, shrinkFactor: s, trend }
  if (trend === 'shrinking') {
    const last = passes.filter((p) => p.pages.total > 0).at(-1)!
    const remaining = Math.round((dirty.at(-1)! * s) / (1 - s))
    c.projectedRemainingBytes = remaining
    c.projectedRemainingBytesOut = Math.round(remaining * (last.bytesIn > 0 ? last.ratio : 1))
    if (linkRate > 0) c.projectedSeconds = c.projectedRemainingBytesOut / linkRate
  }
  return c
}

/** Where `--progress json[=FD|FILE]` lines go. */
export interface LineSink {
  write(line: string): void
  close(): void
  /** The fd written to (1 for stdout), for a clash check with the data output. */
  readonly fd: number
}

export type ProgressMode =
  | { kind: 'auto' }
  | { kind: 'bar' }
  | { kind: 'none' }
  | { kind: 'json'; target: string }

/** `auto` (a bar on a terminal), `bar`, `none`, `json` (stderr), `json=FD`, `json=FILE`. */
export function parseProgressMode(spec: string): ProgressMode {
  if (spec === 'auto' || spec === 'bar' || spec === 'none') return { kind: spec }
  if (spec === 'json') return { kind: 'json', target: '2' }
  if (spec.startsWith('json=') && spec.length > 5) return { kind: 'json', target: spec.slice(5) }
  throw new CliError(
    `--progress: expected auto, bar, none, json, json=FD or json=FILE, got "${spec}"`,
    ExitCode.USAGE,
  )
}

/** Opens the sink of a json progress mode: a number is an open fd, anything else a file (appended to). */
export function openLineSink(target: string): LineSink {
  if (/^\d+$/.test(target)) {
    const fd = Number(target)
    return { fd, write: (l) => writeAll(fd, l), close: () => {} }
  }
  let fd: number
  try {
    fd = openSync(target, 'a')
  } catch (e) {
    throw new CliError(`--progress json=${target}: ${(e as NodeJS.ErrnoException).code ?? e}`, ExitCode.IO)
  }
  return {
    fd,
    write: (l) => writeAll(fd, l),
    close: () => closeSync(fd),
  }
}

function writeAll(fd: number, text: string): void {
  const b = Buffer.from(text)
  let off = 0
  while (off < b.length) {
    try {
      off += writeSync(fd, b, off)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue
      throw e
    }
  }
}

export interface RunObserverOptions {
  command: ObservedCommand
  /** Migration / session id (label of the metrics, field of the progress lines). */
  id?: string
  /** `--progress json` destination. */
  progress?: LineSink
  /** Totals line interval, ms (default 1000). */
  intervalMs?: number
  metrics?: MigrationMetrics
  /** Metrics role (default: the command, when it is one). */
  role?: MigrationRole
  /** Check each progress line against the schema before writing it (default true: lines are rare). */
  validate?: boolean
  /** The sink is shared by several observers (receive, proxy): `end` does not close it. */
  sharedSink?: boolean
  now?: () => number
}

/** Exit status of a run, for the `end` line and the metrics. */
export interface RunEnd {
  exitCode: number
  error?: string
  interrupted?: boolean
}

export class RunObserver {
  private source: ObservedFilter | undefined
  private readonly t0: number
  private readonly now: () => number
  private timer: NodeJS.Timeout | undefined
  private last = { ms: 0, bytesIn: 0, bytesOut: 0 }
  private linkRate = 0
  private ended = false
  private metricsId: string | undefined
  private readonly role: MigrationRole | undefined
  private invalidReported = false

  /** Give this to the encoder or the decoder (`passListener`). */
  readonly listener = {
    passStart: (pass: number) => {
      this.emit({ event: 'pass-start', ...this.base(), pass })
    },
    passEnd: (stats: PassStatsJson) => {
      this.emit({ event: 'pass-end', ...this.base(), stats: cleanPass(stats) })
      const passes = this.source?.passes() ?? [stats]
      this.emit({
        event: 'trend',
        ...this.base(),
        pass: stats.pass,
        linkRate: this.rateForTrend(),
        convergence: convergence(passes, this.rateForTrend()),
      })
    },
  }

  constructor(private readonly o: RunObserverOptions) {
    this.now = o.now ?? (() => performance.now())
    this.t0 = this.now()
    const r = o.role ?? o.command
    this.role = r === 'inspect' ? undefined : r
  }

  /** Starts the totals timer and the metrics series; emits `start`. */
  attach(source: ObservedFilter): void {
    this.source = source
    this.emit({ event: 'start', ...this.base(), pid: process.pid })
    if (this.o.metrics && this.role) {
      this.metricsId = this.o.metrics.migrationStarted(
        this.o.id ?? `${this.o.command}-${process.pid}`,
        this.role,
        () => this.sample(),
      )
    }
    if (this.o.progress) {
      this.timer = setInterval(() => this.tick(), this.o.intervalMs ?? 1000)
      this.timer.unref()
    }
  }

  /** A connection of this migration was resumed (send/receive): counted in the metrics. */
  resumed(): void {
    if (this.o.metrics && this.role && this.metricsId !== undefined)
      this.o.metrics.resumed(this.metricsId, this.role)
  }

  /** Emits `end`, closes the metrics series (ok = exit code 0). Idempotent. */
  end(e: RunEnd): void {
    if (this.ended) return
    this.ended = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    const s = this.source
    const c = s?.counters() ?? zeroCounters()
    if (this.o.metrics && this.role && this.metricsId !== undefined)
      this.o.metrics.migrationEnded(this.metricsId, this.role, e.exitCode === 0, this.sample())
    this.emit({
      event: 'end',
      ...this.base(),
      status: e.exitCode === 0 ? 'ok' : e.interrupted ? 'interrupted' : 'error',
      exitCode: e.exitCode,
      ...(e.error !== undefined ? { error: e.error } : {}),
      totals: totalsOf(c, s?.passes().length ?? 0, this.ms()),
    })
    if (!this.o.sharedSink) this.o.progress?.close()
  }

  /** The `--stats-json` document (call after the filter finished). */
  report(): StatsReport {
    const s = this.source
    const c = s?.counters() ?? zeroCounters()
    const passes = (s?.passes() ?? []).map(cleanPass)
    return {
      schema: 'xbzrle.stats',
      version: OBSERVE_SCHEMA_VERSION,
      command: this.o.command,
      passDetection: s?.passDetection ?? 'none',
      totals: totalsOf(c, passes.length, this.ms()),
      passes,
    }
  }

  private sample() {
    const s = this.source!
    const c = s.counters()
    const passes = s.passes()
    return {
      bytesIn: c.bytesIn,
      bytesOut: c.bytesOut,
      pages: { full: c.full, delta: c.delta, same: c.same, zero: c.zero, foreign: c.foreign, other: c.other },
      cacheHits: c.cacheHits,
      cacheMisses: c.cacheMisses,
      pass: s.pass(),
      passes: passes.length,
      lastPassBytesIn: passes.filter((p) => p.pages.total > 0).at(-1)?.bytesIn,
    }
  }

  private tick(): void {
    const s = this.source
    if (!s || this.ended) return
    const c = s.counters()
    const ms = this.ms()
    const dt = (ms - this.last.ms) / 1000
    this.linkRate = dt > 0 ? Math.max(0, (c.bytesOut - this.last.bytesOut) / dt) : 0
    const inRate = dt > 0 ? Math.max(0, (c.bytesIn - this.last.bytesIn) / dt) : 0
    this.last = { ms, bytesIn: c.bytesIn, bytesOut: c.bytesOut }
    this.emit({
      event: 'totals',
      ...this.base(),
      pass: s.pass(),
      totals: totalsOf(c, s.passes().length, ms),
      linkRate: this.linkRate,
      inRate,
    })
  }

  private rateForTrend(): number {
    if (this.linkRate > 0) return this.linkRate
    const c = this.source?.counters()
    const secs = this.ms() / 1000
    return c && secs > 0 ? c.bytesOut / secs : 0
  }

  private ms(): number {
    return Math.max(0, this.now() - this.t0)
  }

  private base() {
    return {
      v: OBSERVE_SCHEMA_VERSION as typeof OBSERVE_SCHEMA_VERSION,
      ms: this.ms(),
      command: this.o.command,
      ...(this.o.id !== undefined ? { id: this.o.id } : {}),
    }
  }

  private emit(ev: ProgressEvent): void {
    const sink = this.o.progress
    if (!sink) return
    if (this.o.validate !== false) {
      const r = ProgressEventSchema.safeParse(ev)
      if (!r.success && !this.invalidReported) {
        this.invalidReported = true
        process.stderr.write(
          `xbzrle: warning: progress event does not match its schema: ${r.error.message}\n`,
        )
      }
    }
    sink.write(`${JSON.stringify(ev)}\n`)
  }
}

/** A PassStats as JSON (drops an undefined hitRate). */
function cleanPass(p: PassStatsJson): PassStatsJson {
  const { hitRate, ...rest } = p
  return hitRate === undefined
    ? { ...rest, pages: { ...p.pages } }
    : { ...rest, hitRate, pages: { ...p.pages } }
}
