/** One QEMU process (TCG) running the test guest: start, QMP, serial log, lifecycle; nothing outlives the test. */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildTestGuest } from './guest.js'
import {
  qemuArgs,
  type ResolvedGuestOptions,
  resolveGuestOptions,
  type StartGuestOptions,
} from './guest-options.js'
import { type MigrationStats, toMigrationStats, type WaitForMigrationOptions } from './migration-stats.js'
import { QmpClient, type QmpEvent } from './qmp.js'
import { type PassLine, parsePassLines } from './serial.js'
import { removeTmpDir, tmpDir } from './tmp.js'
import { hasQemu, qemuBinary } from './tools.js'
import { sleep } from './wait.js'

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
    const options = resolveGuestOptions(opts, opts.kernel ?? (await buildTestGuest()))
    const dir = tmpDir('xbzrle-qemu-')
    const qmpPath = join(dir, 'qmp.sock')
    const serialPath = opts.serialFile ?? join(dir, 'serial.log')
    const name = opts.name ?? (opts.incoming ? 'dest' : 'source')
    const args = qemuArgs(options, {
      name,
      serialPath,
      qmpPath,
      incoming: opts.incoming,
      paused: opts.paused,
    })
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
    const started = Date.now()
    const deadline = started + timeoutMs
    let forced = false
    let last: MigrationStats | undefined
    for (;;) {
      if (this.hasExited) throw new Error(`QEMU exited while waiting for migration ${this.context()}`)
      last = await this.queryMigrate()
      if (last.status === 'completed') return forced ? { ...last, forced } : last
      if (last.status === 'failed' || last.status === 'cancelled') {
        throw new Error(
          `migration ${last.status}${last.errorDesc ? `: ${last.errorDesc}` : ''} ${this.context()}`,
        )
      }
      const bySyncs =
        options.forceConvergeAfterSyncs !== undefined &&
        (last.dirtySyncCount ?? 0) >= options.forceConvergeAfterSyncs
      const byTime =
        options.forceConvergeAfterMs !== undefined && Date.now() - started >= options.forceConvergeAfterMs
      if (!forced && (bySyncs || byTime)) {
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

/** Start a QEMU (TCG) with the test guest. See StartGuestOptions. Close it with close() or killAllGuests(). */
export function startGuest(options: StartGuestOptions = {}): Promise<QemuProcess> {
  return QemuProcess.start(options)
}

/**
 * startGuest, then wait for the guest's ready line and for its pass `pass` (default 1): a running guest, such as
 * the source of a migration.
 */
export async function startRunningGuest(
  options: StartGuestOptions = {},
  pass = 1,
  timeouts: { readyMs?: number; passMs?: number } = {},
): Promise<QemuProcess> {
  const guest = await startGuest(options)
  await guest.waitForReady(timeouts.readyMs)
  await guest.waitForPass(pass, timeouts.passMs)
  return guest
}
