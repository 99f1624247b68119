// Admission is a pure function: every branch is checked here on plain data, without sockets or timers.
import { describe, expect, test } from 'vitest'
import type { WsHello } from '../messages.js'
import {
  type Admission,
  type AdmissionConfig,
  admit,
  type EndedSessionView,
  isAuthenticated,
  type LiveSessionView,
  type ReceiverView,
} from './admission.js'
import { resolveConfig } from './config.js'

const TOKEN = 'admission-token'
const SECRET = 'the-session-secret'

interface FakeSession extends LiveSessionView {
  name: string
}
const live = (over: Partial<FakeSession> = {}): FakeSession => ({
  name: 'live',
  failed: false,
  secret: SECRET,
  legacy: false,
  nextExpected: 10,
  canResumeAt: (n) => n >= 3 && n <= 5,
  ...over,
})
const ended = (over: Partial<EndedSessionView> = {}): EndedSessionView => ({
  ok: true,
  secret: SECRET,
  legacy: false,
  endSeq: 41,
  bytes: 12345,
  message: '',
  ...over,
})

const config: AdmissionConfig = {
  token: TOKEN,
  versions: [1, 2],
  maxSessions: 2,
  maxSessionBytes: 1000,
  memoryCap: 1500,
  estimate: (h) => h.header?.cache.cacheBytes ?? 100.2,
}

function view(
  sessions: Record<string, FakeSession> = {},
  endedOnes: Record<string, EndedSessionView> = {},
  memoryInUse = 0,
): ReceiverView<FakeSession> {
  return {
    sessions: new Map(Object.entries(sessions)),
    ended: new Map(Object.entries(endedOnes)),
    memoryInUse,
  }
}

const hello = (over: Partial<WsHello> = {}): WsHello => ({
  type: 'hello',
  protocol: 'xbzrle',
  versions: [1, 2],
  migrationId: 'vm1',
  ...over,
})
/** A hello declaring `cacheBytes` (the only header field the estimate reads). */
const withCache = (cacheBytes: number) => hello({ header: { cache: { cacheBytes } } as WsHello['header'] })

function refusal(a: Admission<FakeSession>): string {
  return a.kind === 'refuse' ? `${a.code}: ${a.reason}` : `not refused: ${a.kind}`
}

describe('token', () => {
  test('missing, wrong, or only in a hello when the header is wrong → BAD_TOKEN, not authenticated', () => {
    for (const [header, inHello] of [
      [undefined, undefined],
      ['wrong', undefined],
      [undefined, 'wrong'],
      ['wrong', TOKEN], // the Authorization header wins over hello.token
    ] as const) {
      const a = admit(hello(inHello === undefined ? {} : { token: inHello }), header, view(), config)
      expect(refusal(a)).toBe('BAD_TOKEN: missing or invalid token')
      expect(isAuthenticated(a)).toBe(false)
    }
  })

  test('the token in the header or in the hello is accepted; no token configured accepts anyone', () => {
    expect(admit(hello(), TOKEN, view(), config).kind).toBe('admit')
    expect(admit(hello({ token: TOKEN }), undefined, view(), config).kind).toBe('admit')
    expect(admit(hello(), undefined, view(), { ...config, token: undefined }).kind).toBe('admit')
  })

  test('a wrong token is refused before anything else about the hello is looked at', () => {
    const a = admit(hello({ migrationId: '..', versions: [9] }), 'wrong', view(), config)
    expect(a.kind === 'refuse' && a.code).toBe('BAD_TOKEN')
  })
})

