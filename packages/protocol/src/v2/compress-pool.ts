/**
 * The second stage on other cores (issue #13): worker threads that compress batch frames with zstd while the main
 * thread goes on with the XBZRLE stage. The pool only compresses; the record writer keeps the record layout, the
 * size rule and the CRCs, and releases records strictly in order (record/writer.ts), so a stream written with a
 * pool is byte-identical to one written without (zstd's output depends only on input and level).
 *
 * No allocation per batch in steady state: each job borrows an input and an output buffer from free lists, both
 * are transferred to the worker and back, and return to the lists when the writer has copied the result out.
 * A worker that fails (an exception, an exit, a native crash surfacing as an error) fails every job in flight and
 * every later one: the writer then ends the stream with that error and releases nothing after it.
 */
import { writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Worker } from 'node:worker_threads'
import type { Compression } from './types.js'

/** Runs in each worker: compresses `len` bytes of `input` into `output` (zLen -1: did not fit, store plain). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const zstd = require(workerData.zstd)
const cctx = new zstd.CCtx()
parentPort.on('message', (m) => {
  let zLen = -1
  try {
    zLen = cctx.compress(new Uint8Array(m.output), new Uint8Array(m.input, 0, m.len), m.level)
  } catch {}
  parentPort.postMessage({ id: m.id, input: m.input, output: m.output, zLen }, [m.input, m.output])
})
`

/** What a job gives back: the compressed bytes (undefined: store plain) and the frames it was given. */
export interface PooledResult {
  compressed: Uint8Array | undefined
  frames: Uint8Array
  /** Returns the job's buffers to the pool; the views above are invalid afterwards. */
  release(): void
}

/** A second stage the record writer can hand batches to (CompressPool, or a test double). */
export interface BatchCompressor {
  /** Whether it compresses batches of this compression (codec and level). */
  handles(c: Required<Compression>): boolean
  /**
   * Whether it can take a batch now. False while no worker is up yet (the writer then compresses the batch on its
   * own thread, to the same bytes, rather than wait for a worker to boot); true once one is, or once the pool
   * failed (so the failure reaches the stream). May start the workers.
   */
  available(): boolean
  /** Copies `frames` at once; the result comes later. Jobs may finish in any order. */
  compress(frames: Uint8Array, c: Required<Compression>): Promise<PooledResult>
  /** Jobs handed out and not yet finished. */
  readonly pending: number
  close(): Promise<void>
}

interface Job {
  resolve: (r: PooledResult) => void
  reject: (e: Error) => void
  worker: number
  len: number
}

/**
 * The batch offered (available()) that starts the workers. A stream of a batch or two never pays a worker's
 * start-up: `xbzrle -c` of a 1 MB stream took ~15 ms longer with a worker booting beside it, which then had nothing
 * to do. Longer streams compress their first batches on the writer's thread while the workers boot, as before.
 */
const START_AT_BATCH = 3

/** Upper bound of ZSTD_compressBound(n) (n + n/256 + 128 KiB margin for small inputs), rounded up. */
function outputBound(n: number): number {
  return n + (n >>> 7) + (1 << 17)
}

export class CompressPool implements BatchCompressor {
  private readonly workers: (Worker | undefined)[]
  private readonly busy: number[]
  private readonly jobs = new Map<number, Job>()
  private nextId = 0
  private next = 0
  /** Batches offered (available()) before a worker was up. */
  private offered = 0
  /** A worker has booted (its 'online' event): batches go to the pool from then on. */
  private workerUp = false
  /** Settles once a worker is up or the pool failed (start()). */
  private readonly up: Promise<void>
  private markUp!: () => void
  private failure: Error | undefined
  private closed = false
  private readonly freeInputs: ArrayBuffer[] = []
  private readonly freeOutputs: ArrayBuffer[] = []

