import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { open, readFile, rm, stat } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { buildTestGuest, type GuestConfig, guestCommandLine } from './guest.js'
import { QmpClient, type QmpEvent } from './qmp.js'
import { removeTmpDir, tmpDir } from './tmp.js'

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------------------
// Availability

/** QEMU binary used by the harness (override with XBZRLE_QEMU). */
export function qemuBinary(): string {
  return process.env.XBZRLE_QEMU ?? 'qemu-system-x86_64'
}

function findExecutable(name: string): string | undefined {
  if (name.includes('/')) {
    try {
      accessSync(name, constants.X_OK)
      return name
    } catch {
      return undefined
    }
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const p = join(dir, name)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // keep looking
    }
  }
  return undefined
}

/** True if qemu-system-x86_64 (or $XBZRLE_QEMU) is on PATH. */
export function hasQemu(): boolean {
  return findExecutable(qemuBinary()) !== undefined
}

/** What a real-QEMU test needs that is missing on this machine (empty when everything is there). */
export function missingQemuTools(): string[] {
  const missing: string[] = []
  if (!hasQemu()) missing.push(qemuBinary())
  if (!findExecutable('gcc')) missing.push('gcc')
  return missing
}

/** The part of a vitest TestContext that requireQemu uses. */
export interface SkipContext {
  skip: (note?: string) => void
}

/**
 * Gate for real-QEMU tests. Returns true when QEMU and gcc are available. When they are missing:
 * with CI=true it throws (the test fails, never silently skips); otherwise it calls `ctx.skip(message)`
 * if a test context is given, and returns false, printing a visible warning.
 */
export function requireQemu(ctx?: SkipContext): boolean {
  const missing = missingQemuTools()
  if (missing.length === 0) return true
  const message = `real-QEMU test needs ${missing.join(' and ')} (apt-get install qemu-system-x86 qemu-utils gcc)`
  if (process.env.CI === 'true') throw new Error(`${message}; CI=true, so this is a failure, not a skip`)
  console.warn(`[@xbzrle/testkit] SKIP: ${message}`)
  ctx?.skip(message)
  return false
}

// ---------------------------------------------------------------------------------------------------------
// Types

export interface StartGuestOptions {
  /** Kernel ELF; default: the test guest from buildTestGuest(). */
  kernel?: string
  /** Guest command line (string for -append, or a GuestConfig). Default: the guest's defaults. */
  append?: string | GuestConfig
  /** Guest RAM in MiB. Default 64. */
  memMiB?: number
  /**
   * Add 8 KiB to the RAM size (`-m <memMiB*1024+8>K`). Default true. QEMU 7.2 under TCG loses dirty pages
   * during live migration when the RAM block length is a multiple of 256 KiB: the fast dirty-bitmap sync
   * path clears the migration bits without re-arming TCG's TLB_NOTDIRTY, so writes through cached TLB
   * entries go unrecorded (newer QEMU calls cpu_physical_memory_dirty_bits_cleared() there). An odd size
   * forces the per-page slow path, which does reset the TLB. Without this, RAM after migration differs.
   */
  tcgDirtyWorkaround?: boolean
  /** `-incoming` value, e.g. 'defer', 'exec:cat < fifo', 'unix:/path'. */
  incoming?: string
  /** Start with -S (CPU stopped). Default: true when `incoming` is set, else false. */
  paused?: boolean
  /** Machine type. Default 'pc'. */
  machine?: string
  /** Extra QEMU arguments appended at the end. */
  extraArgs?: string[]
  /** Where the guest's COM1 goes. Default: serial.log in the process's temp dir. */
  serialFile?: string
  /** Label used in error messages and `-name`. */
  name?: string
  /** Timeout for QEMU to come up (QMP ready). Default 15000 ms. */
  startTimeoutMs?: number
}

/** Options after defaults were applied (kept on the process so a destination can mirror the source). */
export interface ResolvedGuestOptions {
  kernel: string
  append: string
  memMiB: number
  tcgDirtyWorkaround: boolean
  /** Actual guest RAM size in bytes (memMiB MiB, plus 8 KiB with tcgDirtyWorkaround). */
  ramBytes: number
  machine: string
  extraArgs: string[]
}

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
  /** downtime-limit used by forceConvergeAfterSyncs. Default 60000 ms. */
  convergeDowntimeMs?: number
}

