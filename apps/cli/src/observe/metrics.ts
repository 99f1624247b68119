/**
 * Prometheus metrics of xbzrle migrations (prom-client), and the HTTP endpoint behind `--metrics-listen`.
 *
 * Nothing here runs per page: a migration registers a sampler (a function returning its cumulative counters),
 * and the values are read when Prometheus scrapes (`refresh()`), or pushed by the caller with `update()`.
 * Per-migration series carry `id` (the migration / session id, sanitised; never a token) and `role`; finished
 * migrations keep their series for a while (at most `maxFinished`, at most `finishedTtlMs`) and then age out,
 * so label cardinality stays bounded however many migrations a long-running receiver sees. Totals over all
 * migrations (the `xbzrle_*_total` counters) never age out.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Registry } from 'prom-client'
import { CliError, ExitCode } from '../errors.js'

export type MigrationRole = 'encode' | 'decode' | 'send' | 'receive' | 'proxy-source' | 'proxy-destination'

export const PAGE_KINDS = ['full', 'delta', 'same', 'zero', 'foreign', 'other'] as const
export type PageKindName = (typeof PAGE_KINDS)[number]

/** Cumulative figures of one migration (all optional but bytes: give what you have). */
export interface MigrationSample {
  bytesIn: number
  bytesOut: number
  pages?: Partial<Record<PageKindName, number>>
  cacheHits?: number
  cacheMisses?: number
  /** The pass in progress (1-based). */
  pass?: number
  /** Finished passes. */
  passes?: number
  /** QEMU bytes of the last finished pass (the dirty trend). */
  lastPassBytesIn?: number
}

export interface MigrationMetricsOptions {
  /** Finished migrations whose series are kept (default 20). */
  maxFinished?: number
  /** How long a finished migration's series are kept, ms (default 10 minutes). */
  finishedTtlMs?: number
  /** Clock in ms (tests). */
  now?: () => number
}

const STATE_RUNNING = 0
const STATE_COMPLETED = 1
const STATE_FAILED = 2

interface Entry {
  id: string
  role: MigrationRole
  sampler?: () => MigrationSample
  last: MigrationSample
  /** For the link rate. */
  rateAt: number
  rateBytesOut: number
  linkRate: number
  resumes: number
  endedAt?: number
}

/** Label-safe migration id: [A-Za-z0-9._:-], at most 64 characters; anything else is replaced. */
export function metricId(id: string): string {
  const s = id.replace(/[^A-Za-z0-9._:-]/g, '_').slice(0, 64)
  return s.length > 0 ? s : '_'
}

export class MigrationMetrics {
  readonly registry = new Registry()
  private readonly entries = new Map<string, Entry>()
  private readonly maxFinished: number
  private readonly ttl: number
  private readonly now: () => number
  private readonly g: ReturnType<MigrationMetrics['makeMetrics']>
  private scrapeWaiters: Array<{ after: number; resolve: () => void }> = []

  constructor(options: MigrationMetricsOptions = {}) {
    this.maxFinished = options.maxFinished ?? 20
    this.ttl = options.finishedTtlMs ?? 10 * 60_000
    this.now = options.now ?? (() => Date.now())
    this.g = this.makeMetrics()
  }

