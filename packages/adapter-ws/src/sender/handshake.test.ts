// The sender's hello and its checks of the welcome, on plain data.
import { expect, test } from 'vitest'
import { ReliableChannel } from '../channel.js'
import { WsHelloSchema } from '../messages.js'
import { buildHello, type HelloInput, welcomeProblem } from './handshake.js'

const channel = { nextExpected: 3, oldestHeld: 7 }
const input = (over: Partial<HelloInput> = {}): HelloInput => ({
  migrationId: 'vm1',
  versions: [1, 2],
  header: undefined,
  token: undefined,
  resuming: false,
  sessionSecret: 'secret',
  channel,
  ...over,
})

test('a first hello: no resume and no secret, even when one is known', () => {
  const h = buildHello(input())
  expect(h).toEqual({
    type: 'hello',
    protocol: 'xbzrle',
    versions: [1, 2],
    migrationId: 'vm1',
    returnFromSeq: 3,
    secretAware: true,
  })
  expect(WsHelloSchema.safeParse(h).success).toBe(true)
})

test('a resume: from the oldest seq still held, with the session secret and (if asked) the token', () => {
  const h = buildHello(input({ resuming: true, token: 'tok' }))
  expect(h).toMatchObject({ resume: { fromSeq: 7 }, sessionSecret: 'secret', token: 'tok', returnFromSeq: 3 })
  expect(buildHello(input({ resuming: true, sessionSecret: undefined })).sessionSecret).toBeUndefined()
  // every hello says the sender keeps the secret, so a session it starts insists on it
  expect(h.secretAware).toBe(true)
  expect(buildHello(input({ resuming: false })).secretAware).toBe(true)
})

test('welcome checks: id, offered version, no version switch on resume, a resume point we hold', () => {
  const ch = new ReliableChannel({
    windowBytes: 1 << 20,
    highWaterBytes: 1 << 20,
    ackEveryBytes: 1 << 20,
    ackDelayMs: 20,
    deliver: () => true,
    onInboundEnd: () => {},
  })
  ch.send([Buffer.from('a')])
  ch.send([Buffer.from('b')]) // holds seq 1–2; can resume at 1, 2 or 3
  const e = { migrationId: 'vm1', versions: [1, 2], version: 0, channel: ch }
  const w = { type: 'welcome' as const, version: 2, migrationId: 'vm1', resumeFromSeq: 1 }
  expect(welcomeProblem(w, e)).toBeUndefined()
  expect(welcomeProblem({ ...w, resumeFromSeq: 3 }, e)).toBeUndefined()
  expect(welcomeProblem({ ...w, migrationId: 'vm2' }, e)).toBe('welcome for migration vm2, expected vm1')
  expect(welcomeProblem({ ...w, version: 3 }, e)).toBe('receiver chose version 3, which was not offered')
  expect(welcomeProblem(w, { ...e, version: 1 })).toBe('receiver switched version from 1 to 2 on resume')
  expect(welcomeProblem({ ...w, resumeFromSeq: 4 }, e)).toBe(
    'receiver wants to resume at 4, retransmit buffer holds 1–2',
  )
  ch.dispose()
})

test('a sender holding a base image names it in every hello (issue #15)', () => {
  const base = { fingerprint: `sha256:${'ab'.repeat(32)}`, bytes: 123 }
  const h = buildHello(input({ base }))
  expect(h.base).toEqual(base)
  expect(WsHelloSchema.safeParse(h).success).toBe(true)
  expect(buildHello(input()).base).toBeUndefined()
  // a malformed fingerprint is not a valid hello
  expect(WsHelloSchema.safeParse({ ...h, base: { fingerprint: 'md5:00', bytes: 1 } }).success).toBe(false)
})
