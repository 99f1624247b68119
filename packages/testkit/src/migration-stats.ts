/** query-migrate replies as typed stats. */

export interface XbzrleCacheStats {
  cacheSize: number
  bytes: number
  /** Pages sent as XBZRLE (cache hits that were encoded). */
  pages: number
  cacheMiss: number
  cacheMissRate: number
  encodingRate?: number
  overflow: number
}

/** Summary of a query-migrate result (fields QEMU did not report are undefined). */
export interface MigrationStats {
  status: string
  totalTimeMs?: number
  downtimeMs?: number
  setupTimeMs?: number
  expectedDowntimeMs?: number
  ramTransferred?: number
  ramTotal?: number
  ramRemaining?: number
  normalPages?: number
  duplicatePages?: number
  dirtySyncCount?: number
  mbps?: number
  xbzrle?: XbzrleCacheStats
  /** Set by waitForMigration when it raised downtime-limit (forceConvergeAfterSyncs / forceConvergeAfterMs). */
  forced?: boolean
  errorDesc?: string
  /** The raw query-migrate reply. */
  raw: Record<string, unknown>
}

export interface WaitForMigrationOptions {
  /** Default 120000 ms. */
  timeoutMs?: number
  /** Poll interval. Default 100 ms. */
  pollMs?: number
  /**
   * Once `dirty-sync-count` reaches this number, raise `downtime-limit` to `convergeDowntimeMs` so the
   * migration completes. Combine with a tiny downtime-limit to get a fixed number of passes.
   */
  forceConvergeAfterSyncs?: number
  /**
   * The same once this many ms have passed since waitForMigration started: a migration that cannot converge is
   * paused after a fixed time whatever its pace of dirty syncs (a fast-iterating setup reaches a sync count much
   * sooner than a slow one).
   */
  forceConvergeAfterMs?: number
  /** downtime-limit used by forceConvergeAfterSyncs and forceConvergeAfterMs. Default 60000 ms. */
  convergeDowntimeMs?: number
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined
}

/** Convert a raw query-migrate reply into MigrationStats. */
export function toMigrationStats(raw: Record<string, unknown>): MigrationStats {
  const ram = (raw.ram ?? {}) as Record<string, unknown>
  const x = raw['xbzrle-cache'] as Record<string, unknown> | undefined
  const stats: MigrationStats = {
    status: typeof raw.status === 'string' ? raw.status : 'none',
    totalTimeMs: num(raw['total-time']),
    downtimeMs: num(raw.downtime),
    setupTimeMs: num(raw['setup-time']),
    expectedDowntimeMs: num(raw['expected-downtime']),
    ramTransferred: num(ram.transferred),
    ramTotal: num(ram.total),
    ramRemaining: num(ram.remaining),
    normalPages: num(ram.normal),
    duplicatePages: num(ram.duplicate),
    dirtySyncCount: num(ram['dirty-sync-count']),
    mbps: num(ram.mbps),
    errorDesc: typeof raw['error-desc'] === 'string' ? raw['error-desc'] : undefined,
    raw,
  }
  if (x) {
    stats.xbzrle = {
      cacheSize: num(x['cache-size']) ?? 0,
      bytes: num(x.bytes) ?? 0,
      pages: num(x.pages) ?? 0,
      cacheMiss: num(x['cache-miss']) ?? 0,
      cacheMissRate: num(x['cache-miss-rate']) ?? 0,
      encodingRate: num(x['encoding-rate']),
      overflow: num(x.overflow) ?? 0,
    }
  }
  return stats
}

/** WaitForMigrationOptions from a run's options (forceConvergeAfterSyncs, convergeDowntimeMs) and a timeout. */
export function migrationWaitOptions(
  run: { forceConvergeAfterSyncs?: number; forceConvergeAfterMs?: number; convergeDowntimeMs?: number },
  timeoutMs: number,
): WaitForMigrationOptions {
  const wait: WaitForMigrationOptions = { timeoutMs }
  if (run.forceConvergeAfterSyncs !== undefined) wait.forceConvergeAfterSyncs = run.forceConvergeAfterSyncs
  if (run.forceConvergeAfterMs !== undefined) wait.forceConvergeAfterMs = run.forceConvergeAfterMs
  if (run.convergeDowntimeMs !== undefined) wait.convergeDowntimeMs = run.convergeDowntimeMs
  return wait
}