  private makeMetrics() {
    const r = [this.registry]
    const per = ['id', 'role'] as const
    return {
      inFlight: new Gauge({
        name: 'xbzrle_migrations_in_flight',
        help: 'Migrations running now',
        labelNames: ['role'],
        registers: r,
      }),
      completed: new Counter({
        name: 'xbzrle_migrations_completed_total',
        help: 'Migrations that completed',
        labelNames: ['role'],
        registers: r,
      }),
      failed: new Counter({
        name: 'xbzrle_migrations_failed_total',
        help: 'Migrations that failed or were interrupted',
        labelNames: ['role'],
        registers: r,
      }),
      bytesInTotal: new Counter({
        name: 'xbzrle_bytes_in_total',
        help: 'Bytes read by all migrations (encoder: QEMU bytes; decoder: xbzrle bytes)',
        labelNames: ['role'],
        registers: r,
      }),
      bytesOutTotal: new Counter({
        name: 'xbzrle_bytes_out_total',
        help: 'Bytes written by all migrations',
        labelNames: ['role'],
        registers: r,
      }),
      pagesTotal: new Counter({
        name: 'xbzrle_pages_total',
        help: 'Page records of all migrations by kind (full, delta, same, zero, foreign, other)',
        labelNames: ['role', 'kind'],
        registers: r,
      }),
      refused: new Counter({
        name: 'xbzrle_refused_connections_total',
        help: 'Connections refused, by reason',
        labelNames: ['role', 'reason'],
        registers: r,
      }),
      resumesTotal: new Counter({
        name: 'xbzrle_resumes_total',
        help: 'Resumed connections of all migrations',
        labelNames: ['role'],
        registers: r,
      }),
      bytesIn: new Gauge({
        name: 'xbzrle_migration_bytes_in',
        help: 'Bytes read by this migration so far',
        labelNames: per,
        registers: r,
      }),
      bytesOut: new Gauge({
        name: 'xbzrle_migration_bytes_out',
        help: 'Bytes written by this migration so far',
        labelNames: per,
        registers: r,
      }),
      ratio: new Gauge({
        name: 'xbzrle_migration_ratio',
        help: 'Bytes out / bytes in of this migration so far',
        labelNames: per,
        registers: r,
      }),
      pages: new Gauge({
        name: 'xbzrle_migration_pages',
        help: 'Page records of this migration by kind',
        labelNames: [...per, 'kind'],
        registers: r,
      }),
      hitRate: new Gauge({
        name: 'xbzrle_migration_cache_hit_ratio',
        help: 'Cache hits / (hits + misses) of this migration',
        labelNames: per,
        registers: r,
      }),
      pass: new Gauge({
        name: 'xbzrle_migration_pass',
        help: 'The pass in progress (1-based; QEMU dirty-sync iteration)',
        labelNames: per,
        registers: r,
      }),
      passes: new Gauge({
        name: 'xbzrle_migration_passes',
        help: 'Finished passes of this migration',
        labelNames: per,
        registers: r,
      }),
      lastPassBytes: new Gauge({
        name: 'xbzrle_migration_last_pass_bytes_in',
        help: 'Bytes read in the last finished pass (the dirty trend: shrinking passes converge)',
        labelNames: per,
        registers: r,
      }),
      linkRate: new Gauge({
        name: 'xbzrle_migration_link_rate_bytes_per_second',
        help: 'Bytes out per second, measured between samples',
        labelNames: per,
        registers: r,
      }),
      resumes: new Gauge({
        name: 'xbzrle_migration_resumes',
        help: 'Resumed connections of this migration',
        labelNames: per,
        registers: r,
      }),
      state: new Gauge({
        name: 'xbzrle_migration_state',
        help: 'State of this migration: 0 running, 1 completed, 2 failed',
        labelNames: per,
        registers: r,
      }),
      started: new Gauge({
        name: 'xbzrle_migration_start_time_seconds',
        help: 'Start of this migration, Unix time',
        labelNames: per,
        registers: r,
      }),
    }
  }

  /**
   * A migration begins. `sampler`, if given, is read at every scrape; otherwise call `update`.
   * Returns the label-safe id used in the series.
   */
  migrationStarted(id: string, role: MigrationRole, sampler?: () => MigrationSample): string {
    const mid = metricId(id)
    const key = `${role}\0${mid}`
    const old = this.entries.get(key)
    if (old && old.endedAt === undefined) throw new Error(`metrics: migration ${mid} (${role}) is running`)
    if (old) this.remove(old)
    const now = this.now()
    this.entries.set(key, {
      id: mid,
      role,
      sampler,
      last: { bytesIn: 0, bytesOut: 0 },
      rateAt: now,
      rateBytesOut: 0,
      linkRate: 0,
      resumes: 0,
    })
    const l = { id: mid, role }
    this.g.inFlight.inc({ role })
    this.g.state.set(l, STATE_RUNNING)
    this.g.started.set(l, now / 1000)
    this.g.resumes.set(l, 0)
    this.g.passes.set(l, 0)
    this.g.pass.set(l, 1)
    this.apply(this.entries.get(key)!, { bytesIn: 0, bytesOut: 0 })
    return mid
  }

  /** New cumulative figures of a running migration (pushed; or use a sampler). */
  update(id: string, role: MigrationRole, sample: MigrationSample): void {
    const e = this.entries.get(`${role}\0${metricId(id)}`)
    if (!e || e.endedAt !== undefined) return
    this.apply(e, sample)
  }

