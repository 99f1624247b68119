// Issue #19: session takeover, unsafe migration ids, pre-auth connection floods, refusals chosen by the pipeline,
// cleartext-token warnings.
import { connect, type Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import { describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import { generateStream, hashSink, MiB, until } from '../test/helpers.js'
import {
  CloseCode,
  createReceiver,
  createSender,
  isSafeMigrationId,
  type ReceiverEvent,
  type SenderEvent,
  SessionRefusal,
  sendStream,
} from './index.js'

const TOKEN = 'security-test-token'

/** A raw client: sends `hello`, resolves with the close code, the refuse message and the welcome, if any. */
function rawHello(port: number, hello: Record<string, unknown>, token = TOKEN) {
  return new Promise<{
    code: number
    refuse?: { code: string; message: string }
    welcome?: Record<string, unknown>
  }>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { authorization: `Bearer ${token}` } })
    let refuse: { code: string; message: string } | undefined
    let welcome: Record<string, unknown> | undefined
    ws.on('open', () =>
      ws.send(JSON.stringify({ type: 'hello', protocol: 'xbzrle', versions: [1, 2], ...hello })),
    )
    ws.on('message', (d, bin) => {
      if (bin) return
      const m = JSON.parse(d.toString())
      if (m.type === 'refuse') refuse = m
      if (m.type === 'welcome') {
        welcome = m
        ws.close(4999, 'test done')
      }
    })
    ws.on('error', () => {})
    ws.on('close', (code) =>
      resolve({ code, ...(refuse ? { refuse } : {}), ...(welcome ? { welcome } : {}) }),
    )
  })
}

describe('migration ids', () => {
  test('ids that could escape a directory or hide a file are refused at the handshake', async () => {
    const rx = createReceiver({ token: TOKEN, createPipeline: () => hashSink().writable })
    const { port } = await rx.listen('127.0.0.1', 0)
    try {
      for (const id of ['..', '.', '...', '.hidden', 'a:b']) {
        const r = await rawHello(port, { migrationId: id })
        expect(r.code, id).toBe(CloseCode.BAD_MIGRATION_ID)
        expect(r.refuse?.code).toBe('BAD_MIGRATION_ID')
        expect(r.refuse?.message).toMatch(/migration id/)
      }
      expect(rx.sessions).toEqual([])
      const ok = await rawHello(port, { migrationId: 'vm1-2024_a.b' })
      expect(ok.welcome?.migrationId).toBe('vm1-2024_a.b')
    } finally {
      await rx.close()
    }
  })

  test('isSafeMigrationId', () => {
    for (const id of ['vm1', 'a.b', 'a..b', 'A-Z_0.9', 'x'.repeat(128)])
      expect(isSafeMigrationId(id), id).toBe(true)
    for (const id of ['', '.', '..', '.x', 'a/b', 'a\\b', 'a:b', 'a b', 'x'.repeat(129), 'é'])
      expect(isSafeMigrationId(id), id).toBe(false)
  })

  test('the sender refuses an unsafe id of its own before connecting', async () => {
    await expect(
      sendStream(generateStream(1024).readable, 'ws://127.0.0.1:1/', { token: TOKEN, migrationId: '..' }),
    ).rejects.toThrow(/migration id/)
  })
})

