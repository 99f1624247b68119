// Base images in the handshake (issue #15): the receiver names its base in the welcome, the sender's offer
// reaches the pipeline factory, and peers without a base see neither.
import { describe, expect, test } from 'vitest'
import { generateStream, hashSink } from '../test/helpers.js'
import { type BaseOffer, createReceiver, type SenderEvent, type SessionInfo, sendStream } from './index.js'

const TOKEN = 'base-offer-test-token'
const ours: BaseOffer = { fingerprint: `sha256:${'11'.repeat(32)}`, bytes: 4096 }
const theirs: BaseOffer = { fingerprint: `sha256:${'22'.repeat(32)}`, bytes: 8192 }

async function run(receiverBase: BaseOffer | undefined, senderBase: BaseOffer | undefined) {
  const sessions: SessionInfo[] = []
  const events: SenderEvent[] = []
  const sink = hashSink()
  const rx = createReceiver({
    token: TOKEN,
    ...(receiverBase ? { base: receiverBase } : {}),
    createPipeline: (s) => {
      sessions.push(s)
      return sink.writable
    },
  })
  try {
    const { port } = await rx.listen('127.0.0.1', 0)
    const g = generateStream(64 * 1024, 3)
    await sendStream(g.readable, `ws://127.0.0.1:${port}/m`, {
      token: TOKEN,
      ...(senderBase ? { base: senderBase } : {}),
      onEvent: (e) => events.push(e),
    })
    expect(sink.digest()).toBe(g.digest())
  } finally {
    await rx.close()
  }
  const connected = events.find((e) => e.type === 'connected')
  return { session: sessions[0]!, welcomeBase: connected?.type === 'connected' ? connected.base : undefined }
}

describe('base images in the handshake', () => {
  test('each side learns the other one’s base', async () => {
    const r = await run(ours, theirs)
    expect(r.welcomeBase).toEqual(ours)
    expect(r.session.base).toEqual(theirs)
  })

  test('without bases, neither message carries one', async () => {
    const r = await run(undefined, undefined)
    expect(r.welcomeBase).toBeUndefined()
    expect(r.session.base).toBeUndefined()
  })
})
