import { expect, test } from 'vitest'
import { generateStream, hashSink, MiB } from '../test/helpers.js'
import { createReceiver, sendStream } from './index.js'

test('smoke', async () => {
  const sink = hashSink()
  const rx = createReceiver({ token: 't0k', createPipeline: () => sink.writable })
  const addr = await rx.listen('127.0.0.1', 0)
  const g = generateStream(64 * MiB)
  const t0 = performance.now()
  const r = await sendStream(g.readable, `ws://127.0.0.1:${addr.port}/x`, { token: 't0k' })
  console.log(r, ((64 * MiB) / ((performance.now() - t0) / 1000) / 1e6).toFixed(0), 'MB/s')
  expect(sink.digest()).toBe(g.digest())
  await rx.close()
})