export interface PassLine {
  pass: number
  checksum: string
  memsum?: string
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

// ---------------------------------------------------------------------------------------------------------
// Process registry: nothing outlives the test process

const live = new Set<QemuProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const q of live) q.killSync()
  })
}

/** Kill and clean up every QEMU started by startGuest() that is still alive. Use in afterEach/afterAll. */
export async function killAllGuests(): Promise<void> {
  await Promise.all([...live].map((q) => q.close({ graceful: false })))
}

// ---------------------------------------------------------------------------------------------------------
// QemuProcess

const SUPERVISOR = [
  'exec 3<&0',
  '"$@" </dev/null 3<&- &',
  'q=$!',
  '( read _ <&3; rm -rf "$XBZRLE_TESTKIT_DIR"; kill -KILL 0 ) 2>/dev/null &',
  'exec 3<&-',
  'wait $q',
  'exit $?',
].join('\n')

/** A running QEMU with a QMP connection, its serial log and its temp dir. Close it with close(). */
export class QemuProcess {
  /** pid of the supervising sh, which is also the process group id of QEMU and its exec: children. */
  readonly pid: number
  /** Temp dir holding qmp.sock and serial.log; removed on close(). */
  readonly dir: string
  readonly qmpPath: string
  readonly serialPath: string
  readonly args: readonly string[]
  readonly name: string
  readonly options: ResolvedGuestOptions
  /** Resolves when the QEMU process exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  private stderrBuf = ''
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined
  private qmpClient: QmpClient | undefined
  private closing: Promise<void> | undefined

  private constructor(
    private readonly child: ChildProcess,
    init: {
      dir: string
      qmpPath: string
      serialPath: string
      args: string[]
      name: string
      options: ResolvedGuestOptions
    },
  ) {
    this.pid = child.pid ?? -1
    this.dir = init.dir
    this.qmpPath = init.qmpPath
    this.serialPath = init.serialPath
    this.args = init.args
    this.name = init.name
    this.options = init.options
    const append = (chunk: Buffer) => {
      this.stderrBuf += chunk.toString('utf8')
      if (this.stderrBuf.length > 64 * 1024) this.stderrBuf = this.stderrBuf.slice(-32 * 1024)
    }
    child.stdout?.on('data', append)
    child.stderr?.on('data', append)
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal }
        resolve(this.exitInfo)
      })
    })
  }

  /** @internal use startGuest() */
  static async start(opts: StartGuestOptions): Promise<QemuProcess> {
    const kernel = opts.kernel ?? (await buildTestGuest())
    const append = typeof opts.append === 'string' ? opts.append : guestCommandLine(opts.append ?? {})
    const memMiB = opts.memMiB ?? 64
    const tcgDirtyWorkaround = opts.tcgDirtyWorkaround ?? true
    const options: ResolvedGuestOptions = {
      kernel,
      append,
      memMiB,
      tcgDirtyWorkaround,
      ramBytes: memMiB * MiB + (tcgDirtyWorkaround ? 8192 : 0),
      machine: opts.machine ?? 'pc',
      extraArgs: [...(opts.extraArgs ?? [])],
    }
    const dir = tmpDir('xbzrle-qemu-')
    const qmpPath = join(dir, 'qmp.sock')
    const serialPath = opts.serialFile ?? join(dir, 'serial.log')
    const name = opts.name ?? (opts.incoming ? 'dest' : 'source')
    const paused = opts.paused ?? opts.incoming !== undefined
    const args = [
      '-name',
      `xbzrle-testkit-${name},process=xbzrle-testkit-${name}`,
      '-machine',
      options.machine,
      '-accel',
      'tcg',
      '-smp',
      '1',
      '-m',
      `${options.ramBytes / 1024}K`,
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-nic',
      'none',
      '-serial',
      `file:${serialPath}`,
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
      '-kernel',
      kernel,
      '-append',
      append,
      ...(opts.incoming !== undefined ? ['-incoming', opts.incoming] : []),
      ...(paused ? ['-S'] : []),
      ...options.extraArgs,
    ]
    installExitHook()
    if (!hasQemu()) throw new Error(`cannot start ${qemuBinary()}: not found on PATH`)
    // A small sh supervisor leads a new process group holding QEMU and its exec: children (sh, cat,
    // filters), so one group kill removes them all. Its watchdog reads our stdin pipe: when this Node
    // process dies in any way (even SIGKILL), the pipe closes and the watchdog kills the group.
    const child = spawn('/bin/sh', ['-c', SUPERVISOR, 'xbzrle-testkit-qemu', qemuBinary(), ...args], {
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, XBZRLE_TESTKIT_DIR: dir },
    })
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve))
    const q = new QemuProcess(child, { dir, qmpPath, serialPath, args, name, options })
    live.add(q)
    try {
      const alive = () =>
        q.exitInfo ? `QEMU (${name}) exited during startup (${q.describeExit()}):\n${q.stderr()}` : undefined
      q.qmpClient = await Promise.race([
        QmpClient.connect(qmpPath, { timeoutMs: opts.startTimeoutMs ?? 15_000, alive }),
        spawnError.then((e) => {
          throw new Error(`cannot start ${qemuBinary()}: ${e.message}`)
        }),
      ])
    } catch (e) {
      await q.close({ graceful: false })
      throw e
    }
    return q
  }

  /** The QMP client (for anything the helpers below do not cover). */
  get qmp(): QmpClient {
    if (!this.qmpClient) throw new Error('QMP not connected')
    return this.qmpClient
  }

  /** stdout + stderr of QEMU so far (last 32-64 KiB). */
  stderr(): string {
    return this.stderrBuf
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined
  }

  private describeExit(): string {
    const e = this.exitInfo
    if (!e) return 'running'
    return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`
  }

  private context(): string {
    return `[${this.name} pid ${this.pid}, ${this.describeExit()}]${this.stderrBuf ? `\nQEMU output:\n${this.stderrBuf.slice(-2000)}` : ''}`
  }

  // --- QMP helpers ---

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T> {
    return this.qmp.execute<T>(command, args, timeoutMs)
  }

  waitForEvent(
    name: string,
    timeoutMs = 30_000,
    options?: { since?: number; match?: (e: QmpEvent) => boolean },
  ): Promise<QmpEvent> {
    return this.qmp.waitForEvent(name, timeoutMs, options)
  }

  async queryStatus(): Promise<{ running: boolean; status: string }> {
    return this.execute('query-status')
  }

  async queryMigrate(): Promise<MigrationStats> {
    return toMigrationStats(await this.execute<Record<string, unknown>>('query-migrate'))
  }

  /** e.g. migrateSetCapabilities({ xbzrle: true, events: true }) */
  async migrateSetCapabilities(caps: Record<string, boolean>): Promise<void> {
    const capabilities = Object.entries(caps).map(([capability, state]) => ({ capability, state }))
    await this.execute('migrate-set-capabilities', { capabilities })
  }

  /** e.g. migrateSetParameters({ 'max-bandwidth': 16 << 20, 'downtime-limit': 300 }) */
  async migrateSetParameters(params: Record<string, unknown>): Promise<void> {
    await this.execute('migrate-set-parameters', params)
  }

  async queryMigrateParameters(): Promise<Record<string, unknown>> {
    return this.execute('query-migrate-parameters')
  }

  /** Start an outgoing migration (returns at once; use waitForMigration). */
  async migrate(uri: string): Promise<void> {
    await this.execute('migrate', { uri })
  }

  /** Start listening for an incoming migration (QEMU started with incoming: 'defer'). */
  async migrateIncoming(uri: string): Promise<void> {
    await this.execute('migrate-incoming', { uri })
  }

  /**
   * Poll query-migrate until the status is `completed` (returns the final stats) or `failed`/`cancelled`
   * (throws). Works on the source and on the destination.
   */
  async waitForMigration(options: WaitForMigrationOptions = {}): Promise<MigrationStats> {
    const timeoutMs = options.timeoutMs ?? 120_000
    const deadline = Date.now() + timeoutMs
    let forced = false
    let last: MigrationStats | undefined
    for (;;) {
      if (this.hasExited) throw new Error(`QEMU exited while waiting for migration ${this.context()}`)
      last = await this.queryMigrate()
      if (last.status === 'completed') return last
      if (last.status === 'failed' || last.status === 'cancelled') {
        throw new Error(
          `migration ${last.status}${last.errorDesc ? `: ${last.errorDesc}` : ''} ${this.context()}`,
        )
      }
      if (
        !forced &&
        options.forceConvergeAfterSyncs !== undefined &&
        (last.dirtySyncCount ?? 0) >= options.forceConvergeAfterSyncs
      ) {
        forced = true
        await this.migrateSetParameters({ 'downtime-limit': options.convergeDowntimeMs ?? 60_000 })
      }
      if (Date.now() > deadline) {
        throw new Error(
          `migration not completed after ${timeoutMs} ms (status ${last.status}, ${JSON.stringify(last.raw)}) ${this.context()}`,
        )
      }
      await sleep(options.pollMs ?? 100)
    }
  }

  async stop(): Promise<void> {
    await this.execute('stop')
  }

  async cont(): Promise<void> {
    await this.execute('cont')
  }

  /** Stop the VM if it is running (no-op when already paused / postmigrate). */
  async ensureStopped(): Promise<void> {
    const s = await this.queryStatus()
    if (s.running) await this.stop()
  }

  /** Save guest-physical memory [addr, addr+size) to a file (QMP pmemsave). */
  async pmemsave(addr: number, size: number, file: string): Promise<void> {
    await this.execute('pmemsave', { val: addr, size, filename: file }, 120_000)
  }

  /** Save guest-virtual memory (QMP memsave) as seen by a CPU. */
  async memsave(addr: number, size: number, file: string, cpuIndex = 0): Promise<void> {
    await this.execute('memsave', { val: addr, size, filename: file, 'cpu-index': cpuIndex }, 120_000)
  }

  // --- serial ---

  /** Everything the guest wrote to COM1 so far. */
  async readSerial(): Promise<string> {
    try {
      return await readFile(this.serialPath, 'utf8')
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return ''
      throw e
    }
  }

  /**
   * Wait until the serial log (from character offset `from`) matches `re`. Returns the match; its `index`
   * is relative to the whole log.
   */
  async waitForSerial(
    re: RegExp,
    timeoutMs = 30_000,
    options: { from?: number } = {},
  ): Promise<RegExpExecArray> {
    const from = options.from ?? 0
    const deadline = Date.now() + timeoutMs
    const flags = re.flags.replace('g', '').replace('y', '')
    const rx = new RegExp(re.source, flags)
    let text = ''
    for (;;) {
      text = await this.readSerial()
      const m = rx.exec(text.slice(from))
      if (m) {
        m.index += from
        return m
      }
      if (this.hasExited) break
      if (Date.now() > deadline) break
      await sleep(50)
    }
    throw new Error(
      `serial did not match ${re} within ${timeoutMs} ms ${this.context()}\nserial tail:\n${text.slice(-1000)}`,
    )
  }

  /** All complete `pass N checksum X` lines so far. */
  async passes(): Promise<PassLine[]> {
    return parsePassLines(await this.readSerial())
  }

  /** Highest pass number printed so far (0 if none). */
  async lastPass(): Promise<number> {
    const p = await this.passes()
    return p.length ? p[p.length - 1]!.pass : 0
  }

  /** Wait until the guest printed a pass line with number >= n. */
  async waitForPass(n: number, timeoutMs = 30_000): Promise<PassLine> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const p = await this.passes()
      const hit = p.find((l) => l.pass >= n)
      if (hit) return hit
      if (this.hasExited || Date.now() > deadline) {
        const text = await this.readSerial()
        throw new Error(
          `guest did not reach pass ${n} within ${timeoutMs} ms ${this.context()}\nserial tail:\n${text.slice(-1000)}`,
        )
      }
      await sleep(50)
    }
  }

  /** Wait for the `xbzrle-guest ready` line; returns its fields (workload, mem, pages, fill, ...). */
  async waitForReady(timeoutMs = 60_000): Promise<Record<string, string>> {
    const m = await this.waitForSerial(/xbzrle-guest ready ([^\n]*)\n/, timeoutMs)
    const fields: Record<string, string> = {}
    for (const kv of (m[1] ?? '').split(' ')) {
      const i = kv.indexOf('=')
      if (i > 0) fields[kv.slice(0, i)] = kv.slice(i + 1)
    }
    return fields
  }

  // --- lifecycle ---

  /** Ask QEMU to quit (QMP quit) and wait for it to exit. */
  async quit(timeoutMs = 5000): Promise<void> {
    if (this.hasExited) return
    try {
      await this.execute('quit', undefined, timeoutMs)
    } catch {
      // the connection may close before the reply arrives
    }
    await Promise.race([this.exited, sleep(timeoutMs)])
  }

  /** SIGKILL QEMU and its process group (exec: children). Synchronous; used at process exit. */
  killSync(): void {
    try {
      process.kill(-this.pid, 'SIGKILL')
    } catch {
      // group already gone
    }
  }

  /**
   * Stop QEMU (QMP quit when `graceful`, default true; SIGKILL otherwise or on timeout), kill leftover
   * exec: children, remove the temp dir. Idempotent.
   */
  close(options: { graceful?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      if (options.graceful !== false && !this.hasExited && this.qmpClient && !this.qmpClient.closed) {
        await this.quit(3000)
      }
      this.killSync()
      await Promise.race([this.exited, sleep(5000)])
      this.qmpClient?.close()
      this.child.stdin?.destroy()
      live.delete(this)
      removeTmpDir(this.dir)
    })()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** Parse `pass N checksum XXXXXXXX [memsum XXXXXXXX]` lines (complete lines only). */
export function parsePassLines(serial: string): PassLine[] {
  const out: PassLine[] = []
  const re = /^pass (\d+) checksum ([0-9a-f]{8})(?: memsum ([0-9a-f]{8}))?\r?\n/gm
  for (let m = re.exec(serial); m; m = re.exec(serial)) {
    const line: PassLine = { pass: Number(m[1]), checksum: m[2]! }
    if (m[3]) line.memsum = m[3]
    out.push(line)
  }
  return out
}

/** Start a QEMU (TCG) with the test guest. See StartGuestOptions. Close it with close() or killAllGuests(). */
export function startGuest(options: StartGuestOptions = {}): Promise<QemuProcess> {
  return QemuProcess.start(options)
}

// ---------------------------------------------------------------------------------------------------------
// RAM comparison

/**
 * Stop both VMs (if running), pmemsave guest-physical [0, memMiB MiB) of each (default: the whole RAM,
 * ResolvedGuestOptions.ramBytes) and compare byte for byte.
 * Returns the offset of the first differing byte, or null when identical. Both VMs are left stopped.
 * Run it on a destination that is still paused after the incoming migration (startGuest's default for
 * incoming guests uses -S), before `cont`.
 */
export async function compareGuestRam(
  a: QemuProcess,
  b: QemuProcess,
  memMiB?: number,
): Promise<number | null> {
  const size = memMiB !== undefined ? memMiB * MiB : Math.min(a.options.ramBytes, b.options.ramBytes)
  await Promise.all([a.ensureStopped(), b.ensureStopped()])
  const dir = tmpDir('xbzrle-ram-')
  try {
    const fa = join(dir, 'a.ram')
    const fb = join(dir, 'b.ram')
    await Promise.all([a.pmemsave(0, size, fa), b.pmemsave(0, size, fb)])
    return await firstDifference(fa, fb)
  } finally {
    removeTmpDir(dir)
  }
}

/** Offset of the first byte where two files differ (a length difference counts), or null. */
export async function firstDifference(fileA: string, fileB: string): Promise<number | null> {
  const [ha, hb] = await Promise.all([open(fileA, 'r'), open(fileB, 'r')])
  try {
    const chunk = 4 * MiB
    const ba = Buffer.alloc(chunk)
    const bb = Buffer.alloc(chunk)
    let pos = 0
    for (;;) {
      const [ra, rb] = await Promise.all([ha.read(ba, 0, chunk, pos), hb.read(bb, 0, chunk, pos)])
      const n = Math.min(ra.bytesRead, rb.bytesRead)
      if (ba.compare(bb, 0, n, 0, n) !== 0) {
        for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return pos + i
      }
      if (ra.bytesRead !== rb.bytesRead) return pos + n
      if (n === 0) return null
      pos += n
    }
  } finally {
    await Promise.all([ha.close(), hb.close()])
  }
}

// ---------------------------------------------------------------------------------------------------------
// Migration through exec: pipes

/** Quote a string for /bin/sh. */
export const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`
const shq = shellQuote

export interface FilterResult {
  /** Exit status of the wrapped command ({ cmd ; } — for a pipeline, its last command). */
  exitCode: number
  stderr: string
}

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
  convergeDowntimeMs?: number
  /** Timeout for the whole migration. Default 120000 ms. */
  timeoutMs?: number
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
  const waitOpts: WaitForMigrationOptions = { timeoutMs }
  if (options.forceConvergeAfterSyncs !== undefined)
    waitOpts.forceConvergeAfterSyncs = options.forceConvergeAfterSyncs
  if (options.convergeDowntimeMs !== undefined) waitOpts.convergeDowntimeMs = options.convergeDowntimeMs
  const [stats, destStats] = await Promise.all([
    source.waitForMigration(waitOpts),
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

async function waitForFile(path: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const text = await readFile(path, 'utf8')
      if (text.endsWith('\n')) return text
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${path}`)
    await sleep(25)
  }
}

async function readIfExists(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch {
    return ''
  }
}

/** Create a named pipe (mkfifo(1)). */
export function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', ['-m', '600', path])
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed: ${r.stderr?.toString() ?? r.error?.message}`)
}

/**
 * Wrap a filter command so that its exit status and stderr land in files we can read: QEMU 7.2 runs
 * `exec:` commands through /bin/sh -c and never checks their exit status.
 */
function wrapCommand(cmd: string, redirect: string, dir: string, label: string): string {
  const err = join(dir, `${label}.err`)
  const status = join(dir, `${label}.status`)
  return `{ ${cmd} ; } ${redirect} 2>${shq(err)}; echo $? >${shq(status)}`
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
  const filterOutput = async () =>
    `\nencode stderr: ${await readIfExists(join(dir, 'encode.err'))}\ndecode stderr: ${await readIfExists(join(dir, 'decode.err'))}`
  try {
    const run = await migrateWithUris({
      ...options,
      incomingUri: `exec:${wrapCommand(options.decode ?? 'cat', `<${shq(fifo)}`, dir, 'decode')}`,
      uri: `exec:${wrapCommand(options.encode ?? 'cat', `>${shq(fifo)}`, dir, 'encode')}`,
    })
    const [encStatus, decStatus] = await Promise.all([
      waitForFile(join(dir, 'encode.status'), 30_000),
      waitForFile(join(dir, 'decode.status'), 30_000),
    ])
    const encode: FilterResult = {
      exitCode: Number(encStatus.trim()),
      stderr: await readIfExists(join(dir, 'encode.err')),
    }
    const decode: FilterResult = {
      exitCode: Number(decStatus.trim()),
      stderr: await readIfExists(join(dir, 'decode.err')),
    }
    if (options.checkExit !== false && (encode.exitCode !== 0 || decode.exitCode !== 0)) {
      throw new Error(`filter failed: encode exit ${encode.exitCode}, decode exit ${decode.exitCode}`)
    }
    return { ...run, encode, decode }
  } catch (e) {
    if (e instanceof Error) e.message += await filterOutput()
    throw e
  } finally {
    removeTmpDir(dir)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Stream capture

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
    await guest.migrate(`exec:${wrapCommand(body, `>${shq(out)}`, dir, 'capture')}`)
    const waitOpts: WaitForMigrationOptions = { timeoutMs: options.timeoutMs ?? 120_000 }
    if (options.forceConvergeAfterSyncs !== undefined)
      waitOpts.forceConvergeAfterSyncs = options.forceConvergeAfterSyncs
    if (options.convergeDowntimeMs !== undefined) waitOpts.convergeDowntimeMs = options.convergeDowntimeMs
    const stats = await guest.waitForMigration(waitOpts)
    // QEMU reports `completed` before the exec: child has finished writing: wait for it.
    const status = Number((await waitForFile(join(dir, 'capture.status'), 30_000)).trim())
    if (status !== 0) {
      throw new Error(`capture command exited ${status}: ${await readIfExists(join(dir, 'capture.err'))}`)
    }
    return { path: out, bytes: (await stat(out)).size, stats }
  } finally {
    removeTmpDir(dir)
    if (own) await guest.close({ graceful: false })
  }
}

/** Capture a raw migration stream of the test guest into a file; returns the path. */
export async function captureMigrationStream(options: CaptureOptions = {}): Promise<string> {
  return (await captureMigration(options)).path
}
