// The receiver Session on its own: fake connection, fake dependencies, fake timers. Checks the state machine's
// paths (complete, fail, discard, shut down, grace expiry) and that a terminal state is final.
import { PassThrough, Writable } from 'node:stream'
import { afterEach, beforeEach, expect, test, vi } from 'vitest'
import type WebSocket from 'ws'
import { SessionRefusal } from '../codes.js'
import { encodeMessage, KIND_DATA, KIND_END } from '../frame.js'
import { Session, type SessionDeps } from './session.js'
import type { ReceiverEvent } from './types.js'

/** Just enough of a ws WebSocket for a session: records what is sent and how it was closed. */
function fakeWs() {
  const sent: Array<string | Buffer> = []
  const ws = {
    sent,
    closed: undefined as { code: number; reason: string } | undefined,
    isPaused: false,
    bufferedAmount: 0,
    send(data: string | Buffer, _opts?: unknown, cb?: (err?: Error) => void) {
      sent.push(data)
      if (cb) queueMicrotask(() => cb()) // like ws: the callback comes later
    },
    close(code: number, reason: string) {
      ws.closed = { code, reason }
    },
    pause() {
      ws.isPaused = true
    },
    resume() {
      ws.isPaused = false
    },
  }
  return ws
}
const texts = (ws: ReturnType<typeof fakeWs>) =>
  ws.sent.filter((d): d is string => typeof d === 'string').map((t) => JSON.parse(t))

function setup(pipeline: Writable = new PassThrough().resume()) {
  const events: ReceiverEvent[] = []
  const released: Array<{ ok: boolean; message: string; endSeq: number; bytes: number } | undefined> = []
  const refused: Array<{ code: string; message: string }> = []
  const deps: SessionDeps = {
    config: { windowBytes: 1 << 20, maxMsg: 1 << 16, ackEveryBytes: 1 << 20, ackDelayMs: 5, graceMs: 1000 },
    emit: (e) => events.push(e),
    refuse: (_ws, code, message) => refused.push({ code, message }),
    release: (_s, outcome) => released.push(outcome),
  }
  const params = {
    id: 'vm1',
    version: 2,
    header: undefined,
    path: '/',
    remoteAddress: '::1',
    memoryBytes: 10,
  }
  const session = new Session(params, deps)
  return { session, events, released, refused, start: () => session.start(() => pipeline) }
}
function attach(s: Session, ws = fakeWs()) {
  s.attach(ws as unknown as WebSocket, 1)
  return ws
}
const flush = () => vi.advanceTimersByTimeAsync(0)

beforeEach(() => vi.useFakeTimers())
afterEach(() => vi.useRealTimers())

test('data, END, pipeline done, return path acked: final ack, completed, released ok', async () => {
  const got: Buffer[] = []
  const write = (c: Buffer, _e: unknown, cb: () => void) => {
    got.push(c)
    cb()
  }
  const t = setup(new Writable({ write }))
  await t.start()
  expect(t.session.state).toBe('active')
  const ws = attach(t.session)
  t.session.channel.handleBinary(encodeMessage(KIND_DATA, 1, [Buffer.from('abc')]))
  t.session.channel.handleBinary(encodeMessage(KIND_END, 2))
  expect(t.session.state).toBe('ending')
  await flush()
  expect(t.session.state).toBe('finished') // the return path's END (seq 1) now waits for the sender's ack
  expect(ws.sent.filter(Buffer.isBuffer)).toHaveLength(1)
  t.session.channel.handleAck(1)
  await flush()
  expect(t.session.state).toBe('completed')
  expect(texts(ws).at(-1)).toEqual({ type: 'ack', seq: 2, final: 3 })
  expect(ws.closed).toEqual({ code: 1000, reason: 'done' })
  expect(t.released).toEqual([{ ok: true, message: '', endSeq: 2, bytes: 3 }])
  expect(t.events).toEqual([{ type: 'session-end', migrationId: 'vm1', bytes: 3 }])
  expect(Buffer.concat(got).toString()).toBe('abc')
})

test('a pipeline that finishes before the END fails the session (4500 to the sender)', async () => {
  const pipeline = new PassThrough().resume()
  const t = setup(pipeline)
  await t.start()
  attach(t.session)
  pipeline.end()
  await flush()
  expect(t.session.state).toBe('failed')
  expect(t.refused).toEqual([
    { code: 'PIPELINE_ERROR', message: 'pipeline finished before the end of the stream' },
  ])
  expect(t.released).toMatchObject([{ ok: false, message: 'pipeline finished before the end of the stream' }])
})

test('a SessionRefusal from the pipeline keeps its code; the terminal state is final (one release, one event)', async () => {
  const pipeline = new PassThrough()
  const t = setup(pipeline)
  await t.start()
  attach(t.session)
  pipeline.destroy(new SessionRefusal('STREAM_HEADER_MISMATCH', 'asks for more'))
  await flush()
  expect(t.refused).toEqual([{ code: 'STREAM_HEADER_MISMATCH', message: 'asks for more' }])
  t.session.fail('again')
  t.session.shutdown()
  t.session.discard('late')
  expect(t.session.state).toBe('failed')
  expect(t.released).toHaveLength(1)
  expect(t.events.filter((e) => e.type === 'session-error')).toHaveLength(1)
})

test('grace period: an active session fails when it runs out, a finished one completes', async () => {
  const a = setup()
  await a.start()
  const ws = attach(a.session)
  a.session.detach(ws as unknown as WebSocket)
  await vi.advanceTimersByTimeAsync(999)
  expect(a.session.state).toBe('active')
  await vi.advanceTimersByTimeAsync(1)
  expect(a.session.state).toBe('failed')
  expect(a.events).toEqual([
    { type: 'session-error', migrationId: 'vm1', message: 'sender did not resume within 1000 ms' },
  ])

  const f = setup()
  await f.start()
  const ws2 = attach(f.session)
  f.session.channel.handleBinary(encodeMessage(KIND_END, 1))
  await flush()
  expect(f.session.state).toBe('finished')
  f.session.detach(ws2 as unknown as WebSocket) // the sender went away before acking the return path's END
  await vi.advanceTimersByTimeAsync(1000)
  expect(f.session.state).toBe('completed')
  expect(f.released).toMatchObject([{ ok: true }])
})

test('a resume inside the grace period keeps the session; supersede closes the old socket with 4000', async () => {
  const t = setup()
  await t.start()
  const old = attach(t.session)
  t.session.supersede()
  expect(old.closed).toEqual({ code: 4000, reason: 'superseded by a resumed connection' })
  expect(t.session.ws).toBeNull()
  const fresh = attach(t.session)
  await vi.advanceTimersByTimeAsync(5000)
  expect(t.session.state).toBe('active')
  expect(t.session.ws).toBe(fresh)
})

test('discard leaves no trace; shutdown closes the socket with 4001', async () => {
  const d = setup()
  await d.start()
  d.session.discard('connection lost during session setup')
  expect(d.session.state).toBe('discarded')
  expect(d.released).toEqual([undefined])
  expect(d.events).toEqual([])

  const s = setup()
  await s.start()
  const ws = attach(s.session)
  s.session.shutdown()
  expect(ws.closed).toEqual({ code: 4001, reason: 'receiver shutting down' })
  expect(s.session.snapshot().state).toBe('failed')
})