describe('migration id and version', () => {
  test('unsafe ids → BAD_MIGRATION_ID (after the token: authenticated)', () => {
    for (const id of ['..', '.hidden', 'a:b']) {
      const a = admit(hello({ migrationId: id }), TOKEN, view(), config)
      expect(refusal(a)).toMatch(/^BAD_MIGRATION_ID: migration id ".*" is not allowed/)
      expect(isAuthenticated(a)).toBe(true)
    }
  })

  test('the highest common version is chosen; none in common → NO_COMMON_VERSION', () => {
    const a = admit(hello({ versions: [1, 2, 3] }), TOKEN, view(), config)
    expect(a.kind === 'admit' && a.version).toBe(2)
    const b = admit(hello({ versions: [1] }), TOKEN, view(), config)
    expect(b.kind === 'admit' && b.version).toBe(1)
    expect(refusal(admit(hello({ versions: [3, 4] }), TOKEN, view(), config))).toMatch(
      /^NO_COMMON_VERSION: no common xbzrle protocol version: we speak 1–2, peer speaks 3–4/,
    )
  })
})

describe('existing sessions', () => {
  test('a hello without resume for a live or an ended id → DUPLICATE_SESSION', () => {
    expect(refusal(admit(hello(), TOKEN, view({ vm1: live() }), config))).toBe(
      'DUPLICATE_SESSION: migration vm1 is already in progress',
    )
    expect(refusal(admit(hello(), TOKEN, view({}, { vm1: ended() }), config))).toBe(
      'DUPLICATE_SESSION: migration vm1 already ran',
    )
  })

  test('resume of a live session with its secret → resume that session at the asked return seq', () => {
    const s = live()
    const a = admit(
      hello({ resume: { fromSeq: 7 }, returnFromSeq: 4, sessionSecret: SECRET }),
      TOKEN,
      view({ vm1: s }),
      config,
    )
    expect(a).toEqual({ kind: 'resume', version: 2, session: s, returnFromSeq: 4 })
  })

  test('resume without or with a wrong secret → BAD_SESSION_SECRET, before the session state is revealed', () => {
    for (const sessions of [{ vm1: live() }, { vm1: live({ failed: true }) }]) {
      const none = admit(hello({ resume: { fromSeq: 1 } }), TOKEN, view(sessions), config)
      expect(refusal(none)).toMatch(/^BAD_SESSION_SECRET: cannot resume migration vm1: no session secret/)
      const wrong = admit(
        hello({ resume: { fromSeq: 1 }, sessionSecret: 'x' }),
        TOKEN,
        view(sessions),
        config,
      )
      expect(refusal(wrong)).toMatch(/^BAD_SESSION_SECRET: cannot resume migration vm1: wrong session secret/)
    }
    const ofEnded = admit(hello({ resume: { fromSeq: 1 } }), TOKEN, view({}, { vm1: ended() }), config)
    expect(refusal(ofEnded)).toMatch(/^BAD_SESSION_SECRET/)
  })

  test('a session started by a sender older than the secret resumes without it, never with a wrong one', () => {
    const s = live({ legacy: true })
    const none = admit(hello({ resume: { fromSeq: 7 }, returnFromSeq: 4 }), TOKEN, view({ vm1: s }), config)
    expect(none).toEqual({ kind: 'resume', version: 2, session: s, returnFromSeq: 4 })
    const wrong = admit(
      hello({ resume: { fromSeq: 7 }, returnFromSeq: 4, sessionSecret: 'x' }),
      TOKEN,
      view({ vm1: s }),
      config,
    )
    expect(refusal(wrong)).toMatch(/^BAD_SESSION_SECRET: cannot resume migration vm1: wrong session secret/)
    const ofEnded = admit(
      hello({ resume: { fromSeq: 1 } }),
      TOKEN,
      view({}, { vm1: ended({ legacy: true }) }),
      config,
    )
    expect(ofEnded).toEqual({ kind: 'replay-end', version: 2, endSeq: 41, bytes: 12345 })
  })

  test('resume that the session cannot serve → SESSION_GONE', () => {
    const resume = (fromSeq: number, returnFromSeq: number, s: FakeSession) =>
      refusal(
        admit(
          hello({ resume: { fromSeq }, returnFromSeq, sessionSecret: SECRET }),
          TOKEN,
          view({ vm1: s }),
          config,
        ),
      )
    expect(resume(1, 3, live({ failed: true }))).toBe('SESSION_GONE: migration vm1 failed')
    // the sender no longer holds seq 10, which the receiver still needs
    expect(resume(11, 3, live())).toBe('SESSION_GONE: cannot resume: receiver needs 10, sender holds from 11')
    expect(resume(10, 6, live())).toBe('SESSION_GONE: cannot resume the return path at 6')
    // without returnFromSeq the return path resumes at 1, which this session no longer holds
    const noReturn = admit(
      hello({ resume: { fromSeq: 1 }, sessionSecret: SECRET }),
      TOKEN,
      view({ vm1: live() }),
      config,
    )
    expect(refusal(noReturn)).toBe('SESSION_GONE: cannot resume the return path at 1')
  })

  test('resume of an ended session: its final ack again if it succeeded, its error if it failed', () => {
    const h = hello({ resume: { fromSeq: 5 }, sessionSecret: SECRET })
    expect(admit(h, TOKEN, view({}, { vm1: ended() }), config)).toEqual({
      kind: 'replay-end',
      version: 2,
      endSeq: 41,
      bytes: 12345,
    })
    const failed = ended({ ok: false, message: 'pipeline failed: CRC mismatch' })
    expect(refusal(admit(h, TOKEN, view({}, { vm1: failed }), config))).toBe(
      'PIPELINE_ERROR: pipeline failed: CRC mismatch',
    )
  })

  test('resume of an unknown session: SESSION_GONE past seq 1, a fresh start from seq 1', () => {
    expect(refusal(admit(hello({ resume: { fromSeq: 2 } }), TOKEN, view(), config))).toBe(
      'SESSION_GONE: no session vm1 to resume (expired or unknown)',
    )
    expect(admit(hello({ resume: { fromSeq: 1 } }), TOKEN, view(), config).kind).toBe('admit')
  })
})

