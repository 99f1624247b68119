import { randomBytes } from 'node:crypto'
import { createServer, connect as netConnect, type Socket } from 'node:net'
import { join } from 'node:path'
import {
  compareGuestRam,
  installTestkitHooks,
  type QemuProcess,
  requireQemu,
  startDestination,
  startGuest,
  tmpDir,
  waitFor,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { ReturnPathWatcher } from './proxy/return-path.js'
import { fakeDestinationQemu } from './proxy/test-peers.js'
import {
  type MigrationProxy,
  startDestinationProxy,
  startProxy,
  startSourceProxy,
  tcpConnector,
} from './proxy.js'

installTestkitHooks({ afterEach, afterAll })

const MiB = 1024 * 1024
const proxies: MigrationProxy[] = []
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()))
})

/** QEMU's return path needs a socket transport; libvirt 9.0 turns it on for every non-tunnelled migration. */
const CAPS = { 'return-path': true, 'postcopy-ram': true, events: true }

async function startPair(dir: string, halfCloseTimeoutMs?: number) {
  const dstSock = join(dir, 'dst.sock')
  const srcSock = join(dir, 'src.sock')
  const dst = await startProxy({
    role: 'destination',
    listen: { host: '127.0.0.1', port: 0 },
    qemuSocket: dstSock,
    halfCloseTimeoutMs,
  })
  proxies.push(dst)
  const port = Number(dst.address.split(':').pop())
  const src = await startProxy({
    role: 'source',
    listen: srcSock,
    connect: tcpConnector({ host: '127.0.0.1', port }),
    halfCloseTimeoutMs,
  })
  proxies.push(src)
  return { src, dst, srcSock, dstSock }
}

/** Migrate `source` into a new destination listening on `dstSock`, through `srcSock`. */
async function migrate(
  source: QemuProcess,
  srcSock: string,
  dstSock: string,
  parameters: Record<string, unknown>,
  forceConvergeAfterSyncs?: number,
) {
  const dest = await startDestination(source)
  await Promise.all([source.migrateSetCapabilities(CAPS), dest.migrateSetCapabilities(CAPS)])
  await source.migrateSetParameters(parameters)
  await dest.migrateIncoming(`unix:${dstSock}`)
  await source.migrate(`unix:${srcSock}`)
  const [stats, destStats] = await Promise.all([
    source.waitForMigration({ timeoutMs: 60_000, forceConvergeAfterSyncs }),
    dest.waitForMigration({ timeoutMs: 60_000 }),
  ])
  return { dest, stats, destStats }
}

