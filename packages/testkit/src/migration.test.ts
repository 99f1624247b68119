import { open } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  captureMigration,
  compareGuestRam,
  installTestkitHooks,
  iteratingMigration,
  migrateThrough,
  migrateWithUris,
  requireQemu,
  startGuest,
  startRunningGuest,
  tmpDir,
} from './index.js'

installTestkitHooks({ afterEach, afterAll })

const MiB = 1024 * 1024
/** A guest dirtying 4000 pages of its 32 MiB every 200 ms. */
const SPARSE_4000 = { workload: 'sparse', mem: 32, rate: 4000, period: 200 } as const

describe('live migration between two QEMU processes', () => {
  it('migrates through exec:cat pipes; RAM is identical; the destination runs on', async (ctx) => {
    if (!requireQemu(ctx)) return
    const source = await startRunningGuest(
      { memMiB: 64, append: { workload: 'sparse', mem: 32, rate: 1000, period: 200 } },
      2,
    )

    const { dest, stats, destStats, encode, decode } = await migrateThrough({ source })
    expect(stats.status).toBe('completed')
    expect(destStats.status).toBe('completed')
    expect(encode.exitCode).toBe(0)
    expect(decode.exitCode).toBe(0)
    expect(stats.ramTransferred).toBeGreaterThan(32 * MiB)
    expect(await source.queryStatus()).toMatchObject({ running: false, status: 'postmigrate' })
    expect(await dest.queryStatus()).toMatchObject({ running: false })

    expect(await compareGuestRam(source, dest)).toBeNull()

    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 2)
    const destPasses = await dest.passes()
    expect(destPasses[0]?.pass).toBe(last + 1)
  })

  it('with the xbzrle capability and a bandwidth cap, re-sent pages go out as XBZRLE', async (ctx) => {
    if (!requireQemu(ctx)) return
    const source = await startRunningGuest({ memMiB: 64, append: SPARSE_4000 })

    const { dest, stats } = await migrateThrough({
      source,
      // a tiny downtime limit keeps the migration iterating; forceConvergeAfterSyncs then lets it finish
      ...iteratingMigration({ xbzrle: true, syncs: 4 }),
    })
    expect(stats.dirtySyncCount).toBeGreaterThanOrEqual(4)
    // A 1 ms downtime-limit keeps it iterating until the forced pause, unless the guest, starved of CPU while the
    // whole suite runs, dirtied nothing in one iteration: then QEMU converges by itself. Either way it iterated.
    expect(stats.xbzrle?.pages).toBeGreaterThan(0)
    expect(stats.xbzrle?.bytes).toBeGreaterThan(0)
    expect(await compareGuestRam(source, dest)).toBeNull()

    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 1)
  })

  it('forceConvergeAfterMs pauses a migration that cannot converge once that time has passed, and says so', async (ctx) => {
    if (!requireQemu(ctx)) return
    const source = await startRunningGuest({ memMiB: 64, append: SPARSE_4000 })
    const t0 = Date.now()
    const { dest, stats } = await migrateThrough({
      source,
      // 8 MiB/s against ~16 MB/s of dirtying: it cannot converge, and its first pass alone outlasts 3 s
      parameters: { 'max-bandwidth': 8 << 20, 'downtime-limit': 1 },
      forceConvergeAfterMs: 3000,
    })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3000)
    expect(stats.forced).toBe(true)
    expect(await compareGuestRam(source, dest)).toBeNull()
  })

  it('reports a failing filter command', async (ctx) => {
    if (!requireQemu(ctx)) return
    const source = await startGuest({ memMiB: 32, append: { workload: 'idle', mem: 4 } })
    await source.waitForReady()
    await expect(
      migrateThrough({ source, decode: 'echo broken >&2; exit 3', timeoutMs: 30_000 }),
    ).rejects.toThrow(/broken/)
  })
})

describe('captureMigrationStream', () => {
  it('writes a raw QEVM stream to a file', async (ctx) => {
    if (!requireQemu(ctx)) return
    const { path, bytes, stats } = await captureMigration({
      memMiB: 32,
      append: { workload: 'idle', mem: 8 },
    })
    expect(stats.status).toBe('completed')
    const fh = await open(path, 'r')
    const head = Buffer.alloc(8)
    await fh.read(head, 0, 8, 0)
    await fh.close()
    expect(head.subarray(0, 4).toString('latin1')).toBe('QEVM')
    expect(head.readUInt32BE(4)).toBe(3)
    expect(bytes).toBeGreaterThan(8 * MiB)
  })
})

describe('migrateWithUris', () => {
  it('migrates over unix sockets through a proxy of our own', async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir()
    const dstSock = join(dir, 'dst.sock')
    const srcSock = join(dir, 'src.sock')
    let proxied = 0
    const server = createServer((down) => {
      const up = connect(dstSock)
      down.on('data', (b: Buffer) => {
        proxied += b.length
      })
      down.pipe(up).pipe(down)
      up.on('error', () => down.destroy())
      down.on('error', () => up.destroy())
    })
    await new Promise<void>((r) => server.listen(srcSock, r))
    try {
      const source = await startGuest({
        memMiB: 32,
        append: { workload: 'hotset', mem: 16, hot: 64, period: 200 },
      })
      await source.waitForPass(1)
      const { dest, stats } = await migrateWithUris({
        source,
        incomingUri: `unix:${dstSock}`,
        uri: `unix:${srcSock}`,
      })
      expect(stats.status).toBe('completed')
      expect(proxied).toBeGreaterThan(16 * MiB)
      expect(await compareGuestRam(source, dest)).toBeNull()
    } finally {
      server.close()
    }
  })
})
