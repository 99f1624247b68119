// What a closed connection means for the sender: the user's one line, and whether a reconnect can help.
import { expect, test } from 'vitest'
import { CloseCode } from '../codes.js'
import { type CloseFacts, classifyClose } from './close.js'

const facts = (over: Partial<CloseFacts>): CloseFacts => ({
  code: 1006,
  reason: '',
  refuse: undefined,
  lastError: undefined,
  fatalError: undefined,
  ...over,
})
const errno = (message: string, code: string) => Object.assign(new Error(message), { code })

test('a refusal is final and quoted with its code and name', () => {
  const r = classifyClose(
    facts({ code: 4401, refuse: { code: 'BAD_TOKEN', message: 'missing or invalid token' }, reason: 'x' }),
  )
  expect(r).toEqual({ fatal: true, message: 'refused: 4401 BAD_TOKEN: missing or invalid token' })
})

test('TOO_MANY_SESSIONS is the one refusal worth retrying', () => {
  const r = classifyClose(
    facts({ code: CloseCode.TOO_MANY_SESSIONS, refuse: { code: 'TOO_MANY_SESSIONS', message: 'too many' } }),
  )
  expect(r.fatal).toBe(false)
})

test('close codes without a refusal: fatal ones give up, the others reconnect', () => {
  expect(classifyClose(facts({ code: CloseCode.PROTOCOL_ERROR, reason: 'gap' }))).toEqual({
    fatal: true,
    message: 'connection closed: 4422 PROTOCOL_ERROR: gap',
  })
  for (const code of [CloseCode.SUPERSEDED, CloseCode.SERVER_SHUTDOWN, CloseCode.IDLE_TIMEOUT, 1001])
    expect(classifyClose(facts({ code })).fatal, String(code)).toBe(false)
  expect(classifyClose(facts({ code: 1009 })).fatal).toBe(true)
})

test('a lost connection reports the socket error; our own protocol error wins over everything', () => {
  expect(
    classifyClose(facts({ lastError: errno('connect ECONNREFUSED 127.0.0.1:1', 'ECONNREFUSED') })),
  ).toEqual({
    fatal: false,
    message: 'connect ECONNREFUSED 127.0.0.1:1',
  })
  expect(classifyClose(facts({ code: 1005 }))).toEqual({
    fatal: false,
    message: 'connection closed (1005 NO_STATUS)',
  })
  const ours = classifyClose(facts({ fatalError: 'second welcome', refuse: { code: 'X', message: 'y' } }))
  expect(ours).toEqual({ fatal: true, message: 'second welcome' })
})

test('certificate errors and HTTP 4xx before the upgrade do not go away by retrying', () => {
  const cert = errno('self-signed certificate', 'DEPTH_ZERO_SELF_SIGNED_CERT')
  expect(classifyClose(facts({ lastError: cert })).fatal).toBe(true)
  expect(classifyClose(facts({ lastError: new Error('Unexpected server response: 404') })).fatal).toBe(true)
  expect(classifyClose(facts({ lastError: new Error('Unexpected server response: 503') })).fatal).toBe(false)
})
