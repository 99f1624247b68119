/**
 * @xbzrle/testkit: a deterministic multiboot test guest and a real-QEMU (TCG) harness for live-migration
 * tests and benchmarks. See README.md.
 */
import { killAllGuests } from './qemu.js'
import { removeTmpDirs } from './tmp.js'

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
  type CaptureOptions,
  type CaptureResult,
  captureMigration,
  captureMigrationStream,
  compareGuestRam,
  type FilterResult,
  firstDifference,
  hasQemu,
  killAllGuests,
  type MigrateThroughOptions,
  type MigrateThroughResult,
  type MigrateWithUrisOptions,
  type MigrationRunOptions,
  type MigrationRunResult,
  type MigrationStats,
  migrateThrough,
  migrateWithUris,
  missingQemuTools,
  mkfifo,
  type PassLine,
  parsePassLines,
  QemuProcess,
  qemuBinary,
  type ResolvedGuestOptions,
  requireQemu,
  type SkipContext,
  type StartGuestOptions,
  shellQuote,
  startDestination,
  startGuest,
  toMigrationStats,
  type WaitForMigrationOptions,
  type XbzrleCacheStats,
} from './qemu.js'
export { QmpClient, QmpError, type QmpEvent } from './qmp.js'
export { removeTmpDir, removeTmpDirs, tmpDir } from './tmp.js'

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
