import { type ChildProcess, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, expect, test } from 'vitest'
import { generateStream, MiB } from '../test/helpers.js'
import { sendStream } from './index.js'

let child: ChildProcess | undefined
afterEach(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL')
  child = undefined
})

test('a slow receiver slows the sender: 512 MiB with bounded RSS on both sides (separate processes)', async () => {
  const token = 'bp-token'
  const script = fileURLToPath(new URL('../test/rx-child.ts', import.meta.url))
  child = spawn(process.execPath, ['--conditions=@xbzrle/source', '--import', 'tsx', script], {
    env: { ...process.env, XB_TOKEN: token, DELAY_EVERY: String(MiB), DELAY_MS: '4' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: child.stdout! })
  const it = lines[Symbol.asyncIterator]()
  const first = await it.next()
  const { port } = JSON.parse(first.value as string) as { port: number }

  global.gc?.()
  const baseRss = process.memoryUsage().rss
  let maxRss = baseRss
  const sampler = setInterval(() => {
    maxRss = Math.max(maxRss, process.memoryUsage().rss)
  }, 20)
  const total = 512 * MiB
  const g = generateStream(total, 31)
  try {
    const r = await sendStream(g.readable, `ws://127.0.0.1:${port}/`, { token })
    expect(r.receiverBytes).toBe(total)
  } finally {
    clearInterval(sampler)
  }
  const last = await it.next()
  const report = JSON.parse(last.value as string) as {
    event: string
    digest: string
    bytes: number
    baseRss: number
    maxRss: number
  }
  expect(report.event).toBe('session-end')
  expect(report.bytes).toBe(total)
  expect(report.digest).toBe(g.digest())
  const senderGrowth = (maxRss - baseRss) / MiB
  const receiverGrowth = (report.maxRss - report.baseRss) / MiB
  console.log(`RSS growth: sender ${senderGrowth.toFixed(0)} MiB, receiver ${receiverGrowth.toFixed(0)} MiB`)
  expect(senderGrowth).toBeLessThan(200)
  expect(receiverGrowth).toBeLessThan(200)
  await new Promise((r) => (child!.exitCode !== null ? r(null) : child!.once('exit', r)))
})