describe('session secret', () => {
  test('a second client with the token and the same id cannot resume (take over) a live session', async () => {
    const sink = hashSink()
    const events: ReceiverEvent[] = []
    const rx = createReceiver({
      token: TOKEN,
      createPipeline: () => sink.writable,
      onEvent: (e) => events.push(e),
    })
    const { port } = await rx.listen('127.0.0.1', 0)
    try {
      const g = generateStream(8 * MiB, 5)
      const feed = new PassThrough()
      const first = Buffer.alloc(64 * 1024, 7)
      feed.write(first)
      const sender = createSender(feed, `ws://127.0.0.1:${port}/`, { token: TOKEN, migrationId: 'victim' })
      await until(() => rx.sessions.some((s) => s.migrationId === 'victim' && s.bytes > 0), 5000, 'victim')
      // no secret, a wrong secret, and a well-formed random one: all refused, the live sender stays attached
      for (const extra of [
        {},
        { sessionSecret: 'x' },
        { sessionSecret: Buffer.alloc(32, 1).toString('base64url') },
      ]) {
        const r = await rawHello(port, {
          migrationId: 'victim',
          resume: { fromSeq: 1 },
          returnFromSeq: 1,
          ...extra,
        })
        expect(r.welcome).toBeUndefined()
        expect(r.code).toBe(CloseCode.BAD_SESSION_SECRET)
        expect(r.refuse?.message).toMatch(/session secret/)
      }
      expect(rx.sessions.find((s) => s.migrationId === 'victim')?.connected).toBe(true)
      g.readable.pipe(feed)
      const r = await sender.done
      expect(r.reconnects).toBe(0)
      expect(r.receiverBytes).toBe(first.length + 8 * MiB)
      expect(events.some((e) => e.type === 'session-resume')).toBe(false)
    } finally {
      await rx.close()
    }
  })

  test('the first welcome carries a 32-byte secret; a resume must present it', async () => {
    const rx = createReceiver({ token: TOKEN, createPipeline: () => new PassThrough() })
    const { port } = await rx.listen('127.0.0.1', 0)
    try {
      const first = await rawHello(port, { migrationId: 'sec-1' })
      const secret = first.welcome?.sessionSecret as string
      expect(Buffer.from(secret, 'base64url')).toHaveLength(32)
      await until(() => rx.sessions[0]?.connected === false, 5000, 'detach')
      const resumed = await rawHello(port, {
        migrationId: 'sec-1',
        resume: { fromSeq: 1 },
        returnFromSeq: 1,
        sessionSecret: secret,
      })
      expect(resumed.welcome?.resumeFromSeq).toBe(1)
      expect(resumed.welcome?.sessionSecret).toBeUndefined() // never sent again
    } finally {
      await rx.close()
    }
  })
})

