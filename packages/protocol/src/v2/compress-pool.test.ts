import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { concat, decodeStream, HEADER, qemuHdr, sameBytes } from '../test-util.js'
import { FrameWriter } from '../writer.js'
import { getCompressor, isCompressorAvailable } from './codecs.js'
import { type BatchCompressor, CompressPool, type PooledResult } from './compress-pool.js'
import type { Compression } from './types.js'

const hasZstd = isCompressorAvailable('zstd')
const PAGE = 4096
const H = { ...HEADER, pageSize: PAGE, compression: { codec: 'zstd' as const, level: 1 } }
const STREAM_ID = new Uint8Array(16).fill(7)
/** QEMU RAM_SAVE_FLAG_PAGE and RAM_SAVE_FLAG_ZERO. */
const FULL = 0x08
const ZERO = 0x02

/** Pages that compress well, pages that do not (random), zero pages and verbatim bytes, in batches of 64 KiB. */
function writeSample(w: FrameWriter, pages = 200): void {
  w.header(H)
  const text = new TextEncoder().encode('the quick brown fox jumps over the lazy dog. '.repeat(100))
  for (let i = 0; i < pages; i++) {
    const page = i >= 100 && i < 140 ? randomBytesSeeded(i) : text.subarray(i % 50, (i % 50) + PAGE)
    w.pageFull(0, i, qemuHdr(i * PAGE, FULL), page)
    if (i % 17 === 0) w.pageZero(0, 10_000 + i, qemuHdr((10_000 + i) * PAGE, ZERO), 0)
    if (i % 41 === 0) w.verbatim(new Uint8Array([1, 2, 3, i & 0xff]))
  }
  w.end()
}

const seeded = new Map<number, Uint8Array>()
function randomBytesSeeded(i: number): Uint8Array {
  let b = seeded.get(i)
  if (!b) {
    b = randomBytes(PAGE)
    seeded.set(i, b)
  }
  return b
}

function writeWith(opts: { pool?: BatchCompressor; chunkView?: boolean; version?: 2 | 3 }) {
  const chunks: Uint8Array[] = []
  const w = new FrameWriter({
    onChunk: (c) => chunks.push(opts.chunkView ? c.slice() : c),
    batchBytes: 64 * 1024,
    chunkView: opts.chunkView,
    pool: opts.pool,
    version: opts.version ?? 3,
    streamId: (opts.version ?? 3) === 3 ? STREAM_ID : undefined,
  })
  return { w, chunks }
}

/** A pool double that compresses on this thread but finishes jobs in the order `order` gives. */
class ReorderingPool implements BatchCompressor {
  private jobs: { frames: Uint8Array; c: Required<Compression>; resolve: (r: PooledResult) => void }[] = []
  released = 0
  constructor(private readonly fail?: number) {}
  handles(c: Required<Compression>): boolean {
    return c.codec === 'zstd'
  }
  available(): boolean {
    return true
  }
  get pending(): number {
    return this.jobs.length
  }
  compress(frames: Uint8Array, c: Required<Compression>): Promise<PooledResult> {
    const copy = frames.slice()
    const n = this.jobs.length
    if (n === this.fail) return Promise.reject(new Error('compression worker 0 failed: simulated crash'))
    return new Promise((resolve) => this.jobs.push({ frames: copy, c, resolve }))
  }
  /** Finishes every job so far, last first. */
  finishReversed(): void {
    const z = getCompressor('zstd')
    for (const j of this.jobs.splice(0).reverse())
      j.resolve({
        compressed: z.compress(j.frames, j.c.level),
        frames: j.frames,
        release: () => {
          this.released++
        },
      })
  }
  async close(): Promise<void> {}
}

/** A started pool once a worker is up (or the pool failed): batches go to it from then on. */
async function started(pool: CompressPool): Promise<CompressPool> {
  await pool.start()
  expect(pool.available()).toBe(true)
  return pool
}