  /** A connection of the migration was resumed. */
  resumed(id: string, role: MigrationRole): void {
    const e = this.entries.get(`${role}\0${metricId(id)}`)
    this.g.resumesTotal.inc({ role })
    if (!e) return
    e.resumes++
    this.g.resumes.set({ id: e.id, role }, e.resumes)
  }

  /** A connection was refused (bad token, bad id, busy, limits…): `reason` must come from a small fixed set. */
  refused(role: MigrationRole, reason: string): void {
    this.g.refused.inc({ role, reason: metricId(reason) })
  }

  /** The migration ended; `final` (or the sampler) gives its last figures. */
  migrationEnded(id: string, role: MigrationRole, ok: boolean, final?: MigrationSample): void {
    const e = this.entries.get(`${role}\0${metricId(id)}`)
    if (!e || e.endedAt !== undefined) return
    const s = final ?? e.sampler?.()
    if (s) this.apply(e, s, true)
    e.sampler = undefined
    e.endedAt = this.now()
    e.linkRate = 0
    const l = { id: e.id, role }
    this.g.linkRate.set(l, 0)
    this.g.state.set(l, ok ? STATE_COMPLETED : STATE_FAILED)
    this.g.inFlight.dec({ role })
    if (ok) this.g.completed.inc({ role })
    else this.g.failed.inc({ role })
    this.prune()
  }

  /** Reads every sampler and ages out old finished migrations (called before each scrape). */
  refresh(): void {
    for (const e of this.entries.values()) {
      if (e.endedAt === undefined && e.sampler) this.apply(e, e.sampler())
    }
    this.prune()
  }

  /**
   * The exposition text (what GET /metrics answers). Call `scraped(startedAt)` once it was delivered, so that
   * `waitForScrape` knows a scraper has the values of that moment.
   */
  async scrape(): Promise<{ text: string; startedAt: number }> {
    const startedAt = this.now()
    this.refresh()
    return { text: await this.registry.metrics(), startedAt }
  }

  /** A scrape that read the values at `startedAt` was delivered. */
  scraped(startedAt: number): void {
    const waiting = this.scrapeWaiters
    this.scrapeWaiters = []
    for (const w of waiting) {
      if (startedAt >= w.after) w.resolve()
      else this.scrapeWaiters.push(w)
    }
  }

  /** Resolves at the first scrape that starts now or later, or after `timeoutMs` (false then). */
  waitForScrape(timeoutMs: number): Promise<boolean> {
    const after = this.now()
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.scrapeWaiters = this.scrapeWaiters.filter((w) => w !== waiter)
        resolve(false)
      }, timeoutMs)
      const waiter = {
        after,
        resolve: () => {
          clearTimeout(timer)
          resolve(true)
        },
      }
      this.scrapeWaiters.push(waiter)
    })
  }

  /** Ids of the migrations that have series now (running and kept finished ones). */
  get ids(): string[] {
    return [...this.entries.values()].map((e) => e.id)
  }

  private apply(e: Entry, s: MigrationSample, final = false): void {
    const l = { id: e.id, role: e.role }
    const role = { role: e.role }
    const prev = e.last
    const dIn = s.bytesIn - prev.bytesIn
    const dOut = s.bytesOut - prev.bytesOut
    if (dIn > 0) this.g.bytesInTotal.inc(role, dIn)
    if (dOut > 0) this.g.bytesOutTotal.inc(role, dOut)
    this.g.bytesIn.set(l, s.bytesIn)
    this.g.bytesOut.set(l, s.bytesOut)
    this.g.ratio.set(l, s.bytesIn > 0 ? s.bytesOut / s.bytesIn : 0)
    if (s.pages) {
      for (const k of PAGE_KINDS) {
        const v = s.pages[k] ?? 0
        const d = v - (prev.pages?.[k] ?? 0)
        if (d > 0) this.g.pagesTotal.inc({ role: e.role, kind: k }, d)
        this.g.pages.set({ ...l, kind: k }, v)
      }
    }
    if (s.cacheHits !== undefined && s.cacheMisses !== undefined && s.cacheHits + s.cacheMisses > 0)
      this.g.hitRate.set(l, s.cacheHits / (s.cacheHits + s.cacheMisses))
    if (s.pass !== undefined) this.g.pass.set(l, s.pass)
    if (s.passes !== undefined) this.g.passes.set(l, s.passes)
    if (s.lastPassBytesIn !== undefined) this.g.lastPassBytes.set(l, s.lastPassBytesIn)
    const now = this.now()
    const dt = now - e.rateAt
    if (!final && dt >= 500) {
      e.linkRate = ((s.bytesOut - e.rateBytesOut) * 1000) / dt
      e.rateAt = now
      e.rateBytesOut = s.bytesOut
      this.g.linkRate.set(l, e.linkRate)
    } else if (!final && dt >= 0 && e.rateBytesOut === 0 && s.bytesOut === 0) {
      this.g.linkRate.set(l, 0)
    }
    e.last = { ...s, pages: s.pages ? { ...s.pages } : prev.pages }
  }

  private prune(): void {
    const now = this.now()
    const finished = [...this.entries.values()]
      .filter((e) => e.endedAt !== undefined)
      .sort((a, b) => a.endedAt! - b.endedAt!)
    const excess = finished.length - this.maxFinished
    finished.forEach((e, i) => {
      if (i < excess || now - e.endedAt! > this.ttl) this.remove(e)
    })
  }

  private remove(e: Entry): void {
    this.entries.delete(`${e.role}\0${e.id}`)
    const l = { id: e.id, role: e.role }
    for (const m of [
      this.g.bytesIn,
      this.g.bytesOut,
      this.g.ratio,
      this.g.hitRate,
      this.g.pass,
      this.g.passes,
      this.g.lastPassBytes,
      this.g.linkRate,
      this.g.resumes,
      this.g.state,
      this.g.started,
    ]) {
      m.remove(l)
    }
    for (const k of PAGE_KINDS) this.g.pages.remove({ ...l, kind: k })
  }
}

