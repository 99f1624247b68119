import { createHash } from 'node:crypto'
import { beforeAll, describe, expect, test } from 'vitest'
import { generateStream, hashSink, MiB, makeCert, type TestCert } from '../test/helpers.js'
import { createReceiver, createSender, sendStream } from './index.js'

const TOKEN = 'transfer-test-token'

describe('byte-exact transfers over real sockets', () => {
  let cert: TestCert
  beforeAll(() => {
    cert = makeCert()
  })

  test('ws:// carries 256 MiB byte-exact', async () => {
    const sink = hashSink()
    const rx = createReceiver({ token: TOKEN, createPipeline: () => sink.writable })
    try {
      const { port } = await rx.listen('127.0.0.1', 0)
      const g = generateStream(256 * MiB, 11)
      const r = await sendStream(g.readable, `ws://127.0.0.1:${port}/migrate`, { token: TOKEN })
      expect(r.bytes).toBe(256 * MiB)
      expect(r.receiverBytes).toBe(256 * MiB)
      expect(sink.bytes()).toBe(256 * MiB)
      expect(sink.digest()).toBe(g.digest())
      expect(rx.sessions).toEqual([])
      expect(rx.memoryInUse).toBe(0)
    } finally {
      await rx.close()
    }
  })

  test('wss:// (self-signed CA, zero mask) carries 256 MiB byte-exact', async () => {
    const sink = hashSink()
    const rx = createReceiver({ token: TOKEN, tls: cert, createPipeline: () => sink.writable })
    try {
      const { port } = await rx.listen('127.0.0.1', 0)
      const g = generateStream(256 * MiB, 12)
      const r = await sendStream(g.readable, `wss://localhost:${port}/migrate`, {
        token: TOKEN,
        ca: cert.cert,
        zeroMask: true,
      })
      expect(r.bytes).toBe(256 * MiB)
      expect(sink.digest()).toBe(g.digest())
    } finally {
      await rx.close()
    }
  })

  test('wss:// without the CA fails with a certificate error and does not retry', async () => {
    const rx = createReceiver({ token: TOKEN, tls: cert, createPipeline: () => hashSink().writable })
    try {
      const { port } = await rx.listen('127.0.0.1', 0)
      await expect(
        sendStream(generateStream(MiB).readable, `wss://localhost:${port}/`, { token: TOKEN }),
      ).rejects.toThrow(/self-signed certificate/)
    } finally {
      await rx.close()
    }
  })

  test('maxRate: the delivered rate, measured against wall time, stays at the limit', async () => {
    const sink = hashSink()
    const rx = createReceiver({ token: TOKEN, createPipeline: () => sink.writable })
    try {
      const { port } = await rx.listen('127.0.0.1', 0)
      const total = 8 * MiB
      const rate = 16 * MiB
      const burst = MiB
      const g = generateStream(total, 13)
      const t0 = performance.now()
      const r = await sendStream(g.readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        maxRate: rate,
        rateBurstBytes: burst,
        maxMessageBytes: 256 * 1024,
      })
      const seconds = (performance.now() - t0) / 1000
      expect(r.receiverBytes).toBe(total)
      expect(sink.digest()).toBe(g.digest())
      // Unlimited, 8 MiB cross loopback in a few tens of ms. Limited, everything past the initial burst needs
      // (total - burst) / rate = 0.44 s at least; a busy machine only makes it slower, so only the lower bound
      // is checked (with 10% for timer granularity).
      const delivered = (total - burst) / seconds
      expect(delivered).toBeLessThan(rate * 1.1)
    } finally {
      await rx.close()
    }
  })

  test('return path: bytes written on the receiver side arrive on the sender side', async () => {
    const back = createHash('sha256')
    const rx = createReceiver({
      token: TOKEN,
      createPipeline: (session) => {
        const sink = hashSink()
        let n = 0
        sink.writable.on('finish', () => session.returnPath.end(Buffer.from(`total ${n}\n`)))
        const w = sink.writable
        const origWrite = w.write.bind(w)
        w.write = ((chunk: Buffer, ...rest: never[]) => {
          n += chunk.length
          const reply = Buffer.from(`got ${chunk.length}\n`)
          back.update(reply)
          session.returnPath.write(reply)
          return origWrite(chunk, ...rest)
        }) as typeof w.write
        return w
      },
    })
    try {
      const { port } = await rx.listen('127.0.0.1', 0)
      const g = generateStream(16 * MiB, 14)
      const s = createSender(g.readable, `ws://127.0.0.1:${port}/`, { token: TOKEN })
      const got = createHash('sha256')
      const chunks: Buffer[] = []
      s.returnPath.on('data', (c: Buffer) => {
        got.update(c)
        chunks.push(c)
      })
      const ended = new Promise((r) => s.returnPath.on('end', r))
      await s.done
      await ended
      const text = Buffer.concat(chunks).toString()
      expect(text.endsWith(`total ${16 * MiB}\n`)).toBe(true)
      back.update(`total ${16 * MiB}\n`)
      expect(got.digest('hex')).toBe(back.digest('hex'))
    } finally {
      await rx.close()
    }
  })
})
