// Control messages: the extended schemas accept the transport fields, reject bad ones and drop unknown ones.
import { expect, test } from 'vitest'
import { parseControl, WsControlSchema } from './messages.js'

const hello = { type: 'hello', protocol: 'xbzrle', versions: [1], migrationId: 'vm1' }

test('the transport fields of hello, welcome and ack survive parsing', () => {
  const h = { ...hello, token: 't', returnFromSeq: 3, sessionSecret: 's', resume: { fromSeq: 2 } }
  expect(parseControl(JSON.stringify(h))).toEqual({ ok: true, msg: h })
  const w = {
    type: 'welcome',
    version: 1,
    migrationId: 'vm1',
    resumeFromSeq: 1,
    maxMessageBytes: 9,
    sessionSecret: 's',
  }
  expect(parseControl(JSON.stringify(w))).toEqual({ ok: true, msg: w })
  expect(parseControl('{"type":"ack","seq":4,"final":100}')).toEqual({
    ok: true,
    msg: { type: 'ack', seq: 4, final: 100 },
  })
})

test('a bad transport field is a one-line error naming the field; unknown fields are dropped', () => {
  const r = parseControl(JSON.stringify({ ...hello, returnFromSeq: -1 }))
  expect(r.ok).toBe(false)
  expect(!r.ok && r.error).toMatch(/^invalid hello: returnFromSeq: /)
  expect(parseControl('{"type":"ack","seq":1,"final":"x"}')).toMatchObject({
    ok: false,
    error: /invalid ack: final/,
  })
  expect(parseControl(JSON.stringify({ ...hello, extra: 1 }))).toEqual({ ok: true, msg: hello })
  expect(parseControl('{"type":"hello"')).toEqual({ ok: false, error: 'control message is not valid JSON' })
})

test('WsControlSchema covers every message kind, and only those', () => {
  for (const m of [
    hello,
    { type: 'refuse', code: 'BAD_TOKEN', message: 'm' },
    { type: 'ack', seq: 1, final: 2 },
  ])
    expect(WsControlSchema.safeParse(m).success, m.type).toBe(true)
  expect(WsControlSchema.safeParse({ type: 'done' }).success).toBe(false)
})