  /**
   * `threads` workers, started on first use. `zstdPath`: the resolved zstd-napi binding (default: resolved from
   * here, as findCompressor does).
   */
  constructor(
    readonly threads: number,
    private readonly zstdPath = createRequire(import.meta.url).resolve('zstd-napi/binding'),
  ) {
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be ≥ 1, got ${threads}`)
    this.workers = new Array(threads).fill(undefined)
    this.busy = new Array(threads).fill(0)
    this.up = new Promise((resolve) => {
      this.markUp = resolve
    })
  }

  handles(c: Required<Compression>): boolean {
    return c.codec === 'zstd'
  }

  get pending(): number {
    return this.jobs.size
  }

  available(): boolean {
    if (this.workerUp || this.failure !== undefined) return true
    if (++this.offered >= START_AT_BATCH) void this.start()
    return false
  }

  /** Workers started so far (by start(), or by the batches offered). */
  get workersStarted(): number {
    return this.workers.filter((w) => w !== undefined).length
  }

  compress(frames: Uint8Array, c: Required<Compression>): Promise<PooledResult> {
    if (this.failure) return Promise.reject(this.failure)
    if (this.closed) return Promise.reject(new Error('compression pool is closed'))
    const len = frames.length
    const input = this.borrow(this.freeInputs, len)
    new Uint8Array(input, 0, len).set(frames)
    const output = this.borrow(this.freeOutputs, outputBound(len))
    // Round robin: with equal batch sizes the workers stay evenly loaded; order is the writer's business.
    const w = this.next
    this.next = (this.next + 1) % this.threads
    const worker = this.worker(w)
    const id = this.nextId++
    return new Promise<PooledResult>((resolve, reject) => {
      this.jobs.set(id, { resolve, reject, worker: w, len })
      if (this.busy[w]!++ === 0) worker.ref()
      worker.postMessage({ id, input, output, len, level: c.level }, [input, output])
    })
  }

  /**
   * Starts every worker now instead of at the first batch offered: a worker takes a while to boot (about 0.1 s on
   * a small machine), which a caller that knows work is coming can overlap with its own start. Idle workers do not
   * keep the process alive. Resolves once a worker is up or the pool failed (never rejects).
   */
  start(): Promise<void> {
    if (!this.closed && !this.failure) for (let i = 0; i < this.threads; i++) this.worker(i)
    return this.up
  }

  /** Stops the workers (after the jobs in flight, if any, are dropped). */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.markUp() // start() callers stop waiting: no worker will come up now
    this.failAll(new Error('compression pool closed with batches in flight'))
    await Promise.all(this.workers.map((w) => w?.terminate()))
  }

  private worker(i: number): Worker {
    const existing = this.workers[i]
    if (existing) return existing
    // The worker's stdio is not piped into process.stdout/stderr (Node's default): that creates process.stdout,
    // which makes a pipe on fd 1 non-blocking, and the libvirt helper writes that pipe with blocking writes
    // (apps/cli blocking-pipe.ts). Its failures arrive as 'error' events.
    // node:worker_threads is loaded here, not imported: the CLI's filters import this module, and most of their runs
    // start no worker (its ~1 ms would come before `xbzrle -c`'s first byte).
    const { Worker } = process.getBuiltinModule('node:worker_threads')
    const w = new Worker(WORKER_SOURCE, {
      eval: true,
      stdout: true,
      stderr: true,
      workerData: { zstd: this.zstdPath },
    })
    // What a worker prints anyway (a warning from Node or the binding) goes to fd 2 directly: never into the data
    // on stdout, and without creating process.stdout or process.stderr.
    const toStderr = (b: Buffer) => {
      try {
        writeSync(2, b)
      } catch {
        // stderr closed: the message is lost, the work is not
      }
    }
    w.stdout.on('data', toStderr)
    w.stderr.on('data', toStderr)
    w.unref() // referenced only while it has work (compress), so an idle pool never keeps a process alive
    w.once('online', () => {
      this.workerUp = true
      this.markUp()
    })
    w.on('message', (m: { id: number; input: ArrayBuffer; output: ArrayBuffer; zLen: number }) =>
      this.done(m),
    )
    w.on('error', (e) => this.fail(`compression worker ${i} failed: ${e.message}`))
    w.on('exit', (code) => {
      if (!this.closed) this.fail(`compression worker ${i} exited (code ${code})`)
    })
    this.workers[i] = w
    return w
  }

  private done(m: { id: number; input: ArrayBuffer; output: ArrayBuffer; zLen: number }): void {
    const job = this.jobs.get(m.id)
    if (!job) return
    this.jobs.delete(m.id)
    if (--this.busy[job.worker]! === 0) this.workers[job.worker]?.unref()
    let released = false
    const len = job.len
    job.resolve({
      compressed: m.zLen >= 0 ? new Uint8Array(m.output, 0, m.zLen) : undefined,
      frames: new Uint8Array(m.input, 0, len),
      release: () => {
        if (released) return
        released = true
        this.freeInputs.push(m.input)
        this.freeOutputs.push(m.output)
      },
    })
  }

  private fail(message: string): void {
    this.failure ??= new Error(message)
    this.markUp()
    this.failAll(this.failure)
  }

  private failAll(e: Error): void {
    for (const [, job] of this.jobs) job.reject(e)
    this.jobs.clear()
    for (let i = 0; i < this.threads; i++) {
      this.busy[i] = 0
      this.workers[i]?.unref()
    }
  }

  /** A free buffer of at least `n` bytes (kept, so its pages are touched once), or a new one. */
  private borrow(list: ArrayBuffer[], n: number): ArrayBuffer {
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i]!.byteLength >= n) return list.splice(i, 1)[0]!
    }
    return new ArrayBuffer(n)
  }
}
