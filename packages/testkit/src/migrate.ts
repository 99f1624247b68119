/** Live migration between two QEMU processes: with your own URIs, or through `exec:` filter commands. */
import { join } from 'node:path'
import type { StartGuestOptions } from './guest-options.js'
import { type MigrationStats, migrationWaitOptions } from './migration-stats.js'
import { QemuProcess, startGuest } from './qemu-process.js'
import { type FilterResult, mkfifo, shellQuote, wrapCommand, wrappedResult, wrappedStderr } from './shell.js'
import { removeTmpDir, tmpDir } from './tmp.js'

/** Options shared by migrateWithUris and migrateThrough. */
export interface MigrationRunOptions {
  source: QemuProcess
  /**
   * Destination: overrides for startGuest (default: the source's kernel/append/memMiB/machine), or an
   * already started QemuProcess that was started with incoming: 'defer'.
   */
  dest?: Partial<StartGuestOptions> | QemuProcess
  /** Migration capabilities set on both sides, e.g. { xbzrle: true }. */
  capabilities?: Record<string, boolean>
  /** Migration parameters set on the source, e.g. { 'max-bandwidth': 16 << 20 }. */
  parameters?: Record<string, unknown>
  /** Migration parameters set on the destination. */
  destParameters?: Record<string, unknown>
  /** See WaitForMigrationOptions. */
  forceConvergeAfterSyncs?: number
  forceConvergeAfterMs?: number
  convergeDowntimeMs?: number
  /** Timeout for the whole migration. Default 120000 ms. */
  timeoutMs?: number
}

/**
 * Options that make a live migration of the test guest iterate (several dirty-bitmap passes, pages sent again): a
 * 32 MiB/s bandwidth cap and a 1 ms downtime limit, convergence forced after `syncs` syncs; QEMU's own XBZRLE with a
 * 64 MiB cache when `xbzrle`. Spread them into the options of migrateThrough, migrateWithUris or captureMigration.
 */
export function iteratingMigration(o: {
  syncs: number
  xbzrle?: boolean
}): Pick<MigrationRunOptions, 'capabilities' | 'parameters' | 'forceConvergeAfterSyncs'> {
  const MiB = 1024 * 1024
  return {
    ...(o.xbzrle ? { capabilities: { xbzrle: true } } : {}),
    parameters: {
      'max-bandwidth': 32 * MiB,
      'downtime-limit': 1,
      ...(o.xbzrle ? { 'xbzrle-cache-size': 64 * MiB } : {}),
    },
    forceConvergeAfterSyncs: o.syncs,
  }
}

export interface MigrateWithUrisOptions extends MigrationRunOptions {
  /** URI for the destination's migrate-incoming, e.g. 'unix:/tmp/x/dst.sock' or 'exec:...'. */
  incomingUri: string
  /** URI for the source's migrate, e.g. 'unix:/tmp/x/src.sock' (a proxy of yours between the two). */
  uri: string
  /** Called after the destination listens and before the source starts (start a proxy here). */
  beforeMigrate?: (pair: { source: QemuProcess; dest: QemuProcess }) => Promise<void> | void
}

export interface MigrationRunResult {
  source: QemuProcess
  /** The destination, still paused (-S) after the incoming migration; call cont() to run it. */
  dest: QemuProcess
  /** Final query-migrate of the source. */
  stats: MigrationStats
  /** Final query-migrate of the destination. */
  destStats: MigrationStats
}

/** Start (or take) the destination for `source`: same kernel, command line, RAM, machine; -incoming defer -S. */
export async function startDestination(
  source: QemuProcess,
  overrides: Partial<StartGuestOptions> = {},
): Promise<QemuProcess> {
  return startGuest({
    kernel: source.options.kernel,
    append: source.options.append,
    memMiB: source.options.memMiB,
    tcgDirtyWorkaround: source.options.tcgDirtyWorkaround,
    machine: source.options.machine,
    extraArgs: source.options.extraArgs,
    name: 'dest',
    ...overrides,
    incoming: 'defer',
    paused: true,
  })
}

/**
 * Live-migrate `source` to a destination with explicit URIs: destination `migrate-incoming incomingUri`,
 * then `beforeMigrate`, then source `migrate uri`; waits until both sides report completed. Use it with
 * your own proxy between two unix sockets (libvirt/WebSocket adapters); migrateThrough covers exec: pipes.
 */
export async function migrateWithUris(options: MigrateWithUrisOptions): Promise<MigrationRunResult> {
  const { source } = options
  const timeoutMs = options.timeoutMs ?? 120_000
  const dest =
    options.dest instanceof QemuProcess ? options.dest : await startDestination(source, options.dest)
  if (options.capabilities) {
    await Promise.all([
      source.migrateSetCapabilities(options.capabilities),
      dest.migrateSetCapabilities(options.capabilities),
    ])
  }
  if (options.parameters) await source.migrateSetParameters(options.parameters)
  if (options.destParameters) await dest.migrateSetParameters(options.destParameters)
  await dest.migrateIncoming(options.incomingUri)
  await options.beforeMigrate?.({ source, dest })
  await source.migrate(options.uri)
  const [stats, destStats] = await Promise.all([
    source.waitForMigration(migrationWaitOptions(options, timeoutMs)),
    dest.waitForMigration({ timeoutMs }),
  ])
  return { source, dest, stats, destStats }
}

export interface MigrateThroughOptions extends MigrationRunOptions {
  /**
   * Shell command run by the source's `exec:` (/bin/sh -c, cwd and env of this process): reads the
   * migration stream on stdin, writes to stdout. Default 'cat'.
   */
  encode?: string
  /** Shell command run by the destination's `exec:`: reads stdin, writes the stream to stdout. Default 'cat'. */
  decode?: string
  /** Throw if encode/decode exit non-zero. Default true. */
  checkExit?: boolean
}

export interface MigrateThroughResult extends MigrationRunResult {
  encode: FilterResult
  decode: FilterResult
}

/**
 * Live-migrate `source` into a new (or given) destination through `exec:` commands on both sides joined by
 * a named pipe: source `migrate "exec:{ ENCODE ; } > fifo"`, destination `migrate-incoming
 * "exec:{ DECODE ; } < fifo"`. Waits for completion on both sides and for both commands to exit (QEMU
 * reports completed before its exec: child has finished). The destination stays paused (-S), so
 * compareGuestRam() is race-free; then cont() it.
 */
export async function migrateThrough(options: MigrateThroughOptions): Promise<MigrateThroughResult> {
  const dir = tmpDir('xbzrle-mig-')
  const fifo = join(dir, 'stream.fifo')
  mkfifo(fifo)
  try {
    const run = await migrateWithUris({
      ...options,
      incomingUri: `exec:${wrapCommand(options.decode ?? 'cat', `<${shellQuote(fifo)}`, dir, 'decode')}`,
      uri: `exec:${wrapCommand(options.encode ?? 'cat', `>${shellQuote(fifo)}`, dir, 'encode')}`,
    })
    const [encode, decode] = await Promise.all([wrappedResult(dir, 'encode'), wrappedResult(dir, 'decode')])
    if (options.checkExit !== false && (encode.exitCode !== 0 || decode.exitCode !== 0)) {
      throw new Error(`filter failed: encode exit ${encode.exitCode}, decode exit ${decode.exitCode}`)
    }
    return { ...run, encode, decode }
  } catch (e) {
    if (e instanceof Error) {
      e.message += `\nencode stderr: ${await wrappedStderr(dir, 'encode')}\ndecode stderr: ${await wrappedStderr(dir, 'decode')}`
    }
    throw e
  } finally {
    removeTmpDir(dir)
  }
}
