// The proxy's observers in-process (no QEMU): socket peers stand in for QEMU. A migration that fails before its
// relay starts and a connection refused while busy still show in the metrics, the progress lines and --stats-json.
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { type MigrationProxy, startProxy, tcpConnector } from '@xbzrle/adapter-libvirt'
import { installTestkitHooks, tmpDir, waitFor } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { proxySessionObservers, type SessionObservers, startSessionObservers } from './observe/run.js'
import { ProgressEventSchema, StatsReportSchema } from './observe/schemas.js'

installTestkitHooks({ afterEach, afterAll })
const cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c()
})

async function observed(dir: string, role: 'proxy-source' | 'proxy-destination') {
  const o = {
    metricsListen: '127.0.0.1:0',
    progress: `json=${join(dir, `${role}.ndjson`)}`,
    statsJson: join(dir, `${role}-{id}.json`),
    metricsId: role,
  }
  const observers: SessionObservers = await startSessionObservers(o, 'network')
  cleanup.push(() => observers.close())
  return {
    observers,
    hooks: {
      observeSession: proxySessionObservers(observers, role, o),
      onRefused: (reason: string) => observers.refused(role, reason),
    },
    scrape: async () => (await observers.outputs.metrics!.scrape()).text,
    lines: () =>
      readFileSync(join(dir, `${role}.ndjson`), 'utf8')
        .trimEnd()
        .split('\n')
        .map((l) => ProgressEventSchema.parse(JSON.parse(l))),
  }
}

describe('proxy observers', () => {
  it('a migration that fails before its relay is counted as failed; a busy refusal by reason', async () => {
    const dir = tmpDir('xbzrle-proxy-obs-')
    const dstObs = await observed(dir, 'proxy-destination')
    const srcObs = await observed(dir, 'proxy-source')
    const proxies: MigrationProxy[] = []
    cleanup.push(async () => {
      await Promise.all(proxies.map((p) => p.close()))
    })
    // a destination QEMU that takes the stream and says nothing: migration 1 stays in its relay
    const qemuSock = join(dir, 'q.sock')
    const held = new Set<Socket>()
    const fakeQemu = createServer((c) => {
      held.add(c)
      c.on('data', () => {})
      c.on('error', () => {})
    })
    await new Promise<void>((r) => fakeQemu.listen(qemuSock, r))
    const dst = await startProxy({
      role: 'destination',
      listen: { host: '127.0.0.1', port: 0 },
      qemuSocket: qemuSock,
      halfCloseTimeoutMs: 1000,
      ...dstObs.hooks,
    })
    proxies.push(dst)
    const port = Number(dst.address.split(':').pop())
    const srcSock = join(dir, 's.sock')
    const src = await startProxy({
      role: 'source',
      listen: srcSock,
      connect: tcpConnector({ host: '127.0.0.1', port }),
      halfCloseTimeoutMs: 1000,
      ...srcObs.hooks,
    })
    proxies.push(src)
    const migrate = () => {
      const q = connect({ path: srcSock, allowHalfOpen: true })
      q.on('error', () => {})
      q.on('data', () => {})
      q.write(randomBytes(1000))
      return q
    }
    const q1 = migrate()
    await waitFor(() => held.size === 1, 'migration 1 at the destination QEMU')
    // while it runs, a second source QEMU is refused
    const second = connect({ path: srcSock })
    second.on('error', () => {})
    second.write('x')
    await new Promise<void>((r) => second.on('close', () => r()))
    for (const c of held) c.destroy()
    await new Promise<void>((r) => fakeQemu.close(() => r()))
    q1.destroy()
    const [s1, d1] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
    // migration 2: the destination QEMU is gone, so the destination fails before its relay starts
    const q2 = migrate()
    const [s2, d2] = await Promise.all([src.waitForSession(2), dst.waitForSession(2)])
    q2.destroy()
    expect(d2).toMatchObject({ ok: false, error: expect.stringMatching(/cannot connect to QEMU/) })
    expect(s2.ok).toBe(false)

    const dstText = await dstObs.scrape()
    // migration 1's outcome depends on when the fake QEMU went away; migration 2 failed for sure
    const failed = (...r: { ok: boolean }[]) => r.filter((x) => !x.ok).length
    expect(dstText).toContain(`xbzrle_migrations_failed_total{role="proxy-destination"} ${failed(d1, d2)}`)
    expect(dstText).toMatch(/xbzrle_migrations_in_flight\{role="proxy-destination"\} 0/)
    expect(dstText).toMatch(/xbzrle_migration_state\{id="proxy-destination-2",role="proxy-destination"\} 2/)
    const srcText = await srcObs.scrape()
    expect(srcText).toMatch(/xbzrle_refused_connections_total\{role="proxy-source",reason="BUSY"\} 1/)
    expect(srcText).toContain(`xbzrle_migrations_failed_total{role="proxy-source"} ${failed(s1, s2)}`)

    // migration 2 never had a filter: a start and an end line, zero bytes
    const lines = dstObs.lines().filter((l) => l.id === 'proxy-destination-2')
    expect(lines.map((l) => l.event)).toEqual(['start', 'end'])
    expect(lines[1]).toMatchObject({ status: 'error', exitCode: 5 })
    const file = join(dir, 'proxy-destination-2.json')
    expect(existsSync(file)).toBe(true)
    const report = StatsReportSchema.parse(JSON.parse(readFileSync(file, 'utf8')))
    expect(report).toMatchObject({ command: 'proxy-destination', totals: { bytesIn: 0, bytesOut: 0 } })
  })
})