describe.skipIf(!hasZstd)('batches compressed on worker threads (CompressPool)', () => {
  const pools: CompressPool[] = []
  afterEach(async () => {
    for (const p of pools.splice(0)) await p.close()
  })

  it.for([
    { version: 3 as const, chunkView: false },
    { version: 3 as const, chunkView: true },
    { version: 2 as const, chunkView: true },
  ])(
    'writes the same bytes as the main thread ($version, chunkView $chunkView), and they decode',
    async (o) => {
      const plain = writeWith(o)
      writeSample(plain.w)
      const pool = new CompressPool(2)
      pools.push(pool)
      await started(pool)
      const pooled = writeWith({ ...o, pool })
      writeSample(pooled.w)
      expect(pooled.w.inFlight).toBeGreaterThan(0) // the END waits behind batches still on the pool
      await pooled.w.settled()
      expect(pooled.w.inFlight).toBe(0)
      const a = concat(plain.chunks)
      const b = concat(pooled.chunks)
      expect(sameBytes(a, b)).toBe(true)
      expect(pooled.w.batchStats).toEqual(plain.w.batchStats)
      expect(pooled.w.batchStats!.compressed).toBeGreaterThan(0)
      expect(pooled.w.batchStats!.plain).toBeGreaterThan(0) // the random-page batches stay plain
      expect(decodeStream(b, 997, { maxVersion: o.version }).error).toBeUndefined()
    },
  )

  it('releases records in stream order when jobs finish in reverse', async () => {
    const plain = writeWith({})
    writeSample(plain.w)
    const pool = new ReorderingPool()
    const pooled = writeWith({ pool })
    writeSample(pooled.w)
    const before = pooled.chunks.length // the header only
    pool.finishReversed()
    await pooled.w.settled()
    expect(before).toBe(1)
    expect(sameBytes(concat(pooled.chunks), concat(plain.chunks))).toBe(true)
    expect(pool.released).toBe(pooled.w.batchStats!.compressed + pooled.w.batchStats!.plain)
  })

  it('a failed job ends the stream: no batch is released after it, settled() and later calls report it', async () => {
    const pool = new ReorderingPool(2)
    const { w, chunks } = writeWith({ pool })
    w.header(H)
    const text = new TextEncoder().encode('abc'.repeat(2000)).subarray(0, PAGE)
    for (let i = 0; i < 64; i++) w.pageFull(0, i, qemuHdr(i * PAGE, FULL), text) // 4+ batches of 64 KiB
    pool.finishReversed()
    await expect(w.settled()).rejects.toThrow('simulated crash')
    // the header only: the run fails, and no record is handed out once a batch failed
    expect(chunks.length).toBe(1)
    expect(() => w.pageFull(0, 99, qemuHdr(99 * PAGE, FULL), text)).toThrow('simulated crash')
    expect(() => w.end()).toThrow('simulated crash')
  })

  it("batches closed before a worker is up are compressed on the writer's thread, to the same bytes", async () => {
    const plain = writeWith({})
    writeSample(plain.w)
    const pool = new CompressPool(1)
    pools.push(pool)
    const early = writeWith({ pool })
    writeSample(early.w) // at once: the worker has not booted yet
    expect(early.w.inFlight).toBe(0)
    expect(pool.pending).toBe(0)
    expect(sameBytes(concat(early.chunks), concat(plain.chunks))).toBe(true)
    // once it is up, batches go to it, still the same bytes
    await started(pool)
    const late = writeWith({ pool })
    writeSample(late.w)
    expect(late.w.inFlight).toBeGreaterThan(0)
    await late.w.settled()
    expect(sameBytes(concat(late.chunks), concat(plain.chunks))).toBe(true)
  })

  it('one stream, its first batches inline while the worker boots and the rest pooled: the same bytes', async () => {
    const text = new TextEncoder().encode('inline, then pooled. '.repeat(300))
    const write = async (w: FrameWriter, between?: () => Promise<unknown>) => {
      w.header(H)
      for (let i = 0; i < 120; i++) {
        if (i === 60) await between?.()
        w.pageFull(0, i, qemuHdr(i * PAGE, FULL), text.subarray(i % 40, (i % 40) + PAGE))
      }
      w.end()
    }
    const plain = writeWith({})
    await write(plain.w)
    const pool = new CompressPool(1)
    pools.push(pool)
    const mixed = writeWith({ pool })
    let inlineChunks = 0
    await write(mixed.w, async () => {
      inlineChunks = mixed.chunks.length // header and batches out at once: compressed here
      await pool.start()
    })
    expect(inlineChunks).toBeGreaterThan(1)
    expect(mixed.w.inFlight).toBeGreaterThan(0) // later batches (and the END behind them) wait for the worker
    await mixed.w.settled()
    expect(sameBytes(concat(mixed.chunks), concat(plain.chunks))).toBe(true)
  })

  it('a stream of one or two batches starts no worker; the third batch offered starts them', async () => {
    const pool = new CompressPool(2)
    pools.push(pool)
    expect(pool.available()).toBe(false)
    expect(pool.available()).toBe(false)
    expect(pool.workersStarted).toBe(0)
    expect(pool.available()).toBe(false) // compressed here while the workers boot
    expect(pool.workersStarted).toBe(2)
    await started(pool)
  })

  it('start() settles when the pool is closed before a worker came up', async () => {
    const pool = new CompressPool(1)
    const up = pool.start()
    await pool.close()
    await expect(up).resolves.toBeUndefined()
    await expect(pool.start()).resolves.toBeUndefined()
    expect(pool.available()).toBe(false)
  })

  it('a worker that cannot start fails the run with a clear message', async () => {
    const pool = new CompressPool(1, '/nonexistent/zstd-binding.node')
    pools.push(pool)
    await started(pool) // failed: from then on every batch offered reports it
    const { w, chunks } = writeWith({ pool })
    writeSample(w)
    await expect(w.settled()).rejects.toThrow(/compression worker 0 (failed|exited)/)
    expect(chunks.length).toBe(1) // the header; no batch
  })

  it('reuses its buffers: a long run keeps a bounded set', async () => {
    const pool = new CompressPool(1)
    pools.push(pool)
    await started(pool)
    const { w } = writeWith({ pool })
    w.header(H)
    const text = new TextEncoder().encode('xyz'.repeat(2000)).subarray(0, PAGE)
    for (let i = 0; i < 2000; i++) {
      w.pageFull(0, i, qemuHdr(i * PAGE, FULL), text)
      if (w.inFlight >= 3) await w.inFlightBelow(3)
    }
    w.end()
    await w.settled()
    const free = pool as unknown as { freeInputs: ArrayBuffer[]; freeOutputs: ArrayBuffer[] }
    // every buffer came back, and a few served ~120 batches
    expect(w.batchStats!.compressed).toBeGreaterThan(100)
    expect(free.freeInputs.length).toBeLessThanOrEqual(8)
    expect(free.freeOutputs.length).toBeLessThanOrEqual(8)
  })
})
