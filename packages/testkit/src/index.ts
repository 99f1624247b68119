/**
 * @xbzrle/testkit: a deterministic multiboot test guest, a real-QEMU (TCG) harness for live-migration tests and
 * benchmarks, and the test support every package shares (gates, waiting, ports, libvirt daemons). See README.md.
 *
 * Naming: `require*(ctx, …)` gates a test (true, or a failure under CI=true, or a visible skip); `has*` / `find*`
 * only look; `waitFor*` polls until a condition holds or a timeout names what was awaited; `start*` returns
 * something to `stop()`/`close()`.
 */
import { killAllGuests } from './qemu-process.js'
import { removeTmpDirs } from './tmp.js'

export {
  type CaptureOptions,
  type CaptureResult,
  captureIteratingMigration,
  captureMigration,
  captureMigrationStream,
  saveRunningGuest,
} from './capture.js'
export {
  buildTestGuest,
  GUEST_CFLAGS,
  GUEST_SOURCES,
  type GuestConfig,
  type GuestWorkload,
  guestCacheDir,
  guestCommandLine,
} from './guest.js'
export {
  qemuArgs,
  type ResolvedGuestOptions,
  resolveGuestOptions,
  type StartGuestOptions,
} from './guest-options.js'
export {
  type LibvirtDaemons,
  type NamespaceLibvirt,
  type NamespaceLibvirtOptions,
  requireLibvirt,
  SYSTEM_LIBVIRT_URI,
  startHostLibvirt,
  startLibvirtInNamespace,
  stopDaemon,
  testGuestDomainXml,
  unixSocketAnswers,
  virsh,
  waitForLibvirt,
  writeTcgDirtyWorkaroundEmulator,
} from './libvirt.js'
export {
  iteratingMigration,
  type MigrateThroughOptions,
  type MigrateThroughResult,
  type MigrateWithUrisOptions,
  type MigrationRunOptions,
  type MigrationRunResult,
  migrateThrough,
  migrateWithUris,
  startDestination,
} from './migrate.js'
export {
  type MigrationStats,
  migrationWaitOptions,
  toMigrationStats,
  type WaitForMigrationOptions,
  type XbzrleCacheStats,
} from './migration-stats.js'
export { freePort, makeCert, type TestCert } from './net.js'
export { killAllGuests, QemuProcess, startGuest, startRunningGuest } from './qemu-process.js'
export { QmpClient, QmpError, type QmpEvent } from './qmp.js'
export { compareGuestRam, firstDifference } from './ram.js'
export { lastPassInFile, type PassLine, parsePassLines, waitForPassInFile } from './serial.js'
export { type FilterResult, mkfifo, shellQuote } from './shell.js'
export { removeTmpDir, removeTmpDirs, tmpDir } from './tmp.js'
export {
  findTool,
  hasQemu,
  hasTool,
  missingQemuTools,
  qemuBinary,
  requireQemu,
  requireTool,
  type SkipContext,
  skipOrFail,
} from './tools.js'
export { sleep, type WaitForOptions, waitFor } from './wait.js'

/** Kill every guest and remove every temp dir (for afterAll / end of a benchmark). */
export async function cleanupTestkit(): Promise<void> {
  await killAllGuests()
  await removeTmpDirs()
}

/**
 * Register cleanup with the test framework without this package importing it:
 * `installTestkitHooks({ afterEach, afterAll })` from vitest. Guests are killed after each test,
 * temp dirs removed after the file.
 */
export function installTestkitHooks(hooks: {
  afterEach: (fn: () => Promise<void>) => void
  afterAll: (fn: () => Promise<void>) => void
}): void {
  hooks.afterEach(killAllGuests)
  hooks.afterAll(cleanupTestkit)
}