describe('limits', () => {
  test('TOO_MANY_SESSIONS at maxSessions; a resume of one of them still gets in', () => {
    const full = view({ a: live(), b: live() })
    expect(refusal(admit(hello(), TOKEN, full, config))).toBe('TOO_MANY_SESSIONS: too many sessions (2)')
    expect(admit(hello(), TOKEN, view({ a: live() }), config).kind).toBe('admit')
    const r = admit(
      hello({ migrationId: 'a', resume: { fromSeq: 9 }, returnFromSeq: 3, sessionSecret: SECRET }),
      TOKEN,
      full,
      config,
    )
    expect(r.kind).toBe('resume')
  })

  test('memory: the estimate is rounded up, per-session limit → 4507, global cap → 4503', () => {
    const a = admit(hello(), TOKEN, view(), config)
    expect(a).toEqual({ kind: 'admit', version: 2, memoryBytes: 101, returnFromSeq: 1 })
    expect(admit(withCache(1000), TOKEN, view(), config).kind).toBe('admit')
    expect(refusal(admit(withCache(1001), TOKEN, view(), config))).toBe(
      'SESSION_TOO_LARGE: session needs 1001 bytes of memory, the per-session limit is 1000',
    )
    expect(admit(withCache(500), TOKEN, view({}, {}, 1000), config).kind).toBe('admit')
    expect(refusal(admit(withCache(501), TOKEN, view({}, {}, 1000), config))).toBe(
      'OVER_MEMORY_CAP: receiver memory cap reached: 1000 + 501 > 1500 bytes; try again later',
    )
  })

  test('the default estimate: declared cache + 2 windows + 4 largest messages', () => {
    const c = resolveConfig({ createPipeline: () => null as never, windowBytes: 1000, maxMessageBytes: 100 })
    expect(c.estimate(hello())).toBe(2 * 1000 + 4 * (100 + 8))
    expect(c.estimate(withCache(5000))).toBe(5000 + 2 * 1000 + 4 * (100 + 8))
  })
})
