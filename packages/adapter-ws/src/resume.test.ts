import { createHash } from 'node:crypto'
import { expect, test } from 'vitest'
import { faultProxy, generateStream, hashSink, MiB } from '../test/helpers.js'
import { createReceiver, createSender, type SenderEvent, sendStream } from './index.js'

const TOKEN = 'resume-test-token'

test('a proxy cutting the connection at random points: the transfer resumes and stays byte-exact', async () => {
  const sink = hashSink()
  let pipelines = 0
  const rx = createReceiver({
    token: TOKEN,
    resumeGraceMs: 10_000,
    createPipeline: () => {
      pipelines++
      return sink.writable
    },
  })
  const { port } = await rx.listen('127.0.0.1', 0)
  const proxy = await faultProxy(port, { minBytes: 2 * MiB, maxBytes: 20 * MiB, maxCuts: 6, seed: 7 })
  try {
    const g = generateStream(96 * MiB, 21)
    const events: SenderEvent[] = []
    const r = await sendStream(g.readable, `ws://127.0.0.1:${proxy.port}/m`, {
      token: TOKEN,
      reconnect: { initialDelayMs: 20, maxDelayMs: 200, timeLimitMs: 15_000 },
      onEvent: (e) => events.push(e),
    })
    expect(proxy.cuts()).toBe(6)
    expect(r.reconnects).toBeGreaterThanOrEqual(6)
    expect(r.retransmits).toBeGreaterThan(0)
    expect(events.filter((e) => e.type === 'connected').length).toBeGreaterThanOrEqual(7)
    expect(pipelines).toBe(1) // one pipeline for the whole migration, kept across reconnects
    expect(sink.bytes()).toBe(96 * MiB)
    expect(sink.digest()).toBe(g.digest())
  } finally {
    await proxy.close()
    await rx.close()
  }
})

test('return path survives reconnects', async () => {
  const written = createHash('sha256')
  const rx = createReceiver({
    token: TOKEN,
    createPipeline: (session) => {
      const sink = hashSink()
      let n = 0
      const w = sink.writable
      const orig = w.write.bind(w)
      w.write = ((chunk: Buffer, ...rest: never[]) => {
        // 4 KiB of return-path bytes per message received, derived from the data
        const reply = Buffer.alloc(4096, chunk[chunk.length - 1]!)
        reply.writeUInt32LE(n++, 0)
        written.update(reply)
        session.returnPath.write(reply)
        return orig(chunk, ...rest)
      }) as typeof w.write
      w.on('finish', () => session.returnPath.end())
      return w
    },
  })
  const { port } = await rx.listen('127.0.0.1', 0)
  const proxy = await faultProxy(port, { minBytes: 2 * MiB, maxBytes: 8 * MiB, maxCuts: 4, seed: 3 })
  try {
    const g = generateStream(32 * MiB, 22, 64 * 1024)
    const s = createSender(g.readable, `ws://127.0.0.1:${proxy.port}/`, {
      token: TOKEN,
      maxMessageBytes: 64 * 1024,
      reconnect: { initialDelayMs: 20, maxDelayMs: 100, timeLimitMs: 10_000 },
    })
    const got = createHash('sha256')
    let gotBytes = 0
    s.returnPath.on('data', (c: Buffer) => {
      got.update(c)
      gotBytes += c.length
    })
    const ended = new Promise((r) => s.returnPath.once('end', r))
    const r = await s.done
    await ended
    expect(proxy.cuts()).toBe(4)
    expect(r.reconnects).toBeGreaterThanOrEqual(4)
    expect(gotBytes).toBe(4096 * r.messages)
    expect(got.digest('hex')).toBe(written.digest('hex'))
  } finally {
    await proxy.close()
    await rx.close()
  }
})

test('connection lost for longer than the time limit: one-line error', async () => {
  const rx = createReceiver({
    token: TOKEN,
    createPipeline: () => hashSink({ delayEvery: 1, delayMs: 5 }).writable,
  })
  const { port } = await rx.listen('127.0.0.1', 0)
  const proxy = await faultProxy(port, { minBytes: MiB, maxBytes: 2 * MiB, maxCuts: 1 })
  const g = generateStream(64 * MiB, 23)
  const p = sendStream(g.readable, `ws://127.0.0.1:${proxy.port}/`, {
    token: TOKEN,
    reconnect: { initialDelayMs: 50, maxDelayMs: 100, timeLimitMs: 600 },
  })
  // take the proxy away right after the first cut
  const check = expect(p).rejects.toThrow(/connection lost and not resumed within the 600 ms time limit/)
  while (proxy.cuts() === 0) await new Promise((r) => setTimeout(r, 5))
  await proxy.close()
  await check
  g.readable.destroy()
  await rx.close()
})
