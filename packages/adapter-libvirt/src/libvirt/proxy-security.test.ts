// Proxy pair hardening (issue #19 items 9 and 11, issue #18): token handshake, TLS, handshake/connect/idle
// timeouts, non-loopback listeners, and unix socket paths that belong to someone else. Socket peers stand in
// for QEMU (no QEMU needed).
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeCert } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { fakeDestinationQemu as fakeQemu, probeUnixSocket } from './proxy/test-peers.js'
import {
  type MigrationProxy,
  type SourceProxyOptions,
  startDestinationProxy,
  startSourceProxy,
  tcpConnector,
} from './proxy.js'
import { loadProxyToken } from './proxy-auth.js'

const root = mkdtempSync(join(tmpdir(), 'xbz-proxy-sec-'))
let n = 0
const dir = () => mkdtempSync(join(root, `t${++n}-`))
const proxies: MigrationProxy[] = []
const servers: Server[] = []
const serverSockets = new Set<Socket>()
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()))
  for (const s of serverSockets) s.destroy()
  serverSockets.clear()
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))))
})
/** Registers a test server: its connections are destroyed after each test (half-open ones would keep it). */
function track(srv: Server): Server {
  srv.on('connection', (c: Socket) => serverSockets.add(c))
  servers.push(srv)
  return srv
}
afterAll(() => rmSync(root, { recursive: true, force: true }))

const closed = (s: Socket) =>
  new Promise<void>((r) => {
    if (s.destroyed) r()
    else s.once('close', () => r())
  })

/** A fake destination QEMU on `path` (see test-peers.ts), closed after the test. */
async function fakeDestinationQemu(path: string): Promise<Buffer[]> {
  const { server, received } = await fakeQemu(path)
  track(server)
  return received
}

/** A fake source QEMU: sends `payload` through `srcSock`, half-closes, returns what came back. */
async function sendThrough(srcSock: string, payload: Buffer): Promise<string> {
  const q = netConnect({ path: srcSock, allowHalfOpen: true })
  q.on('error', () => {})
  const back: Buffer[] = []
  q.on('data', (b: Buffer) => back.push(b))
  const ended = new Promise<void>((r) => q.on('end', r))
  q.end(payload)
  await Promise.race([ended, closed(q)])
  q.destroy()
  return Buffer.concat(back).toString()
}

async function pair(
  d: string,
  o: {
    dstToken?: string
    srcToken?: string
    tls?: { cert: string; key: string }
    ca?: string
    handshakeTimeoutMs?: number
    src?: Partial<SourceProxyOptions>
  } = {},
) {
  const dstSock = join(d, 'dst.sock')
  const srcSock = join(d, 'src.sock')
  const dst = await startDestinationProxy({
    listen: { host: '127.0.0.1', port: 0 },
    qemuSocket: dstSock,
    token: o.dstToken,
    tls: o.tls,
    handshakeTimeoutMs: o.handshakeTimeoutMs,
    halfCloseTimeoutMs: 2000,
  })
  proxies.push(dst)
  const port = Number(dst.address.split(':').pop())
  const src = await startSourceProxy({
    listen: srcSock,
    connect: tcpConnector({
      host: '127.0.0.1',
      port,
      tls: o.ca ? { ca: o.ca, servername: 'localhost' } : undefined,
    }),
    token: o.srcToken,
    halfCloseTimeoutMs: 2000,
    ...o.src,
  })
  proxies.push(src)
  return { src, dst, srcSock, dstSock, port }
}