describe('ReturnPathWatcher', () => {
  const msg = (type: number, data: number[] = []) => {
    const b = Buffer.alloc(4 + data.length)
    b.writeUInt16BE(type, 0)
    b.writeUInt16BE(data.length, 2)
    b.set(data, 4)
    return b
  }
  it('needs SHUT 0 once the return path carried messages, in any chunking', () => {
    const ok = Buffer.concat([
      msg(2, [0, 0, 0, 1]),
      msg(4, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
      msg(1, [0, 0, 0, 0]),
    ])
    for (const step of [1, 3, 7, ok.length]) {
      const w = new ReturnPathWatcher()
      for (let i = 0; i < ok.length; i += step) w.push(ok.subarray(i, i + step))
      expect(w.messages).toBe(3)
      expect(w.verdict()).toBeUndefined()
    }
    const noShut = new ReturnPathWatcher()
    noShut.push(msg(2, [0, 0, 0, 1]))
    expect(noShut.verdict()).toMatch(/without a SHUT message/)
    const bad = new ReturnPathWatcher()
    bad.push(msg(1, [0, 0, 0, 1]))
    expect(bad.verdict()).toMatch(/reported a failed migration \(SHUT 1\)/)
    const none = new ReturnPathWatcher()
    expect(none.verdict()).toBeUndefined() // return-path capability off: no judgement
    const junk = new ReturnPathWatcher()
    junk.push(Buffer.from('PONGSHUT'))
    expect(junk.unparsable).toBe(true)
    expect(junk.verdict()).toBeUndefined()
  })
})

describe('proxy pair without QEMU (socket peers)', () => {
  it('is byte-exact both ways, half-closes in order and refuses a second connection while busy', async () => {
    const dir = tmpDir('xbzrle-proxy-')
    const { src, dst, srcSock, dstSock } = await startPair(dir)
    const payload = randomBytes(3 << 20)
    // fake destination QEMU: answers at once (return path), sends SHUT and closes after EOF
    const { server: fakeDst, received } = await fakeDestinationQemu(dstSock)
    try {
      const q = netConnect({ path: srcSock, allowHalfOpen: true })
      const back: Buffer[] = []
      q.on('data', (b: Buffer) => back.push(b))
      const ended = new Promise<void>((r) => q.on('end', r))
      q.write(payload.subarray(0, 1 << 20))
      // the return path flows before the forward direction ends
      await waitFor(() => Buffer.concat(back).toString() === 'PONG', 'PONG on the return path')
      // a second connection while the first is running is closed at once
      const second: Socket = netConnect({ path: srcSock })
      second.on('error', () => {})
      await new Promise<void>((r) => second.on('close', () => r()))
      expect(src.counters.refused).toBe(1)
      q.end(payload.subarray(1 << 20))
      await ended
      q.destroy()
      const [s1, d1] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
      expect(s1).toMatchObject({ ok: true, forwardIn: payload.length, returnPath: 8 })
      expect(d1).toMatchObject({ ok: true, forwardOut: payload.length, returnPath: 8 })
      expect(Buffer.concat(back).toString()).toBe('PONGSHUT')
      expect(Buffer.concat(received).equals(payload)).toBe(true)
    } finally {
      await new Promise<void>((r) => fakeDst.close(() => r()))
    }
  })

  it('reports one line when the destination QEMU socket is missing; the next migration works', async () => {
    const dir = tmpDir('xbzrle-proxy-')
    const { src, dst, srcSock } = await startPair(dir, 1000)
    const q = netConnect({ path: srcSock, allowHalfOpen: true })
    q.on('error', () => {})
    q.write(randomBytes(1000))
    // the proxy closes our connection (we see EOF; our own half stays open until we end it)
    await new Promise<void>((r) => q.on('end', () => r()))
    q.destroy()
    const [s1, d1] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
    expect(d1.ok).toBe(false)
    expect(d1.error).toMatch(/cannot connect to QEMU at unix:.*dst\.sock/)
    expect(s1.ok).toBe(false)
    expect(s1.error).toMatch(/^transport: .*(EPIPE|ECONNRESET)|did not end its stream within 1000 ms/)
    expect(src.busy || dst.busy).toBe(false)
  })
})

describe('proxy half-close timeout', () => {
  it('fails a session whose return path ended while the source keeps its stream open', async () => {
    const dir = tmpDir('xbzrle-proxy-')
    const { src, dst, srcSock, dstSock } = await startPair(dir, 1000)
    const fakeDst = createServer({ allowHalfOpen: true }, (s) => {
      s.once('data', () => s.end('SHUT')) // closes its side at once, reads on
      s.on('data', () => {})
    })
    await new Promise<void>((r) => fakeDst.listen(dstSock, r))
    try {
      const q = netConnect({ path: srcSock, allowHalfOpen: true })
      q.on('error', () => {})
      q.on('data', () => {})
      q.write(randomBytes(5000))
      const t0 = Date.now()
      const [s1, d1] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
      q.destroy()
      expect(Date.now() - t0).toBeLessThan(5000)
      expect(s1.ok).toBe(false)
      expect(s1.error).toMatch(
        /transport closed the return path but source QEMU did not end its stream within 1000 ms/,
      )
      expect(d1.ok).toBe(false)
      expect(s1.returnPath).toBe(4)
    } finally {
      await new Promise<void>((r) => fakeDst.close(() => r()))
    }
  })
})

describe('unix-socket migration through the proxy pair (real QEMU, return path on)', () => {
  it('migrates twice in a row through the same proxies; RAM identical; return path relayed', async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-proxy-')
    const { src, dst, srcSock, dstSock } = await startPair(dir)

    const a = await startGuest({
      memMiB: 64,
      append: { workload: 'sparse', mem: 32, rate: 4000, period: 200 },
    })
    await a.waitForPass(1)
    const first = await migrate(a, srcSock, dstSock, { 'max-bandwidth': 64 * MiB, 'downtime-limit': 1 }, 3)
    const b = first.dest
    expect(first.stats.status).toBe('completed')
    expect(first.stats.dirtySyncCount).toBeGreaterThanOrEqual(3)
    const [s1, d1] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
    expect(s1).toMatchObject({ id: 1, ok: true })
    expect(d1).toMatchObject({ id: 1, ok: true })
    // byte-exact: what the destination proxy wrote to QEMU is what the source QEMU sent
    expect(d1.forwardOut).toBe(s1.forwardIn)
    expect(d1.forwardIn).toBe(s1.forwardOut)
    expect(s1.returnPath).toBeGreaterThan(0)
    expect(s1.returnPath).toBe(d1.returnPath)
    expect(await compareGuestRam(a, b)).toBeNull()
    const last = await a.lastPass()
    await b.cont()
    await b.waitForPass(last + 2)
    expect((await b.passes())[0]?.pass).toBe(last + 1)
    console.info(
      `proxy migration 1: QEMU ${s1.forwardIn} B → xbzrle ${s1.forwardOut} B (ratio ${(s1.forwardIn / s1.forwardOut).toFixed(2)}), ` +
        `return path ${s1.returnPath} B, ${first.stats.dirtySyncCount} dirty syncs`,
    )
    await a.close({ graceful: false })

    // second migration, B → C, through the same pair of proxies
    const second = await migrate(b, srcSock, dstSock, { 'max-bandwidth': 256 * MiB })
    const [s2, d2] = await Promise.all([src.waitForSession(2), dst.waitForSession(2)])
    expect(second.stats.status).toBe('completed')
    expect(s2).toMatchObject({ id: 2, ok: true })
    expect(d2.forwardOut).toBe(s2.forwardIn)
    expect(s2.returnPath).toBeGreaterThan(0)
    expect(await compareGuestRam(b, second.dest)).toBeNull()
    const last2 = await b.lastPass()
    await second.dest.cont()
    await second.dest.waitForPass(last2 + 1)
    expect(src.counters).toMatchObject({ sessions: 2, completed: 2, failed: 0 })
    expect(src.counters.returnPath).toBe(s1.returnPath + s2.returnPath)
    console.info(
      `proxy migration 2: QEMU ${s2.forwardIn} B → xbzrle ${s2.forwardOut} B, return path ${s2.returnPath} B`,
    )
  })

  it('a corrupt stream (flipped byte on the transport) fails both QEMUs cleanly; the source runs on', async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-proxy-')
    const dstSock = join(dir, 'dst.sock')
    const srcSock = join(dir, 'src.sock')
    const dst = await startDestinationProxy({ listen: { host: '127.0.0.1', port: 0 }, qemuSocket: dstSock })
    proxies.push(dst)
    const port = Number(dst.address.split(':').pop())
    const connect = tcpConnector({ host: '127.0.0.1', port })
    let seen = 0
    const src = await startSourceProxy({
      listen: srcSock,
      // a transport that flips one bit somewhere after the first 2 MB
      connect: async () => {
        const t = await connect()
        const write = t.write.bind(t) as (c: Buffer, ...rest: unknown[]) => boolean
        t.write = ((c: Buffer, ...rest: unknown[]) => {
          if (seen < 2e6 && seen + c.length >= 2e6) {
            const copy = Buffer.from(c)
            copy[copy.length >> 1]! ^= 0x10
            c = copy
          }
          seen += c.length
          return write(c, ...rest)
        }) as typeof t.write
        return t
      },
    })
    proxies.push(src)
    const a = await startGuest({
      memMiB: 64,
      append: { workload: 'sparse', mem: 32, rate: 2000, period: 200 },
    })
    await a.waitForPass(1)
    const dest = await startDestination(a)
    await Promise.all([a.migrateSetCapabilities(CAPS), dest.migrateSetCapabilities(CAPS)])
    await a.migrateSetParameters({ 'max-bandwidth': 32 * MiB })
    await dest.migrateIncoming(`unix:${dstSock}`)
    await a.migrate(`unix:${srcSock}`)
    await expect(a.waitForMigration({ timeoutMs: 30_000 })).rejects.toThrow(/migration failed/)
    const [s, d] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
    expect(d.ok).toBe(false)
    expect(d.error).toMatch(/CRC|corrupt|checksum|mismatch|invalid/i)
    expect(d.error).not.toMatch(/\n/)
    expect(s.ok).toBe(false)
    expect(await a.queryStatus()).toMatchObject({ running: true, status: 'running' })
    // the destination QEMU (7.2) exits after a failed incoming migration, or reports failed
    const destOutcome = await Promise.race([
      dest.exited.then(() => 'exited'),
      dest.waitForMigration({ timeoutMs: 10_000 }).then(
        () => 'completed',
        (e: Error) => (/exited/.test(e.message) ? 'exited' : 'failed'),
      ),
    ])
    expect(destOutcome).not.toBe('completed')
    const before = await a.lastPass()
    await a.waitForPass(before + 1)
    console.info(`corrupt stream: source ${s.error}; destination ${d.error}; destination QEMU ${destOutcome}`)
  })
})
