// Issue #18: connection and session lifecycle behaviour that had no test — the receiver's idle timeout,
// TOO_MANY_SESSIONS, the end of the resume grace period, a resumed connection superseding the old one, and the
// sender's ping timeout against a receiver that stops answering.
import { Writable } from 'node:stream'
import { expect, test } from 'vitest'
import type WebSocket from 'ws'
import { WebSocketServer } from 'ws'
import { generateStream, hashSink, MiB, until } from '../test/helpers.js'
import { rawPeer } from '../test/raw-client.js'
import { encodeMessage, KIND_DATA, KIND_END } from './frame.js'
import {
  CloseCode,
  createReceiver,
  type Receiver,
  type ReceiverEvent,
  type ReceiverOptions,
  type SenderEvent,
  type SessionInfo,
  sendStream,
} from './index.js'

const TOKEN = 'lifecycle-test-token'
/** A missing behaviour shows up as a hang here: fail in seconds rather than at the 60 s default. */
const LIMIT = 15_000

/** Runs `body` against a listening receiver (with TOKEN, recording its events) and closes it afterwards. */
async function withReceiver(
  options: Omit<ReceiverOptions, 'token' | 'onEvent'>,
  body: (rx: Receiver, port: number, events: ReceiverEvent[]) => Promise<void>,
): Promise<void> {
  const events: ReceiverEvent[] = []
  const rx = createReceiver({ ...options, token: TOKEN, onEvent: (e) => events.push(e) })
  const { port } = await rx.listen('127.0.0.1', 0)
  try {
    await body(rx, port, events)
  } finally {
    await rx.close()
  }
}

test(
  'idle timeout: a connection that goes silent after its welcome is closed with 4504; its session waits for a resume',
  () =>
    withReceiver(
      { idleTimeoutMs: 300, createPipeline: () => hashSink().writable },
      async (rx, port, events) => {
        const peer = rawPeer(port, { migrationId: 'idle-1' }, TOKEN)
        await peer.welcome
        const closed = await peer.closed // the peer sends nothing more, not even a ping
        expect(closed.code).toBe(CloseCode.IDLE_TIMEOUT)
        expect(closed.refuse).toEqual({
          type: 'refuse',
          code: 'IDLE_TIMEOUT',
          message: 'no traffic for 300 ms',
        })
        expect(events).toContainEqual(
          expect.objectContaining({ type: 'refused', code: 4504, name: 'IDLE_TIMEOUT' }),
        )
        await until(() => rx.sessions[0]?.connected === false, 5000, 'detached')
        expect(rx.sessions.map((s) => s.state)).toEqual(['active']) // kept for a resume, not failed
      },
    ),
  LIMIT,
)

test(
  'TOO_MANY_SESSIONS: 4429 at maxSessions; a sender retries it and gets in once a slot is free',
  () => {
    const sink = hashSink()
    const createPipeline = (s: SessionInfo) =>
      s.migrationId === 'second' ? sink.writable : hashSink().writable
    return withReceiver({ maxSessions: 1, resumeGraceMs: 200, createPipeline }, async (rx, port) => {
      const first = rawPeer(port, { migrationId: 'first' }, TOKEN)
      await first.welcome
      const refused = rawPeer(port, { migrationId: 'other' }, TOKEN)
      expect(await refused.closed).toEqual({
        code: CloseCode.TOO_MANY_SESSIONS,
        refuse: { type: 'refuse', code: 'TOO_MANY_SESSIONS', message: 'too many sessions (1)' },
      })
      const events: SenderEvent[] = []
      const g = generateStream(MiB, 31)
      const sending = sendStream(g.readable, `ws://127.0.0.1:${port}/`, {
        token: TOKEN,
        migrationId: 'second',
        reconnect: { initialDelayMs: 20, maxDelayMs: 50, timeLimitMs: 10_000 },
        onEvent: (e) => events.push(e),
      })
      await until(() => events.some((e) => e.type === 'disconnected' && e.code === 4429), 5000, '4429 seen')
      expect(rx.sessions.map((s) => s.migrationId)).toEqual(['first'])
      first.ws.close() // its session leaves after the grace period, which frees the slot
      const r = await sending
      expect(r.receiverBytes).toBe(MiB)
      expect(sink.digest()).toBe(g.digest())
    })
  },
  LIMIT,
)

