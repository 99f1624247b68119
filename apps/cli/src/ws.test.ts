// `xbzrle send` / `xbzrle receive` as child processes: loopback WebSocket, a token, a fault-injecting TCP proxy,
// and a real QEMU live migration over WebSocket (with and without connection cuts).
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import { sendStream } from '@xbzrle/adapter-ws'
import { FrameReader, FrameWriter, headerToJson } from '@xbzrle/protocol'
import {
  compareGuestRam,
  freePort,
  installTestkitHooks,
  iteratingMigration,
  migrateThrough,
  migrateWithUris,
  requireQemu,
  startRunningGuest,
  waitFor,
} from '@xbzrle/testkit'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { outputPath, qemuSocketSink } from './commands/ws.js'
import { CLI, CLI_SH, runCli, startCliReceiver } from './test-cli.js'

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

interface Receiver {
  port: number
  child: ChildProcess
  stderr: () => string
  exit: Promise<number | null>
}

/** Starts `xbzrle receive --listen HOST:PORT ARGS…` (default 127.0.0.1 and a free port); resolves once it listens. */
async function startReceiver(
  args: string[],
  opts: { host?: string; port?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<Receiver> {
  const port = opts.port ?? (await freePort())
  const listen = ['--listen', `${opts.host ?? '127.0.0.1'}:${port}`]
  return { port, ...(await startCliReceiver([...listen, ...args], opts.env ?? env, children)) }
}

/** `xbzrle send ws://127.0.0.1:PORT/PATH FILE ARGS…` with the token in the environment (`extraEnv`). */
function send(port: number, path: string, file: string, args: string[] = [], extraEnv = env) {
  return runCli(['send', `ws://127.0.0.1:${port}/${path}`, file, ...args], undefined, extraEnv)
}

/** A unix-socket server at `path` (a stand-in for a destination QEMU), listening. */
async function listenUnix(path: string, onConnection: (c: Socket) => void): Promise<Server> {
  const server = createServer(onConnection)
  await new Promise<void>((r) => server.listen(path, r))
  return server
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
    const rx = await startReceiver(['-o', join(dir, 'out-{id}.mig'), '--once'])
    const tx = await send(rx.port, 'vm1', join(dir, 'in.mig'), ['--migration-id', 'vm1', '--stats'])
    expect(tx.code, tx.stderr).toBe(0)
    expect(tx.stderr).toMatch(/xbzrle send: .* sent to ws:/)
    expect(await rx.exit).toBe(0)
    expect(readFileSync(join(dir, 'out-vm1.mig')).equals(stream)).toBe(true)
  })

  it('--bypass always: every page goes past the cache, and the received file is byte-identical', async () => {
    const rx = await startReceiver(['-o', join(dir, 'out-{id}.mig'), '--once'])
    const stats = join(dir, 'bypass-stats.json')
    const tx = await send(rx.port, 'vmb', join(dir, 'in.mig'), [
      '--migration-id',
      'vmb',
      '--bypass',
      'always',
      '--stats-json',
      stats,
    ])
    expect(tx.code, tx.stderr).toBe(0)
    expect(await rx.exit).toBe(0)
    expect(readFileSync(join(dir, 'out-vmb.mig')).equals(stream)).toBe(true)
    const pages = JSON.parse(readFileSync(stats, 'utf8')).totals.pages
    expect(pages.total).toBeGreaterThan(0)
    expect(pages.other).toBe(pages.total) // the encoder counts pages sent past its cache as `other`
  })

  it('a wrong token is refused: sender exits 5 with the close code, the receiver keeps serving', async () => {
    const rx = await startReceiver(['-o', join(dir, 'never-{id}.mig')])
    const tx = await send(rx.port, 'x', join(dir, 'in.mig'), [], { XBZRLE_TOKEN: 'wrong' })
    expect(tx.code).toBe(5)
    expect(tx.stderr.trim().split('\n')).toHaveLength(1)
    expect(tx.stderr).toMatch(/4401/)
    const ok = await send(rx.port, 'y', join(dir, 'in.mig'), ['--migration-id', 'y'])
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
    const badId = await runCli(
      ['send', 'ws://127.0.0.1:1/x', join(dir, 'in.mig'), '--migration-id', '..'],
      undefined,
      env,
    )
    expect(badId.code).toBe(2)
    expect(badId.stderr).toMatch(/--migration-id "\.\." is not allowed/)
  })

  it('survives connection cuts through a fault-injecting proxy, byte-exact', async () => {
    const rx = await startReceiver(['-o', join(dir, 'cut-{id}.mig'), '--once'])
    const proxy = await faultProxy(rx.port, 2_000_000, 3)
    try {
      const tx = await send(proxy.port, 'cut', join(dir, 'in.mig'), ['--migration-id', 'cut', '--stats'])
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
  it.for([{ cuts: 0 }, { cuts: 2 }])(
    'exec:xbzrle send → exec:xbzrle receive, $cuts connection cuts',
    { timeout: 180_000 },
    async ({ cuts }, ctx) => {
      if (!requireQemu(ctx)) return
      const port = await freePort()
      const proxy = await faultProxy(port, 3_000_000, cuts)
      try {
        const source = await startRunningGuest({
          memMiB: 48,
          append: { workload: 'sparse', mem: 24, rate: 4000, period: 200 },
        })
        const { dest, stats, encode, decode } = await migrateThrough({
          source,
          encode: `XBZRLE_TOKEN=${TOKEN} ${CLI_SH} send ws://127.0.0.1:${proxy.port}/vm --stats`,
          decode: `XBZRLE_TOKEN=${TOKEN} ${CLI_SH} receive --listen 127.0.0.1:${port}`,
          ...iteratingMigration({ syncs: 3 }),
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
  it('a destination that closes its socket once it has taken the whole stream is not a failure, but a corrupt stream still is', async () => {
    const sockPath = join(dir, 'early.sock')
    const received: number[] = []
    const server = await listenUnix(sockPath, (c) => {
      let n = 0
      c.on('data', (b) => {
        n += b.length
        if (n >= stream.length) c.destroy() // closes without waiting for our end, like QEMU after the device state
      })
      c.on('close', () => received.push(n))
    })
    try {
      const rx = await startReceiver(['--connect', `unix:${sockPath}`, '--once'])
      const tx = await send(rx.port, 'early', join(dir, 'in.mig'))
      expect(tx.code, tx.stderr).toBe(0)
      expect(await rx.exit, rx.stderr()).toBe(0)
      expect(received[0]).toBe(stream.length)
      // A truncated xbzrle stream sent as-is must still fail on the receiver, whatever the destination did.
      const enc = await runCli(['encode', join(dir, 'in.mig')])
      writeFileSync(join(dir, 'cut.xbz'), enc.stdout.subarray(0, enc.stdout.length >> 1))
      const rx2 = await startReceiver(['--connect', `unix:${sockPath}`, '--once'])
      const tx2 = await send(rx2.port, 'cut', join(dir, 'cut.xbz'), ['--encoded'])
      expect(tx2.code).toBe(5)
      expect(await rx2.exit).not.toBe(0)
    } finally {
      server.close()
    }
  })

  it('a destination that dies after 1 MB of the stream: both sides fail with one line', async () => {
    const sockPath = join(dir, 'dies.sock')
    const server = await listenUnix(sockPath, (c) => {
      let n = 0
      c.on('data', (b) => {
        n += b.length
        if (n > 1_000_000) c.destroy()
      })
    })
    try {
      const rx = await startReceiver(['--connect', `unix:${sockPath}`, '--once'])
      const tx = await send(rx.port, 'dies', join(dir, 'in.mig'))
      expect(tx.code).toBe(5)
      expect(tx.stderr).toMatch(/4500 PIPELINE_ERROR: .*closed its socket after .* of .*incomplete/)
      expect(await rx.exit).toBe(4)
      const lines = rx.stderr().trim().split('\n')
      expect(
        lines.filter((l) => !/listening on/.test(l)),
        rx.stderr(),
      ).toHaveLength(1)
      expect(rx.stderr()).toMatch(
        /migration \S+ failed: .*the destination closed its socket after .* of .*incomplete/,
      )
      expect(rx.stderr()).not.toMatch(/complete and verified/)
    } finally {
      server.close()
    }
  })

  it('qemuSocketSink: complete = END verified and every decoded byte accepted by the socket', async () => {
    const total = 12 << 20
    const data = Buffer.alloc(total, 0x5a)
    const run = async (closeAfter: number) => {
      const sockPath = join(dir, `sink-${closeAfter}.sock`)
      let closed!: () => void
      const serverClosed = new Promise<void>((r) => {
        closed = r
      })
      const server = await listenUnix(sockPath, (c) => {
        let n = 0
        c.on('data', (b) => {
          n += b.length
          if (n >= closeAfter) c.destroy()
        })
        c.on('close', () => closed())
      })
      try {
        const decoded = new PassThrough()
        const returnPath = new PassThrough()
        returnPath.resume()
        const done = qemuSocketSink(sockPath, decoded, { returnPath })
        done.catch(() => {})
        decoded.write(data)
        await serverClosed // the destination is gone before the decoder has even seen the END frame
        decoded.end()
        return await done.then(
          () => 'ok',
          (e: Error) => e.message,
        )
      } finally {
        server.close()
      }
    }
    expect(await run(total)).toBe('ok') // took everything, then closed early: fine
    expect(await run(1 << 20)).toMatch(/closed its socket after .* of 12\.0 MiB: the migration is incomplete/)
  })

  it('exec:xbzrle send → receive --connect unix:DST → QEMU -incoming unix:DST', {
    timeout: 180_000,
  }, async (ctx) => {
    if (!requireQemu(ctx)) return
    const port = await freePort()
    const dstSock = join(dir, `dst-${port}.sock`)
    const source = await startRunningGuest({
      memMiB: 48,
      append: { workload: 'text', mem: 24, rate: 4000, period: 200 },
    })
    let rx!: Receiver
    const { dest, stats } = await migrateWithUris({
      source,
      incomingUri: `unix:${dstSock}`,
      uri: `exec:XBZRLE_TOKEN=${TOKEN} ${CLI_SH} send ws://127.0.0.1:${port}/vm`,
      ...iteratingMigration({ syncs: 3 }),
      beforeMigrate: async () => {
        rx = await startReceiver(['--connect', `unix:${dstSock}`, '--once', '--stats'], { port })
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

/** Resolves once a file whose name contains `part` is in the test directory. */
function waitForFile(part: string): Promise<boolean> {
  return waitFor(() => readdirSync(dir).some((n) => n.includes(part)), `a file named *${part}* in ${dir}`, {
    intervalMs: 20,
  })
}

describe('receive: outputs, interruptions and hostile senders (issue #19)', () => {
  it('a second concurrent migration to a fixed -o path is refused (4411), the first lands intact', async () => {
    const out = join(dir, 'fixed.mig')
    const rx = await startReceiver(['-o', out])
    const a = send(rx.port, 'a', join(dir, 'in.mig'), ['--migration-id', 'first', '--max-rate', '1M'])
    await waitForFile('fixed.mig')
    const b = await send(rx.port, 'b', join(dir, 'in.mig'), ['--migration-id', 'second'])
    expect(b.code, `${b.stderr}\n${rx.stderr()}\n${readdirSync(dir).join(' ')}`).toBe(5)
    expect(b.stderr).toMatch(
      /refused: 4411 OUTPUT_BUSY: .*fixed\.mig is in use by migration first; put \{id\} in -o/,
    )
    const first = await a
    expect(first.code, first.stderr).toBe(0)
    expect(readFileSync(out).equals(stream)).toBe(true)
    expect(rx.stderr().match(/OUTPUT_BUSY/g)).toHaveLength(1)
    rx.child.kill('SIGTERM')
    expect(await rx.exit).toBe(0) // idle and not --once: a clean stop
  })

  it('SIGTERM mid-migration: exit 143 with one line, and no file (not even a partial one)', async () => {
    const rx = await startReceiver(['-o', join(dir, 'sig-{id}.mig'), '--once'])
    const tx = spawn(
      process.execPath,
      [
        CLI,
        'send',
        `ws://127.0.0.1:${rx.port}/s`,
        join(dir, 'in.mig'),
        '--migration-id',
        'term',
        '--max-rate',
        '1M',
      ],
      { env: { ...process.env, ...env }, stdio: 'ignore' },
    )
    children.push(tx)
    await waitForFile('sig-term.mig')
    rx.child.kill('SIGTERM')
    const code = await rx.exit
    tx.kill('SIGKILL')
    expect(code).toBe(143)
    const lines = rx
      .stderr()
      .trim()
      .split('\n')
      .filter((l) => !/listening on/.test(l))
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/interrupted by SIGTERM during migration term after .*; nothing was written/)
    expect(readdirSync(dir).filter((n) => n.includes('sig-term'))).toEqual([])
  })

  it('--once and SIGINT before any migration: non-zero too', async () => {
    const rx = await startReceiver(['-o', join(dir, 'never-int.mig'), '--once'])
    rx.child.kill('SIGINT')
    expect(await rx.exit).toBe(130)
    expect(rx.stderr()).toMatch(/interrupted by SIGINT before any migration completed/)
  })

  it('a stream header asking for more cache than the hello declared is refused before decoding (4508)', async () => {
    // An honest xbzrle stream of the test guest, re-headed to ask for a 256 MiB cache.
    const enc = await runCli(['encode', join(dir, 'in.mig')])
    const reader = new FrameReader()
    reader.push(enc.stdout)
    const item = reader.next()
    if (item?.type !== 'header') throw new Error('no header')
    const chunks: Buffer[] = []
    const w = new FrameWriter({ version: item.version as 1 | 2, onChunk: (c) => chunks.push(Buffer.from(c)) })
    w.header({ ...item.header, cache: { ...item.header.cache, cacheBytes: 256 << 20 } })
    w.verbatim(stream)
    w.end()
    const crafted = Buffer.concat(chunks)
    writeFileSync(join(dir, 'big-cache.xbz'), crafted)
    const dec = await runCli(['decode', join(dir, 'big-cache.xbz')])
    expect(dec.code, dec.stderr).toBe(0)
    expect(dec.stdout.equals(stream)).toBe(true) // a valid stream: only the cache it asks for is the problem

    const rx = await startReceiver(['-o', join(dir, 'mem-{id}.mig'), '--once', '--max-memory', '200M'])
    const small = headerToJson(
      { ...item.header, cache: { ...item.header.cache, cacheBytes: 32 << 10 } },
      item.version,
    )
    const err = await sendStream(PassThroughOf(crafted), `ws://127.0.0.1:${rx.port}/m`, {
      token: TOKEN,
      migrationId: 'liar',
      header: small,
      versions: [item.version],
    }).catch((e: Error) => e)
    expect(String(err)).toMatch(
      /refused: 4508 STREAM_HEADER_MISMATCH: the stream header asks for a 256(\.0)? MiB page cache, but the session was admitted for 32\.0 KiB/,
    )
    expect(await rx.exit).not.toBe(0)
    expect(existsSync(join(dir, 'mem-liar.mig'))).toBe(false)
  })

  it('a migration id of ".." cannot leave the -o template directory', async () => {
    mkdirSync(join(dir, 't'), { recursive: true })
    const template = join(dir, 't', '{id}', 'o.mig')
    expect(outputPath(template, 'vm1')).toBe(join(dir, 't', 'vm1', 'o.mig'))
    expect(() => outputPath(template, '..')).toThrow(/not allowed/)
    expect(() => outputPath(join(dir, 't', 'x{id}'), 'a')).not.toThrow()
    const rx = await startReceiver(['-o', template])
    const close = await new Promise<{ code: number; reason: string }>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${rx.port}/`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      })
      ws.on('open', () =>
        ws.send(JSON.stringify({ type: 'hello', protocol: 'xbzrle', versions: [1, 2], migrationId: '..' })),
      )
      ws.on('error', () => {})
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    expect(close.code).toBe(4402)
    expect(close.reason).toMatch(/migration id/)
    expect(existsSync(join(dir, 'o.mig'))).toBe(false)
    rx.child.kill('SIGTERM')
    expect(await rx.exit).toBe(0)
  })

  it('a token over ws:// on a non-loopback address: one warning line on each side', async () => {
    const rx = await startReceiver(['-o', join(dir, 'warn-{id}.mig'), '--once'], { host: '0.0.0.0' })
    expect(rx.stderr()).toMatch(
      /xbzrle receive: warning: the token is accepted over ws:\/\/ without TLS on 0\.0\.0\.0/,
    )
    const tx = await runCli(
      ['send', `ws://0.0.0.0:${rx.port}/w`, join(dir, 'in.mig'), '--migration-id', 'w'],
      undefined,
      env,
    )
    expect(tx.code, tx.stderr).toBe(0)
    expect(tx.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/^xbzrle send: warning: the token is sent over ws:\/\/ without TLS/),
    ])
    expect(tx.stderr).not.toContain(TOKEN)
    expect(await rx.exit).toBe(0)
    expect(readFileSync(join(dir, 'warn-w.mig')).equals(stream)).toBe(true)
  })
})

function PassThroughOf(b: Buffer): PassThrough {
  const p = new PassThrough()
  p.end(b)
  return p
}