describe('pre-auth connections', () => {
  test('a flood of idle unauthenticated sockets does not lock out an authenticated sender', async () => {
    const rx = createReceiver({ token: TOKEN, createPipeline: () => sink.writable })
    const sink = hashSink()
    const { port } = await rx.listen('127.0.0.1', 0)
    const FLOOD = 300
    const socks: Socket[] = []
    let closed = 0
    const allClosed: Promise<unknown>[] = []
    try {
      for (let i = 0; i < FLOOD; i++) {
        const s = connect(port, '127.0.0.1')
        s.on('error', () => {})
        allClosed.push(new Promise((r) => s.on('close', () => r(closed++))))
        socks.push(s)
      }
      // every flood socket is either held by the receiver or already dropped
      await until(() => rx.connections + closed >= FLOOD, 10_000, 'flood accepted')
      const g = generateStream(4 * MiB, 9)
      const r = await sendStream(g.readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        reconnect: { initialDelayMs: 50, maxDelayMs: 200, timeLimitMs: 4000 },
      })
      expect(r.receiverBytes).toBe(4 * MiB)
      expect(sink.digest()).toBe(g.digest())
      // the flood goes away by itself (eviction or the pre-auth timeout)
      await Promise.all(allClosed)
      await until(() => rx.connections === 0, 10_000, 'all connections closed')
    } finally {
      for (const s of socks) s.destroy()
      await rx.close()
    }
  })

  test('a flood that reopens every socket it loses (bounded, stops by itself) does not lock out a sender', async () => {
    const sink = hashSink()
    const rx = createReceiver({
      token: TOKEN,
      createPipeline: () => sink.writable,
    })
    const { port } = await rx.listen('127.0.0.1', 0)
    const MAX_OPENS = 20_000
    let opens = 0
    let stop = false
    let open = 0
    const socks = new Set<Socket>()
    const openOne = () => {
      if (stop || opens >= MAX_OPENS) return
      opens++
      open++
      const s = connect(port, '127.0.0.1')
      socks.add(s)
      s.on('error', () => {})
      s.on('close', () => {
        open--
        socks.delete(s)
        openOne() // lost one: open another
      })
    }
    try {
      for (let i = 0; i < 300; i++) openOne() // more than maxConnections (256)
      await until(() => rx.connections >= 64 || opens >= MAX_OPENS, 10_000, 'flood')
      const g = generateStream(4 * MiB, 10)
      const r = await sendStream(g.readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        reconnect: { initialDelayMs: 50, maxDelayMs: 200, timeLimitMs: 8000 },
      })
      expect(r.receiverBytes).toBe(4 * MiB)
      expect(sink.digest()).toBe(g.digest())
      expect(opens).toBeLessThan(MAX_OPENS) // the flood was still going when the sender finished
    } finally {
      stop = true
      for (const s of socks) s.destroy()
      await until(() => open === 0, 10_000, 'flood sockets closed')
      await rx.close()
    }
  })

  test('unauthenticated connections are limited separately and time out', async () => {
    const events: ReceiverEvent[] = []
    const rx = createReceiver({
      token: TOKEN,
      maxPreAuthConnections: 8,
      preAuthTimeoutMs: 300,
      createPipeline: () => hashSink().writable,
      onEvent: (e) => events.push(e),
    })
    const { port } = await rx.listen('127.0.0.1', 0)
    const socks: Socket[] = []
    try {
      const closedAll: Promise<unknown>[] = []
      let closed = 0
      for (let i = 0; i < 20; i++) {
        const s = connect(port, '127.0.0.1')
        s.on('error', () => {})
        closedAll.push(new Promise((r) => s.on('close', () => r(closed++))))
        socks.push(s)
      }
      await until(() => rx.connections + closed >= 20, 10_000, 'accepted')
      expect(rx.connections).toBeLessThanOrEqual(8)
      await Promise.all(closedAll)
      // a WebSocket that never says hello is told why
      const silent = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`)
        ws.on('error', () => {})
        ws.on('close', (code) => resolve(code))
      })
      expect(silent).toBe(CloseCode.HANDSHAKE_TIMEOUT)
    } finally {
      for (const s of socks) s.destroy()
      await rx.close()
    }
  })
})

describe('refusals chosen by the pipeline', () => {
  test('a SessionRefusal from the factory or the writable reaches the sender with its own code', async () => {
    const rx = createReceiver({
      token: TOKEN,
      createPipeline: (s) => {
        if (s.migrationId === 'busy')
          throw new SessionRefusal('OUTPUT_BUSY', 'output /x is in use by migration a')
        const w = new PassThrough()
        w.once('data', () =>
          w.destroy(
            new SessionRefusal('STREAM_HEADER_MISMATCH', 'stream header asks for more than admitted'),
          ),
        )
        return w
      },
    })
    const { port } = await rx.listen('127.0.0.1', 0)
    try {
      const busy = await sendStream(generateStream(MiB).readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        migrationId: 'busy',
      }).catch((e: Error & { closeCode?: number }) => e)
      expect(String(busy)).toMatch(/refused: 4411 OUTPUT_BUSY: output \/x is in use by migration a/)
      const mismatch = await sendStream(generateStream(MiB).readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        migrationId: 'big',
      }).catch((e: Error) => e)
      expect(String(mismatch)).toMatch(/refused: 4508 STREAM_HEADER_MISMATCH: stream header asks for more/)
      expect(rx.memoryInUse).toBe(0)
    } finally {
      await rx.close()
    }
  })
})

describe('cleartext token warnings', () => {
  test('the sender warns once when a token goes over ws:// to a non-loopback host', async () => {
    const rx = createReceiver({ token: TOKEN, createPipeline: () => hashSink().writable })
    const { port } = await rx.listen('127.0.0.1', 0)
    try {
      const events: SenderEvent[] = []
      // 0.0.0.0 reaches the local host on Linux, but is not a loopback name: the token would be exposed
      await sendStream(generateStream(1024).readable, `ws://0.0.0.0:${port}/`, {
        token: TOKEN,
        onEvent: (e) => events.push(e),
      })
      const loopback: SenderEvent[] = []
      await sendStream(generateStream(1024).readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        onEvent: (e) => loopback.push(e),
      })
      const warnings = events.filter((e) => e.type === 'warning')
      expect(warnings).toHaveLength(1)
      expect(JSON.stringify(warnings[0])).toMatch(/cleartext|without TLS/)
      expect(JSON.stringify(warnings[0])).not.toContain(TOKEN)
      expect(loopback.filter((e) => e.type === 'warning')).toEqual([])
    } finally {
      await rx.close()
    }
  })

  test('the receiver warns when it accepts a token without TLS on a non-loopback address', async () => {
    const events: ReceiverEvent[] = []
    const rx = createReceiver({
      token: TOKEN,
      createPipeline: () => hashSink().writable,
      onEvent: (e) => events.push(e),
    })
    await rx.listen('0.0.0.0', 0)
    await rx.close()
    const local: ReceiverEvent[] = []
    const rx2 = createReceiver({
      token: TOKEN,
      createPipeline: () => hashSink().writable,
      onEvent: (e) => local.push(e),
    })
    await rx2.listen('127.0.0.1', 0)
    await rx2.close()
    expect(events.filter((e) => e.type === 'warning')).toHaveLength(1)
    expect(local.filter((e) => e.type === 'warning')).toEqual([])
  })
})