export interface MetricsEndpoint {
  host: string
  port: number
  /** http://HOST:PORT/metrics */
  url: string
  close(): Promise<void>
}

/** True for 127.0.0.0/8, ::1, localhost (and IPv4-mapped loopback). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (h === 'localhost' || h === '::1') return true
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)
}

/** `HOST:PORT`, `[v6]:PORT` or a bare `PORT` (loopback). */
export function parseListen(spec: string): { host: string; port: number } {
  let host = '127.0.0.1'
  let portText = spec
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(spec)
  if (m) {
    host = m[1] ?? m[2] ?? ''
    portText = m[3]!
    if (host === '') host = '127.0.0.1'
  }
  const port = Number(portText)
  if (!/^\d+$/.test(portText) || port > 65535)
    throw new CliError(`--metrics-listen: expected HOST:PORT or PORT, got "${spec}"`, ExitCode.USAGE)
  return { host, port }
}

/**
 * Serves `GET /metrics` for `metrics` on HOST:PORT. A non-loopback address is refused unless `allowPublic`:
 * the series carry migration ids and traffic figures, which are not for everyone.
 */
export async function startMetricsServer(
  metrics: MigrationMetrics,
  listen: string,
  options: { allowPublic?: boolean } = {},
): Promise<MetricsEndpoint> {
  const { host, port } = parseListen(listen)
  if (!isLoopbackHost(host) && !options.allowPublic) {
    throw new CliError(
      `--metrics-listen ${listen}: not a loopback address; add --metrics-listen-public to serve metrics on it`,
      ExitCode.USAGE,
    )
  }
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path !== '/metrics') {
      res.writeHead(path === '/' ? 200 : 404, { 'content-type': 'text/plain' })
      res.end(path === '/' ? 'xbzrle metrics: /metrics\n' : 'not found\n')
      return
    }
    metrics.scrape().then(
      ({ text, startedAt }) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType })
        res.end(req.method === 'HEAD' ? undefined : text, () => metrics.scraped(startedAt))
      },
      (e: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' })
        res.end(`${e instanceof Error ? e.message : String(e)}\n`)
      },
    )
  })
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new CliError(`--metrics-listen ${listen}: ${e.code ?? e.message}`, ExitCode.IO)),
    )
    server.listen(port, host, () => resolve())
  })
  server.unref()
  const addr = server.address() as AddressInfo
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  return {
    host: addr.address,
    port: addr.port,
    url: `http://${shown}:${addr.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
