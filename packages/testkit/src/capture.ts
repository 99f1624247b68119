/** Capture a guest's raw migration stream into a file (`exec:cat > FILE`, optionally through a filter). */
import { rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { GuestWorkload } from './guest.js'
import type { StartGuestOptions } from './guest-options.js'
import { iteratingMigration } from './migrate.js'
import { type MigrationStats, migrationWaitOptions } from './migration-stats.js'
import { type QemuProcess, startGuest } from './qemu-process.js'
import { shellQuote, wrapCommand, wrappedResult } from './shell.js'
import { removeTmpDir, tmpDir } from './tmp.js'

export interface CaptureOptions extends StartGuestOptions {
  /** Migrate this running guest instead of starting one (it is left in postmigrate state, not closed). */
  guest?: QemuProcess
  /** Output file. Default: stream.mig in a new tmpDir() (removed at process exit / removeTmpDirs()). */
  out?: string
  /** Shell command the stream passes through before it is written (stdin → stdout). Default: none (cat). */
  filter?: string
  capabilities?: Record<string, boolean>
  parameters?: Record<string, unknown>
  /** Wait for this many guest passes before migrating (started guests only). Default 1. */
  warmupPasses?: number
  forceConvergeAfterSyncs?: number
  convergeDowntimeMs?: number
  timeoutMs?: number
}

export interface CaptureResult {
  path: string
  bytes: number
  stats: MigrationStats
}

/** Migrate a guest into a file with `exec:cat > FILE` and return the path and the stats. */
export async function captureMigration(options: CaptureOptions = {}): Promise<CaptureResult> {
  const out = options.out ?? join(tmpDir('xbzrle-capture-'), 'stream.mig')
  const own = options.guest === undefined
  const guest = options.guest ?? (await startGuest(options))
  const dir = tmpDir('xbzrle-cap-')
  try {
    if (own) {
      await guest.waitForReady(60_000)
      const warm = options.warmupPasses ?? 1
      if (warm > 0) await guest.waitForPass(warm, 60_000)
    }
    if (options.capabilities) await guest.migrateSetCapabilities(options.capabilities)
    if (options.parameters) await guest.migrateSetParameters(options.parameters)
    const body = options.filter ?? 'cat'
    await rm(out, { force: true })
    await guest.migrate(`exec:${wrapCommand(body, `>${shellQuote(out)}`, dir, 'capture')}`)
    const stats = await guest.waitForMigration(migrationWaitOptions(options, options.timeoutMs ?? 120_000))
    // QEMU reports `completed` before the exec: child has finished writing: wait for it.
    const capture = await wrappedResult(dir, 'capture')
    if (capture.exitCode !== 0) {
      throw new Error(`capture command exited ${capture.exitCode}: ${capture.stderr}`)
    }
    return { path: out, bytes: (await stat(out)).size, stats }
  } finally {
    removeTmpDir(dir)
    if (own) await guest.close({ graceful: false })
  }
}

/**
 * captureMigration of a migration that iterates (iteratingMigration): a 48 MiB guest dirtying its 24 MiB under
 * `workload` (4000 pages every 200 ms). The stream of a real live migration with re-sent pages.
 */
export function captureIteratingMigration(o: {
  workload: GuestWorkload
  xbzrle?: boolean
  syncs: number
}): Promise<CaptureResult> {
  return captureMigration({
    memMiB: 48,
    append: { workload: o.workload, mem: 24, rate: 4000, period: 200 },
    ...iteratingMigration(o),
  })
}

/**
 * A save of a running guest, as `virsh save` writes it (paused, then migrated to `out` in one pass); the guest then
 * runs on. Returns the capture.
 */
export async function saveRunningGuest(guest: QemuProcess, out: string): Promise<CaptureResult> {
  await guest.stop()
  const saved = await captureMigration({ guest, out })
  await guest.cont()
  return saved
}

/** Capture a raw migration stream of the test guest into a file; returns the path. */
export async function captureMigrationStream(options: CaptureOptions = {}): Promise<string> {
  return (await captureMigration(options)).path
}
