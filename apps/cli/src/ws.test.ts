// `xbzrle send` / `xbzrle receive` as child processes: loopback WebSocket, a token, a fault-injecting TCP proxy,
// and a real QEMU live migration over WebSocket (with and without connection cuts).
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import {
  compareGuestRam,
  installTestkitHooks,
  migrateThrough,
  migrateWithUris,
  requireQemu,
  startGuest,
} from '@xbzrle/testkit'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CLI, CLI_SH, freePort, runCli } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })

let dir: string
let stream: Buffer
const TOKEN = 's3cret-token-for-tests'
const env = { XBZRLE_TOKEN: TOKEN }
const children: ChildProcess[] = []

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-ws-'))
  stream = Buffer.concat([...new SimulatedGuest({ memMiB: 16, passes: 3, seed: 4 }).stream()])
  writeFileSync(join(dir, 'in.mig'), stream)
})
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

/** Starts `xbzrle receive` and resolves once it listens. */
function startReceiver(
  args: string[],
  extraEnv: NodeJS.ProcessEnv = env,
): Promise<{ child: ChildProcess; stderr: () => string; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'receive', ...args], { env: { ...process.env, ...extraEnv } })
  children.push(child)
  let err = ''
  child.stderr.on('data', (b) => (err += b))
  const exit = new Promise<number | null>((r) => child.on('close', r))
  return new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (/listening on/.test(err)) {
        clearInterval(t)
        resolve({ child, stderr: () => err, exit })
      }
    }, 20)
    child.on('close', (code) => {
      clearInterval(t)
      reject(new Error(`receiver exited ${code}: ${err}`))
    })
  })
}

/** A TCP proxy that cuts every connection after `cutAfter` bytes from the client, `cuts` times in all. */
function faultProxy(
  target: number,
  cutAfter: number,
  cuts: number,
): Promise<{ port: number; server: Server; cutsDone: () => number }> {
  let done = 0
  const server = createServer((client: Socket) => {
    const upstream = tcpConnect(target, '127.0.0.1')
    let seen = 0
    client.on('data', (b) => {
      seen += b.length
      if (done < cuts && seen > cutAfter) {
        done++
        client.destroy()
        upstream.destroy()
        return
      }
      upstream.write(b)
    })
    upstream.on('data', (b) => client.write(b))
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ port: (server.address() as { port: number }).port, server, cutsDone: () => done }),
    ),
  )
}

describe('xbzrle send → xbzrle receive', () => {
  it('loopback with a token: the received file is byte-identical', async () => {
    const port = await freePort()
    const out = join(dir, 'out-{id}.mig')
    const rx = await startReceiver(['--listen', `127.0.0.1:${port}`, '-o', out, '--once'])
    const tx = await runCli(
      ['send', `ws://127.0.0.1:${port}/vm1`, join(dir, 'in.mig'), '--migration-id', 'vm1', '--stats'],
      undefined,
      env,
    )
    expect(tx.code, tx.stderr).toBe(0)
    expect(tx.stderr).toMatch(/xbzrle send: .* sent to ws:/)
    expect(await rx.exit).toBe(0)
    expect(readFileSync(join(dir, 'out-vm1.mig')).equals(stream)).toBe(true)
  })

  it('a wrong token is refused: sender exits 5 with the close code, the receiver keeps serving', async () => {
    const port = await freePort()
    const rx = await startReceiver(['--listen', `127.0.0.1:${port}`, '-o', join(dir, 'never-{id}.mig')])
    const tx = await runCli(['send', `ws://127.0.0.1:${port}/x`, join(dir, 'in.mig')], undefined, {
      XBZRLE_TOKEN: 'wrong',
    })
    expect(tx.code).toBe(5)
    expect(tx.stderr.trim().split('\n')).toHaveLength(1)
    expect(tx.stderr).toMatch(/4401/)
    const ok = await runCli(
      ['send', `ws://127.0.0.1:${port}/y`, join(dir, 'in.mig'), '--migration-id', 'y'],
      undefined,
      env,
    )
    expect(ok.code, ok.stderr).toBe(0)
    expect(readFileSync(join(dir, 'never-y.mig')).equals(stream)).toBe(true)
    rx.child.kill('SIGTERM')
    await rx.exit
  })

  it('the token never comes from argv, and a public listen address needs one', async () => {
    const r = await runCli(['receive', '--listen', '0.0.0.0:0'], undefined, { XBZRLE_TOKEN: '' })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/token/i)
    const bad = await runCli(['send', 'ws://127.0.0.1:1/x', '--token', 'abc'])
    expect(bad.code).toBe(2)
  })

  it('survives connection cuts through a fault-injecting proxy, byte-exact', async () => {
    const port = await freePort()
    const rx = await startReceiver([
      '--listen',
      `127.0.0.1:${port}`,
      '-o',
      join(dir, 'cut-{id}.mig'),
      '--once',
    ])
    const proxy = await faultProxy(port, 2_000_000, 3)
    try {
      const tx = await runCli(
        ['send', `ws://127.0.0.1:${proxy.port}/cut`, join(dir, 'in.mig'), '--migration-id', 'cut', '--stats'],
        undefined,
        env,
      )
      expect(tx.code, tx.stderr).toBe(0)
      expect(await rx.exit).toBe(0)
      expect(proxy.cutsDone()).toBeGreaterThan(0)
      expect(tx.stderr).toMatch(/[1-9]\d* reconnects/)
      expect(readFileSync(join(dir, 'cut-cut.mig')).equals(stream)).toBe(true)
    } finally {
      proxy.server.close()
    }
  })
})