describe('token handshake', () => {
  it('the right token migrates byte-exact; a wrong or missing one is refused before any session', async () => {
    const d = dir()
    const { src, dst, srcSock, dstSock } = await pair(d, { dstToken: 'sesame', srcToken: 'sesame' })
    const received = await fakeDestinationQemu(dstSock)
    const payload = randomBytes(1 << 20)
    expect(await sendThrough(srcSock, payload)).toBe('PONGSHUT')
    const [s1, d1] = await Promise.all([src.waitForSession(1), dst.waitForSession(1)])
    expect(s1.ok).toBe(true)
    expect(d1.ok).toBe(true)
    expect(Buffer.concat(received).equals(payload)).toBe(true)

    for (const [srcToken, why] of [
      ['open sesame', /wrong token/],
      [undefined, /requires a token/],
    ] as const) {
      const d2 = dir()
      const p = await pair(d2, { dstToken: 'sesame', srcToken })
      await fakeDestinationQemu(p.dstSock)
      await sendThrough(p.srcSock, randomBytes(1000))
      const r = await p.src.waitForSession(1)
      expect(r.ok).toBe(false)
      expect(r.error).toMatch(why)
      expect(p.dst.counters.sessions).toBe(0)
      if (srcToken) expect(p.dst.counters.unauthenticated).toBe(1)
    }
  })

  it('an idle connection is dropped after the handshake timeout and never holds the slot', async () => {
    const d = dir()
    const { src, dst, srcSock, dstSock, port } = await pair(d, {
      dstToken: 'sesame',
      srcToken: 'sesame',
      handshakeTimeoutMs: 500,
    })
    const received = await fakeDestinationQemu(dstSock)
    const idle = netConnect({ host: '127.0.0.1', port })
    idle.on('error', () => {})
    idle.on('data', () => {})
    await new Promise<void>((r) => idle.once('connect', () => r()))
    // While the idle connection is open, a real migration gets through.
    const payload = randomBytes(256 * 1024)
    expect(await sendThrough(srcSock, payload)).toBe('PONGSHUT')
    expect((await src.waitForSession(1)).ok).toBe(true)
    expect(Buffer.concat(received).equals(payload)).toBe(true)
    // …and the idle one is dropped by the destination.
    await closed(idle)
    await waitUntil(() => dst.counters.unauthenticated === 1)
    expect(dst.counters.refused).toBe(0)
  })

  it('a second authenticated migration while one runs gets a "busy" answer', async () => {
    const d = dir()
    const { src, dst, srcSock, dstSock } = await pair(d, { dstToken: 't', srcToken: 't' })
    await fakeDestinationQemu(dstSock)
    const q = netConnect({ path: srcSock, allowHalfOpen: true })
    q.on('error', () => {})
    q.on('data', () => {})
    q.write(randomBytes(1000))
    await waitUntil(() => dst.busy)
    // A second source proxy of the same destination (another host, say).
    const other = await startSourceProxy({
      listen: join(d, 'other.sock'),
      connect: tcpConnector({ host: '127.0.0.1', port: Number(dst.address.split(':').pop()) }),
      token: 't',
    })
    proxies.push(other)
    await sendThrough(join(d, 'other.sock'), randomBytes(10))
    const r = await other.waitForSession(1)
    expect(r.error).toMatch(/already running/)
    expect(dst.counters.refused).toBe(1)
    q.end()
    await src.waitForSession(1)
  })
})

async function waitUntil(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 20))
}

describe('TLS transport', () => {
  const hasOpenssl = spawnSync('openssl', ['version']).status === 0
  it.skipIf(!hasOpenssl)('token + TLS: byte-exact both ways with half-close', async () => {
    const cert = makeCert()
    const d = dir()
    const { src, dst, srcSock, dstSock } = await pair(d, {
      dstToken: 'x',
      srcToken: 'x',
      tls: cert,
      ca: cert.cert,
    })
    expect(dst.address).toMatch(/^tls:/)
    const received = await fakeDestinationQemu(dstSock)
    const payload = randomBytes(2 << 20)
    expect(await sendThrough(srcSock, payload)).toBe('PONGSHUT')
    expect((await src.waitForSession(1)).ok).toBe(true)
    expect((await dst.waitForSession(1)).ok).toBe(true)
    expect(Buffer.concat(received).equals(payload)).toBe(true)
  })
})

describe('listening beyond loopback', () => {
  it('needs a token (the CLI side is in apps/cli/src/proxy-args.test.ts)', async () => {
    const d = dir()
    await expect(
      startDestinationProxy({ listen: { host: '0.0.0.0', port: 0 }, qemuSocket: join(d, 'q.sock') }),
    ).rejects.toThrow(/refusing to listen on 0\.0\.0\.0 without a token/)
    const withToken = await startDestinationProxy({
      listen: { host: '0.0.0.0', port: 0 },
      qemuSocket: join(d, 'q.sock'),
      token: 'x',
    })
    proxies.push(withToken)
    expect(withToken.address).toMatch(/^tcp:0\.0\.0\.0:\d+$/)
  })
})

