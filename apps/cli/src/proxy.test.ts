// `xbzrle proxy source|destination` as child processes, between two real QEMU processes on unix sockets, with
// QEMU's return-path capability on (as libvirt sets it for every non-tunnelled migration).
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import {
  compareGuestRam,
  freePort,
  installTestkitHooks,
  migrateWithUris,
  requireQemu,
  sleep,
  startDestination,
  startGuest,
  tmpDir,
  waitFor,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { CLI, runCli } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })
const children: ChildProcess[] = []
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL')
})

function proxy(args: string[]): { child: ChildProcess; exit: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [CLI, 'proxy', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  children.push(child)
  let err = ''
  child.stderr!.on('data', (b) => (err += b))
  return { child, exit: new Promise((r) => child.on('close', r)), stderr: () => err }
}

describe('xbzrle proxy', () => {
  it('usage errors exit 2 and --help shows the virsh commands', async () => {
    const h = await runCli(['proxy', '--help'])
    expect(h.code).toBe(0)
    expect(h.stdout.toString()).toMatch(/virsh migrate --live[\s\S]*--migrateuri unix:\/\//)
    const u = await runCli(['proxy', 'source'])
    expect(u.code).toBe(2)
    expect(u.stderr).toMatch(/--listen is required/)
  })

  it('live migration source QEMU → proxy source → TCP → proxy destination → QEMU, return path relayed', {
    timeout: 180_000,
  }, async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-proxy-cli-')
    const srcSock = join(dir, 'src.sock')
    const dstSock = join(dir, 'dst.sock')
    const port = await freePort()
    const source = await startGuest({
      memMiB: 48,
      append: { workload: 'sparse', mem: 24, rate: 4000, period: 200 },
    })
    await source.waitForReady()
    await source.waitForPass(1)
    let dst!: ReturnType<typeof proxy>
    let src!: ReturnType<typeof proxy>
    const { dest, stats } = await migrateWithUris({
      source,
      incomingUri: `unix:${dstSock}`,
      uri: `unix:${srcSock}`,
      capabilities: { 'return-path': true },
      parameters: { 'max-bandwidth': 32 << 20, 'downtime-limit': 1 },
      forceConvergeAfterSyncs: 3,
      beforeMigrate: async () => {
        dst = proxy(['destination', '--listen', `127.0.0.1:${port}`, '--qemu-socket', dstSock, '--once'])
        await waitFor(() => /listening|ready/i.test(dst.stderr()), 'destination proxy', {
          timeoutMs: 5000,
          intervalMs: 25,
        })
        src = proxy(['source', '--listen', srcSock, '--connect', `127.0.0.1:${port}`, '--once'])
        await waitFor(() => /listening|ready/i.test(src.stderr()), 'source proxy', {
          timeoutMs: 5000,
          intervalMs: 25,
        })
      },
    })
    expect(stats.status).toBe('completed')
    expect(await src.exit, src.stderr()).toBe(0)
    expect(await dst.exit, dst.stderr()).toBe(0)
    // The source half reports the return-path bytes it relayed back to the source QEMU.
    expect(src.stderr()).toMatch(/return path [1-9]\d* B|return[- ]path[^\n]*[1-9]/i)
    expect(await compareGuestRam(source, dest)).toBeNull()
    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 1)
  })
})

describe('a proxy process killed mid-migration', () => {
  it.each(['source', 'destination'] as const)(
    'SIGKILL of the %s proxy: the migration fails cleanly, the source VM keeps running, nothing hangs',
    { timeout: 120_000 },
    async (victim, ctx) => {
      if (!requireQemu(ctx)) return
      const dir = tmpDir('xbzrle-proxy-kill-')
      const dstSock = join(dir, 'dst.sock')
      const srcSock = join(dir, 'src.sock')
      const port = await freePort()
      const dst = proxy(['destination', '--listen', `127.0.0.1:${port}`, '--qemu-socket', dstSock, '--once'])
      const src = proxy(['source', '--listen', srcSock, '--connect', `127.0.0.1:${port}`, '--once'])
      await waitFor(
        () => /listening/.test(dst.stderr()) && /listening/.test(src.stderr()),
        'the proxies to listen',
      )
      const a = await startGuest({
        memMiB: 64,
        append: { workload: 'sparse', mem: 32, rate: 2000, period: 200 },
      })
      await a.waitForPass(1)
      const dest = await startDestination(a)
      const caps = { 'return-path': true, events: true }
      await Promise.all([a.migrateSetCapabilities(caps), dest.migrateSetCapabilities(caps)])
      await a.migrateSetParameters({ 'max-bandwidth': 4 << 20 }) // ≥ 8 s for 32 MiB: time to kill
      await dest.migrateIncoming(`unix:${dstSock}`)
      await a.migrate(`unix:${srcSock}`)
      await waitFor(
        async () => ((await a.queryMigrate()).ramTransferred ?? 0) > 2 << 20,
        'the migration to move 2 MiB',
        { timeoutMs: 20_000, intervalMs: 100 },
      )
      const killed = victim === 'source' ? src : dst
      const other = victim === 'source' ? dst : src
      killed.child.kill('SIGKILL')
      const tKill = Date.now()

      await expect(a.waitForMigration({ timeoutMs: 20_000 })).rejects.toThrow(/migration failed/)
      expect(await a.queryStatus()).toMatchObject({ running: true, status: 'running' })
      // the surviving proxy reports one line and exits 5 (--once: the migration failed at the peer)
      const code = await Promise.race([other.exit, sleep(15_000).then(() => 'hung')])
      expect(code, other.stderr()).toBe(5)
      const lines = other
        .stderr()
        .split('\n')
        .filter((l) => / failed: /.test(l))
      expect(lines).toHaveLength(1)
      // the destination QEMU does not hang in the incoming state
      const destOutcome = await Promise.race([
        dest.exited.then(() => 'exited'),
        dest.waitForMigration({ timeoutMs: 15_000 }).then(
          () => 'completed',
          (e: Error) => (/exited/.test(e.message) ? 'exited' : 'failed'),
        ),
      ])
      expect(destOutcome).not.toBe('completed')
      const before = await a.lastPass()
      await a.waitForPass(before + 1)
      console.info(
        `killed ${victim} proxy: source QEMU failed after ${Date.now() - tKill} ms, destination QEMU ${destOutcome}; ` +
          `surviving proxy: ${lines[0]}`,
      )
    },
  )
})