describe('real QEMU live migration over WebSocket', () => {
  it.each([{ cuts: 0 }, { cuts: 2 }])(
    'exec:xbzrle send → exec:xbzrle receive, $cuts connection cuts',
    { timeout: 180_000 },
    async ({ cuts }) => {
      if (!requireQemu()) return
      const port = await freePort()
      const proxy = await faultProxy(port, 3_000_000, cuts)
      try {
        const source = await startGuest({
          memMiB: 48,
          append: { workload: 'sparse', mem: 24, rate: 4000, period: 200 },
        })
        await source.waitForReady()
        await source.waitForPass(1)
        const { dest, stats, encode, decode } = await migrateThrough({
          source,
          encode: `XBZRLE_TOKEN=${TOKEN} ${CLI_SH} send ws://127.0.0.1:${proxy.port}/vm --stats`,
          decode: `XBZRLE_TOKEN=${TOKEN} ${CLI_SH} receive --listen 127.0.0.1:${port}`,
          parameters: { 'max-bandwidth': 32 << 20, 'downtime-limit': 1 },
          forceConvergeAfterSyncs: 3,
        })
        expect(stats.status).toBe('completed')
        expect(encode.exitCode, encode.stderr).toBe(0)
        expect(decode.exitCode, decode.stderr).toBe(0)
        expect(proxy.cutsDone()).toBe(cuts)
        expect(await compareGuestRam(source, dest)).toBeNull()
        const last = await source.lastPass()
        await dest.cont()
        await dest.waitForPass(last + 1)
      } finally {
        proxy.server.close()
      }
    },
  )
})

describe('xbzrle receive --connect unix: (decoded straight into a destination QEMU socket)', () => {
  it('a destination that closes its socket early (as QEMU does after the device state) is not a failure, but a corrupt stream still is', async () => {
    const sockPath = join(dir, 'early.sock')
    const received: number[] = []
    const server = createServer((c) => {
      let n = 0
      c.on('data', (b) => {
        n += b.length
        if (n > 3_000_000) c.destroy() // stops reading long before the end, like QEMU skipping the trailer
      })
      c.on('close', () => received.push(n))
    })
    await new Promise<void>((r) => server.listen(sockPath, r))
    try {
      const port = await freePort()
      const rx = await startReceiver([
        '--listen',
        `127.0.0.1:${port}`,
        '--connect',
        `unix:${sockPath}`,
        '--once',
      ])
      const tx = await runCli(['send', `ws://127.0.0.1:${port}/early`, join(dir, 'in.mig')], undefined, env)
      expect(tx.code, tx.stderr).toBe(0)
      expect(await rx.exit, rx.stderr()).toBe(0)
      expect(rx.stderr()).toMatch(/closed its socket after .*; the stream was complete and verified/)
      expect(received[0]).toBeLessThan(stream.length)
      // A truncated xbzrle stream sent as-is must still fail on the receiver, whatever the destination did.
      const enc = await runCli(['encode', join(dir, 'in.mig')])
      writeFileSync(join(dir, 'cut.xbz'), enc.stdout.subarray(0, enc.stdout.length >> 1))
      const port2 = await freePort()
      const rx2 = await startReceiver([
        '--listen',
        `127.0.0.1:${port2}`,
        '--connect',
        `unix:${sockPath}`,
        '--once',
      ])
      const tx2 = await runCli(
        ['send', `ws://127.0.0.1:${port2}/cut`, join(dir, 'cut.xbz'), '--encoded'],
        undefined,
        env,
      )
      expect(tx2.code).toBe(5)
      expect(await rx2.exit).not.toBe(0)
    } finally {
      server.close()
    }
  })

  it('exec:xbzrle send → receive --connect unix:DST → QEMU -incoming unix:DST', {
    timeout: 180_000,
  }, async () => {
    if (!requireQemu()) return
    const port = await freePort()
    const dstSock = join(dir, `dst-${port}.sock`)
    const source = await startGuest({
      memMiB: 48,
      append: { workload: 'text', mem: 24, rate: 4000, period: 200 },
    })
    await source.waitForReady()
    await source.waitForPass(1)
    let rx!: Awaited<ReturnType<typeof startReceiver>>
    const { dest, stats } = await migrateWithUris({
      source,
      incomingUri: `unix:${dstSock}`,
      uri: `exec:XBZRLE_TOKEN=${TOKEN} ${CLI_SH} send ws://127.0.0.1:${port}/vm`,
      parameters: { 'max-bandwidth': 32 << 20, 'downtime-limit': 1 },
      forceConvergeAfterSyncs: 3,
      beforeMigrate: async () => {
        rx = await startReceiver([
          '--listen',
          `127.0.0.1:${port}`,
          '--connect',
          `unix:${dstSock}`,
          '--once',
          '--stats',
        ])
      },
    })
    expect(stats.status).toBe('completed')
    expect(await rx.exit, rx.stderr()).toBe(0)
    expect(rx.stderr()).toMatch(/migration \S+ done/)
    expect(await compareGuestRam(source, dest)).toBeNull()
    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 1)
  })
})
