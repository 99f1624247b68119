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
