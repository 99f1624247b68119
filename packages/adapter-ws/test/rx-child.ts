/**
 * Receiver in a child process for the backpressure test: a throttled sink, RSS sampled every 20 ms.
 * Prints one JSON line {port} when listening and one {digest, bytes, baseRss, maxRss} when the session ended.
 */
import { createReceiver } from '../src/index.js'
import { hashSink } from './helpers.js'

const delayEvery = Number(process.env.DELAY_EVERY ?? 1048576)
const delayMs = Number(process.env.DELAY_MS ?? 5)
const sink = hashSink({ delayEvery, delayMs, highWaterMark: 1024 * 1024 })
const baseRss = process.memoryUsage().rss
let maxRss = baseRss
const sampler = setInterval(() => {
  maxRss = Math.max(maxRss, process.memoryUsage().rss)
}, 20)
const rx = createReceiver({
  token: process.env.XB_TOKEN!,
  createPipeline: () => sink.writable,
  onEvent: (e) => {
    if (e.type === 'session-end' || e.type === 'session-error') {
      clearInterval(sampler)
      maxRss = Math.max(maxRss, process.memoryUsage().rss)
      process.stdout.write(
        `${JSON.stringify({ event: e.type, digest: sink.digest(), bytes: sink.bytes(), baseRss, maxRss })}\n`,
      )
      setTimeout(() => rx.close().then(() => process.exit(0)), 50)
    }
  },
})
const { port } = await rx.listen('127.0.0.1', 0)
process.stdout.write(`${JSON.stringify({ port })}\n`)