test(
  'resume grace period: a session whose sender does not come back fails, frees its memory and aborts its pipeline',
  () => {
    let signal: AbortSignal | undefined
    const createPipeline = (s: SessionInfo) => {
      signal = s.signal
      return hashSink().writable
    }
    return withReceiver({ resumeGraceMs: 200, createPipeline }, async (rx, port, events) => {
      const peer = rawPeer(port, { migrationId: 'gone-1' }, TOKEN)
      const secret = (await peer.welcome).sessionSecret
      expect(rx.memoryInUse).toBeGreaterThan(0)
      peer.ws.close()
      await until(() => rx.sessions.length === 0, 5000, 'session expired')
      const message = 'sender did not resume within 200 ms'
      expect(events).toContainEqual({ type: 'session-error', migrationId: 'gone-1', message })
      expect(signal?.aborted).toBe(true)
      expect(rx.memoryInUse).toBe(0)
      // a late resume, with the right secret, learns why instead of starting over
      const late = rawPeer(
        port,
        { migrationId: 'gone-1', resume: { fromSeq: 1 }, sessionSecret: secret },
        TOKEN,
      )
      expect((await late.closed).refuse).toEqual({ type: 'refuse', code: 'PIPELINE_ERROR', message })
    })
  },
  LIMIT,
)

test(
  'a resumed connection supersedes the old one (4000), which no longer carries the session; the new one does',
  () => {
    const got: Buffer[] = []
    const write = (c: Buffer, _e: unknown, cb: () => void) => {
      got.push(c)
      cb()
    }
    const createPipeline = () => new Writable({ write })
    return withReceiver({ createPipeline }, async (rx, port, events) => {
      const a = rawPeer(port, { migrationId: 'sup-1', returnFromSeq: 1 }, TOKEN)
      const secret = (await a.welcome).sessionSecret
      const resume = { migrationId: 'sup-1', resume: { fromSeq: 1 }, returnFromSeq: 1, sessionSecret: secret }
      const b = rawPeer(port, resume, TOKEN)
      expect(await b.welcome).toMatchObject({ migrationId: 'sup-1', resumeFromSeq: 1 })
      expect((await a.closed).code).toBe(CloseCode.SUPERSEDED)
      expect(events).toContainEqual({ type: 'session-resume', migrationId: 'sup-1', fromSeq: 1 })
      expect(rx.sessions).toMatchObject([{ migrationId: 'sup-1', connected: true }])
      // the stream continues on b: data, END; the receiver ends its return path (END, seq 1), b acks it
      b.ws.send(encodeMessage(KIND_DATA, 1, [Buffer.from('hello')]))
      b.ws.send(encodeMessage(KIND_END, 2))
      await until(() => b.binaries.length > 0, 5000, 'return-path END')
      b.ws.send(JSON.stringify({ type: 'ack', seq: 1 }))
      expect((await b.closed).code).toBe(1000)
      expect(b.texts).toContainEqual({ type: 'ack', seq: 2, final: 5 })
      expect(Buffer.concat(got).toString()).toBe('hello')
    })
  },
  LIMIT,
)

test(
  'sender ping timeout: a receiver that stops answering pings is dropped after 3 intervals',
  async () => {
    // welcomes, then never answers again: no pongs, no acks
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', autoPong: false })
    let pings = 0
    wss.on('connection', (ws: WebSocket) => {
      ws.on('ping', () => pings++)
      ws.once('message', (d) => {
        const hello = JSON.parse(d.toString())
        const welcome = {
          type: 'welcome',
          version: Math.max(...hello.versions),
          migrationId: hello.migrationId,
        }
        ws.send(JSON.stringify({ ...welcome, resumeFromSeq: 1 }))
      })
    })
    await new Promise((r) => wss.once('listening', r))
    const { port } = wss.address() as { port: number }
    try {
      const events: SenderEvent[] = []
      const p = sendStream(generateStream(MiB, 32).readable, `ws://127.0.0.1:${port}/`, {
        pingIntervalMs: 50,
        reconnect: false,
        onEvent: (e) => events.push(e),
      })
      await expect(p).rejects.toThrow(/no traffic from the receiver for 150 ms/)
      expect(events.some((e) => e.type === 'connected')).toBe(true)
      expect(pings).toBeGreaterThanOrEqual(1)
    } finally {
      for (const c of wss.clients) c.terminate()
      await new Promise((r) => wss.close(r))
    }
  },
  LIMIT,
)