describe('proxy token', () => {
  it('loads the token from a file (trimmed) or XBZRLE_TOKEN; an empty file is an error', () => {
    const d = dir()
    writeFileSync(join(d, 'tok'), '  s3cret\n')
    expect(
      loadProxyToken({ file: join(d, 'tok'), env: 'XBZRLE_TOKEN', environment: { XBZRLE_TOKEN: 'env' } }),
    ).toBe('s3cret')
    expect(loadProxyToken({ env: 'XBZRLE_TOKEN', environment: { XBZRLE_TOKEN: 'env' } })).toBe('env')
    expect(loadProxyToken({ env: 'XBZRLE_TOKEN', environment: {} })).toBeUndefined()
    writeFileSync(join(d, 'empty'), '\n')
    expect(() => loadProxyToken({ file: join(d, 'empty') })).toThrow(/is empty/)
  })
})

describe('timeouts (issue #18)', () => {
  it('connect timeout: a destination that accepts TCP but never speaks fails the session', async () => {
    const d = dir()
    const mute = createServer((s) => s.on('error', () => {}))
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r))
    track(mute)
    const addr = mute.address()
    const port = typeof addr === 'object' && addr ? addr.port : 0
    const src = await startSourceProxy({
      listen: join(d, 's.sock'),
      connect: tcpConnector({ host: '127.0.0.1', port }),
      connectTimeoutMs: 300,
    })
    proxies.push(src)
    await sendThrough(join(d, 's.sock'), randomBytes(100))
    const r = await src.waitForSession(1)
    expect(r.ok).toBe(false)
    expect(r.error).toMatch(/timed out after 300 ms/)
    expect(src.busy).toBe(false)
  })

  it('idle timeout: a migration where nothing moves is aborted on both halves', async () => {
    const d = dir()
    const { src, dst, srcSock, dstSock } = await pair(d, { src: { idleTimeoutMs: 300 } })
    // destination QEMU that reads and never answers
    const srv = createServer({ allowHalfOpen: true }, (s) => {
      s.on('data', () => {})
      s.on('error', () => {})
    })
    await new Promise<void>((r) => srv.listen(dstSock, r))
    track(srv)
    const q = netConnect({ path: srcSock, allowHalfOpen: true })
    q.on('error', () => {})
    q.on('data', () => {})
    q.write(randomBytes(1000)) // then silence, connection kept open
    const r = await src.waitForSession(1)
    expect(r.ok).toBe(false)
    expect(r.error).toMatch(/no data in either direction for 300 ms/)
    q.destroy()
    expect((await dst.waitForSession(1)).ok).toBe(false)
  })
})

describe('unix socket paths (issue #19 item 11)', () => {
  const target = () => tcpConnector({ host: '127.0.0.1', port: 9 })

  it('a second source proxy on a live socket is refused, and the first keeps its socket', async () => {
    const d = dir()
    const path = join(d, 's.sock')
    const first = await startSourceProxy({ listen: path, connect: target() })
    proxies.push(first)
    await expect(startSourceProxy({ listen: path, connect: target() })).rejects.toThrow(
      `unix:${path} is in use by another process`,
    )
    expect(existsSync(path)).toBe(true)
    await probeUnixSocket(path)
    // the probe and our check were no migrations
    await new Promise((r) => setTimeout(r, 50))
    expect(first.counters.sessions).toBe(0)
  })

  it('a stale socket (nobody accepts) is replaced; a regular file is not', async () => {
    const d = dir()
    const path = join(d, 's.sock')
    // bound, never listening: connect gets ECONNREFUSED, like the socket of a proxy that was killed
    execFileSync('python3', [
      '-c',
      'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])',
      path,
    ])
    expect(existsSync(path)).toBe(true)
    const p = await startSourceProxy({ listen: path, connect: target() })
    proxies.push(p)
    const file = join(d, 'file')
    writeFileSync(file, 'keep me')
    await expect(startSourceProxy({ listen: file, connect: target() })).rejects.toThrow(/not a socket/)
    expect(readFileSync(file, 'utf8')).toBe('keep me')
  })

  it('on exit a proxy removes only the socket it created', async () => {
    const d = dir()
    const path = join(d, 's.sock')
    const a = await startSourceProxy({ listen: path, connect: target() })
    proxies.push(a)
    // Someone moves A's socket away and another proxy takes the path.
    renameSync(path, join(d, 'moved.sock'))
    const b = await startSourceProxy({ listen: path, connect: target() })
    proxies.push(b)
    await a.close()
    expect(existsSync(path)).toBe(true)
    await probeUnixSocket(path)
    await b.close()
    expect(existsSync(path)).toBe(false)
  })
})
