import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { formatVersions, SUPPORTED_VERSIONS } from '@xbzrle/protocol'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import WebSocket from 'ws'
import { generateStream, type HashSink, hashSink, MiB, until } from '../test/helpers.js'
import { CloseCode, createReceiver, loadToken, type Receiver, SendError, sendStream } from './index.js'

const TOKEN = 'hostile-test-token'

describe('hostile peers against one receiver', () => {
  let rx: Receiver
  let port: number
  let seed = 100
  const errors: unknown[] = []
  const sinks = new Map<string, HashSink>()
  const onUnhandled = (e: unknown) => errors.push(e)

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled)
    process.on('uncaughtException', onUnhandled)
    rx = createReceiver({
      token: TOKEN,
      handshakeTimeoutMs: 400,
      maxConnections: 300,
      maxControlBytes: 4096,
      maxMessageBytes: 256 * 1024,
      memoryCapBytes: 200 * MiB,
      maxSessionBytes: 150 * MiB,
      createPipeline: (s) => {
        // Pipelines that fail in the two ways a real one can (a real decoder failing on a real truncated or
        // corrupted stream: apps/cli/src/ws-pipeline-errors.test.ts): the writable errors while data flows, or
        // the `done` promise rejects once everything was written.
        if (s.migrationId.startsWith('fail-'))
          return new Writable({ write: (_c, _e, cb) => cb(new Error('stub: write failed')) })
        if (s.migrationId.startsWith('late-')) {
          const sink = hashSink()
          const done = new Promise<void>((_resolve, reject) =>
            sink.writable.on('finish', () => reject(new Error('stub: done rejected'))),
          )
          done.catch(() => {})
          return { writable: sink.writable, done }
        }
        const sink = hashSink()
        sinks.set(s.migrationId, sink)
        return sink.writable
      },
    })
    port = (await rx.listen('127.0.0.1', 0)).port
  })
  afterAll(async () => {
    await rx.close()
    process.off('unhandledRejection', onUnhandled)
    process.off('uncaughtException', onUnhandled)
    expect(errors).toEqual([])
  })

  /** A well-behaved migration running alongside the hostile peer. */
  const good = async (bytes = 24 * MiB) => {
    const id = `good-${seed}`
    const g = generateStream(bytes, seed++)
    const r = await sendStream(g.readable, `ws://127.0.0.1:${port}/good`, {
      token: TOKEN,
      migrationId: id,
      maxMessageBytes: 256 * 1024,
    })
    expect(r.receiverBytes).toBe(bytes)
    expect(sinks.get(id)?.digest()).toBe(g.digest())
  }
  const url = () => `ws://127.0.0.1:${port}/`

  /** Opens a raw ws client and resolves with the close code and the refuse message, if any. */
  const hostile = (act: (ws: WebSocket) => void, headers: Record<string, string> = {}) =>
    new Promise<{ code: number; refuse?: { code: string; message: string } }>((resolve) => {
      const ws = new WebSocket(url(), { headers: { authorization: `Bearer ${TOKEN}`, ...headers } })
      let refuse: { code: string; message: string } | undefined
      ws.on('open', () => act(ws))
      ws.on('message', (d, bin) => {
        if (!bin) {
          const m = JSON.parse(d.toString())
          if (m.type === 'refuse') refuse = m
        }
      })
      ws.on('error', () => {})
      ws.on('close', (code) => resolve({ code, ...(refuse ? { refuse } : {}) }))
    })
  const hello = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({ type: 'hello', protocol: 'xbzrle', versions: [1], migrationId: `h-${seed++}`, ...extra })

  test('wrong token → 4401, and the sender says so plainly', async () => {
    const [bad] = await Promise.all([
      sendStream(generateStream(MiB).readable, url(), { token: 'nope' }).catch((e: Error) => e),
      good(),
    ])
    expect(String(bad)).toMatch(/refused: 4401 BAD_TOKEN: missing or invalid token/)
    expect(String(bad)).not.toContain('nope')
    const noHeader = await hostile((ws) => ws.send(hello()), { authorization: '' })
    expect(noHeader.code).toBe(CloseCode.BAD_TOKEN)
    const inHello = await hostile(
      (ws) => {
        ws.send(hello({ token: TOKEN, migrationId: 'token-in-hello' }))
        ws.on('message', (d) => {
          if (JSON.parse(d.toString()).type === 'welcome') ws.close(4000 + 999, 'bye')
        })
      },
      { authorization: '' },
    )
    expect(inHello.code).toBe(4999) // accepted (welcome), then closed by us
    expect(rx.sessions.find((s) => s.migrationId === 'token-in-hello')?.connected).toBe(false)
  })

  test('garbage: non-JSON hello, binary before hello, schema-invalid hello → 4400', async () => {
    const [a, b, c, d] = await Promise.all([
      hostile((ws) => ws.send('{not json')),
      hostile((ws) => ws.send(Buffer.from([1, 2, 3]))),
      hostile((ws) =>
        ws.send(JSON.stringify({ type: 'hello', protocol: 'xbzrle', versions: [], migrationId: '' })),
      ),
      hostile((ws) => ws.send(JSON.stringify({ type: 'ack', seq: 1 }))),
      good(),
    ])
    for (const r of [a, b, c, d]) expect(r.code).toBe(CloseCode.BAD_HELLO)
    expect(a.refuse?.message).toMatch(/not valid JSON/)
    expect(c.refuse?.message).toMatch(/versions/)
    // raw TCP garbage instead of HTTP
    const sock = connect(port, '127.0.0.1')
    sock.on('error', () => {})
    sock.write('GARBAGE\r\n\r\n\x00\x01\x02')
    await new Promise((r) => sock.on('close', r))
  })

  test('oversized messages: data over maxPayload → 1009, control over maxControlBytes → 4413', async () => {
    const [big, bigHello] = await Promise.all([
      hostile((ws) => {
        ws.send(hello())
        setTimeout(() => ws.send(Buffer.alloc(2 * MiB)), 50)
      }),
      hostile((ws) => ws.send(hello({ pad: 'x'.repeat(10_000) }))),
      good(),
    ])
    expect(big.code).toBe(1009)
    expect(bigHello.code).toBe(CloseCode.MESSAGE_TOO_BIG)
  })

  test('slow-loris: silent TCP and silent WebSocket are closed after the handshake timeout', async () => {
    const t0 = Date.now()
    const sock = connect(port, '127.0.0.1')
    sock.on('error', () => {})
    const half = connect(port, '127.0.0.1')
    half.on('error', () => {})
    half.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n') // never finishes the headers
    const [silentWs] = await Promise.all([
      hostile(() => {}),
      new Promise((r) => sock.on('close', r)),
      new Promise((r) => half.on('close', r)),
      good(),
    ])
    expect(silentWs.code).toBe(CloseCode.HANDSHAKE_TIMEOUT)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350)
  })

  test('a thousand idle connections: dropped or timed out, the server stays up', async () => {
    const running = good(48 * MiB)
    await until(() => rx.sessions.length > 0, 5000, 'good session')
    const socks: Socket[] = []
    const closed: Promise<unknown>[] = []
    for (let i = 0; i < 1000; i++) {
      const s = connect(port, '127.0.0.1')
      s.on('error', () => {})
      closed.push(new Promise((r) => s.on('close', r)))
      socks.push(s)
    }
    await running
    await Promise.all(closed)
    await until(() => rx.connections < 5, 5000, 'connections to drain')
    await good() // and new migrations still work
  })

  test('version negotiation: only unknown versions → 4406 with a clear message', async () => {
    const [err] = await Promise.all([
      sendStream(generateStream(MiB).readable, url(), { token: TOKEN, versions: [97, 98] }).catch(
        (e: Error) => e,
      ),
      good(),
    ])
    expect(String(err)).toContain(
      `refused: 4406 NO_COMMON_VERSION: no common xbzrle protocol version: we speak ${formatVersions(SUPPORTED_VERSIONS)}, peer speaks 97–98`,
    )
  })

  test('duplicate migration id → 4409; resume of an unknown session → 4410', async () => {
    const slow = new PassThrough()
    slow.write(Buffer.alloc(1024))
    const first = sendStream(slow, url(), { token: TOKEN, migrationId: 'dup-1' })
    await until(() => rx.sessions.some((s) => s.migrationId === 'dup-1'), 5000, 'dup-1')
    const second = await sendStream(generateStream(MiB).readable, url(), {
      token: TOKEN,
      migrationId: 'dup-1',
    }).catch((e: Error) => e)
    expect(String(second)).toMatch(/4409 DUPLICATE_SESSION/)
    slow.end()
    await first
    const gone = await hostile((ws) => ws.send(hello({ resume: { fromSeq: 5 } })))
    expect(gone.code).toBe(CloseCode.SESSION_GONE)
  })

  test('memory: declared cache too large → 4507; over the global cap → 4503', async () => {
    const header = (cacheBytes: number) => ({
      version: 1,
      pageSize: 4096,
      cache: { cacheBytes, ways: 1, policy: 'lru' },
      mode: 'canonical' as const,
      source: 'qemu' as const,
    })
    const tooLarge = await sendStream(generateStream(MiB).readable, url(), {
      token: TOKEN,
      header: header(400 * MiB),
    }).catch((e: Error) => e)
    expect(String(tooLarge)).toMatch(/4507 SESSION_TOO_LARGE/)
    const before = rx.memoryInUse
    // hold 140 MiB with a stalled migration, then ask for 100 MiB more
    const stalled = new PassThrough()
    const first = sendStream(stalled, url(), {
      token: TOKEN,
      migrationId: 'mem-1',
      header: header(130 * MiB),
    })
    await until(() => rx.sessions.some((s) => s.migrationId === 'mem-1'), 5000, 'mem-1')
    const over = await sendStream(generateStream(MiB).readable, url(), {
      token: TOKEN,
      header: header(100 * MiB),
    }).catch((e: Error) => e)
    expect(String(over)).toMatch(/4503 OVER_MEMORY_CAP/)
    stalled.end()
    await first
    expect(rx.memoryInUse).toBe(before)
  })

  test('a pipeline error (writable error, or done rejecting after the end) closes 4500 PIPELINE_ERROR and fails the sender with that code', async () => {
    const [a, b] = await Promise.all([
      sendStream(generateStream(4 * MiB).readable, url(), { token: TOKEN, migrationId: 'fail-1' }).catch(
        (e: unknown) => e,
      ),
      sendStream(generateStream(4 * MiB).readable, url(), { token: TOKEN, migrationId: 'late-1' }).catch(
        (e: unknown) => e,
      ),
      good(),
    ])
    for (const e of [a, b]) {
      expect(e).toBeInstanceOf(SendError)
      expect(e).toMatchObject({ closeCode: CloseCode.PIPELINE_ERROR, refuseCode: 'PIPELINE_ERROR' })
      expect(CloseCode.PIPELINE_ERROR).toBe(4500)
      expect(String((e as Error).message)).not.toContain('\n')
    }
  })
})

describe('configuration', () => {
  test('listening on a non-loopback address without a token is refused', async () => {
    const rx = createReceiver({ createPipeline: () => hashSink().writable })
    await expect(rx.listen('0.0.0.0', 0)).rejects.toThrow(/refusing to listen on 0.0.0.0 without a token/)
    await rx.close()
  })

  test('loadToken reads a file or an environment variable, never argv', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xbzrle-token-'))
    try {
      writeFileSync(join(dir, 't'), '  s3cret\n')
      expect(loadToken({ file: join(dir, 't') })).toBe('s3cret')
      writeFileSync(join(dir, 'empty'), '\n')
      expect(() => loadToken({ file: join(dir, 'empty') })).toThrow(/is empty/)
      expect(() => loadToken({ file: join(dir, 'missing') })).toThrow(/cannot read token file .*ENOENT/)
      expect(loadToken({ env: 'XB_TOKEN', environment: { XB_TOKEN: 'e1' } })).toBe('e1')
      expect(() => loadToken({ env: 'XB_TOKEN', environment: {} })).toThrow(/XB_TOKEN is not set/)
      expect(loadToken({})).toBeUndefined()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
