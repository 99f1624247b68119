import { expect, test } from 'vitest'
import { type ChannelTransport, ReliableChannel } from './channel.js'
import { decodeMessage, encodeMessage, KIND_DATA, KIND_END } from './frame.js'
import { parseControl } from './messages.js'
import { TokenBucket } from './rate.js'

/** Two channels joined by an in-memory link that can be cut (messages in flight are lost). */
function pair() {
  const delivered: { a: Buffer[]; b: Buffer[] } = { a: [], b: [] }
  let link = 0
  const mk = (name: 'a' | 'b', peer: () => ReliableChannel) => {
    const ch = new ReliableChannel({
      windowBytes: 1000,
      highWaterBytes: 1 << 20,
      ackEveryBytes: 100,
      ackDelayMs: 1,
      deliver: (p) => {
        delivered[name].push(Buffer.from(p))
        return true
      },
      onInboundEnd: () => {},
    })
    const transport = (): ChannelTransport => {
      const myLink = link
      return {
        bufferedAmount: 0,
        sendBinary: (buf, cb) =>
          queueMicrotask(() => {
            if (myLink === link) peer().handleBinary(buf)
            cb()
          }),
        sendText: (text) =>
          queueMicrotask(() => {
            const r = parseControl(text)
            if (myLink === link && r.ok && r.msg.type === 'ack') peer().handleAck(r.msg.seq)
          }),
      }
    }
    return { ch, transport }
  }
  const A: ReturnType<typeof mk> = mk('a', () => B.ch)
  const B: ReturnType<typeof mk> = mk('b', () => A.ch)
  const connect = () => {
    link++
    A.ch.attach(A.transport(), B.ch.nextExpected)
    B.ch.attach(B.transport(), A.ch.nextExpected)
  }
  const cut = () => {
    link++
    A.ch.detach()
    B.ch.detach()
  }
  return { A: A.ch, B: B.ch, delivered, connect, cut }
}

const tick = () => new Promise((r) => setTimeout(r, 3))

test('frame header round trip and rejection of malformed headers', () => {
  const m = encodeMessage(KIND_DATA, 2 ** 40 + 5, [Buffer.from('ab'), Buffer.from('c')])
  expect(decodeMessage(m)).toEqual({ kind: KIND_DATA, seq: 2 ** 40 + 5, payload: Buffer.from('abc') })
  expect(decodeMessage(encodeMessage(KIND_END, 1))?.kind).toBe(KIND_END)
  expect(decodeMessage(Buffer.from([1, 0, 0]))).toBeUndefined()
  expect(decodeMessage(Buffer.from([9, 0, 0, 0, 0, 0, 0, 1]))).toBeUndefined()
  expect(decodeMessage(Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]))).toBeUndefined() // seq 0
})

test('both directions survive repeated cuts: in order, nothing lost, nothing twice', async () => {
  const { A, B, delivered, connect, cut } = pair()
  connect()
  const sentA: Buffer[] = []
  const sentB: Buffer[] = []
  let i = 0
  while (i < 400) {
    if (A.canSend) {
      const p = Buffer.from(`a${i}:`.padEnd(40, 'x'))
      sentA.push(p)
      A.send([p])
    }
    if (B.canSend && i % 3 === 0) {
      const p = Buffer.from(`b${i}`)
      sentB.push(p)
      B.send([p])
    }
    i++
    if (i % 50 === 25) {
      cut()
      await tick()
      connect()
    }
    await tick()
  }
  A.end()
  B.end()
  for (let k = 0; k < 50 && !(A.outComplete && B.outComplete); k++) await tick()
  expect(A.outComplete && B.outComplete).toBe(true)
  expect(Buffer.concat(delivered.b).toString()).toBe(Buffer.concat(sentA).toString())
  expect(Buffer.concat(delivered.a).toString()).toBe(Buffer.concat(sentB).toString())
  expect(A.retransmits + B.retransmits).toBeGreaterThan(0)
  expect(B.inEnded && A.inEnded).toBe(true)
})

test('window: canSend turns false at windowBytes of unacked data', () => {
  const ch = new ReliableChannel({
    windowBytes: 100,
    highWaterBytes: 1 << 20,
    ackEveryBytes: 10,
    ackDelayMs: 1,
    deliver: () => true,
    onInboundEnd: () => {},
  })
  ch.attach({ bufferedAmount: 0, sendBinary: () => {}, sendText: () => {} }, 1)
  while (ch.canSend) ch.send([Buffer.alloc(30)])
  expect(ch.unackedBytes).toBeGreaterThanOrEqual(100)
  expect(ch.nextOutSeq - 1).toBe(3)
  ch.handleAck(2)
  expect(ch.canSend).toBe(true)
  expect(() => ch.handleAck(99)).toThrow(/ack for 99/)
  expect(() => ch.attach({ bufferedAmount: 0, sendBinary: () => {}, sendText: () => {} }, 1)).toThrow(
    /cannot resume at sequence 1/,
  )
})

test('inbound: a sequence gap is a protocol error, duplicates are dropped', () => {
  const got: string[] = []
  const ch = new ReliableChannel({
    windowBytes: 100,
    highWaterBytes: 100,
    ackEveryBytes: 10,
    ackDelayMs: 1,
    deliver: (p) => {
      got.push(p.toString())
      return true
    },
    onInboundEnd: () => {},
  })
  ch.handleBinary(encodeMessage(KIND_DATA, 1, [Buffer.from('x')]))
  ch.handleBinary(encodeMessage(KIND_DATA, 1, [Buffer.from('x')]))
  expect(got).toEqual(['x'])
  expect(() => ch.handleBinary(encodeMessage(KIND_DATA, 3, [Buffer.from('z')]))).toThrow(/sequence gap/)
  ch.dispose()
})

test('token bucket accounting', async () => {
  let now = 0
  const b = new TokenBucket(1000, 500, () => now)
  expect(b.delayFor(500)).toBe(0)
  await b.take(500)
  expect(b.delayFor(100)).toBe(100)
  now += 100
  await b.take(100)
  // empty now: the next byte waits for the refill, and a full bucket never holds more than its capacity
  expect(b.delayFor(1)).toBe(1)
  now += 10_000
  expect(b.delayFor(500)).toBe(0)
  await b.take(500)
  expect(b.delayFor(1)).toBe(1)
  expect(() => new TokenBucket(0, 1)).toThrow(RangeError)
})
