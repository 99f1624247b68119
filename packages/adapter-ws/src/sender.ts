/**
 * Sender: reads an (already encoded) xbzrle byte stream and carries it to a receiver over ws:// or wss://, with
 * backpressure, optional rate limit, reconnect + resume, and a return path (receiver → sender bytes). This file is
 * the reconnect loop and the source pump; the parts live in sender/: connection (one attempt, its states),
 * backoff (the reconnect policy, pure), close (what a close means, pure), handshake (hello/welcome, pure), source.
 */
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { SUPPORTED_VERSIONS } from '@xbzrle/protocol'
import { ReliableChannel } from './channel.js'
import { HEADER_BYTES } from './frame.js'
import { TokenBucket } from './rate.js'
import { INITIAL_RECONNECT_STATE, nextReconnect, type ReconnectState } from './sender/backoff.js'
import { Attempt, type AttemptResult, type SenderMigration } from './sender/connection.js'
import { SourceReader } from './sender/source.js'
import { SendError, type Sender, type SenderOptions, type SendResult } from './sender/types.js'
import { isLoopbackHost, isSafeMigrationId, MiB, sleep, Wakeup } from './util.js'

/** Sends `source` to `url` and resolves when the receiver confirmed the whole stream. */
export function sendStream(source: Readable, url: string, options: SenderOptions = {}): Promise<SendResult> {
  return createSender(source, url, options).done
}

export function createSender(source: Readable, url: string, options: SenderOptions = {}): Sender {
  const maxMsgWanted = options.maxMessageBytes ?? MiB
  const windowBytes = Math.max(options.windowBytes ?? 8 * MiB, 2 * (maxMsgWanted + HEADER_BYTES))
  const bucket =
    options.maxRate !== undefined
      ? new TokenBucket(
          options.maxRate,
          options.rateBurstBytes ?? Math.max(maxMsgWanted, options.maxRate / 10),
        )
      : undefined
  const ac = new AbortController()
  const wake = new Wakeup()
  let abortReason: string | undefined
  let sourceError: Error | undefined
  let messages = 0
  let reconnects = 0
  let current: Attempt | undefined

  // ---- return path ----
  let rp: Readable | undefined
  const channel: ReliableChannel = new ReliableChannel({
    windowBytes,
    highWaterBytes: options.highWaterBytes ?? 4 * MiB,
    ackEveryBytes: 64 * 1024,
    ackDelayMs: 20,
    deliver: (payload) => (rp ? rp.push(Buffer.from(payload)) : true),
    onInboundEnd: () => rp?.push(null),
    onWritable: () => wake.notify(),
    onAck: (seq) => options.onEvent?.({ type: 'ack', seq, bytes: channel.bytesOut }),
  })
  const getReturnPath = () => {
    rp ??= new Readable({ highWaterMark: MiB, read: () => channel.resumeInbound() })
    if (channel.inEnded && channel.nextExpected > 1) rp.push(null)
    return rp
  }

  const m: SenderMigration = {
    migrationId: options.migrationId ?? `m-${randomBytes(9).toString('base64url')}`,
    url,
    options,
    versions: options.versions ?? SUPPORTED_VERSIONS,
    channel,
    maxMsgWanted,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    pingIntervalMs: options.pingIntervalMs ?? 10_000,
    signal: ac.signal,
    get abortReason() {
      return abortReason
    },
    version: 0,
    sessionSecret: undefined,
    maxMsg: maxMsgWanted,
    helloSent: false,
    sourceDone: false,
    finalBytes: -1,
    emit: (e) => options.onEvent?.(e),
    wake: () => wake.notify(),
  }
  const stop = (reason?: string) => {
    if (reason !== undefined) abortReason = reason
    ac.abort()
    wake.notify()
  }
  const reader = new SourceReader(
    source,
    () => wake.notify(),
    (err) => {
      sourceError = err
      stop()
    },
  )

  // ---- pump: source → channel, while the window and the socket buffer allow ----
  const pump = async () => {
    while (!ac.signal.aborted) {
      if (!channel.canSend) {
        await wake.wait()
        continue
      }
      const parts = reader.take(m.maxMsg)
      if (parts === null) {
        if (reader.exhausted) {
          channel.end()
          m.sourceDone = true
          return
        }
        await wake.wait()
        continue
      }
      let n = 0
      for (const p of parts) n += p.length
      if (bucket) await bucket.take(n, ac.signal)
      channel.send(parts)
      messages++
    }
  }

  const attempt = (n: number): Promise<AttemptResult> => {
    try {
      current = new Attempt(m, n)
    } catch (err) {
      const message = (err as Error).message
      return Promise.resolve({ done: false, code: 0, reason: '', fatal: true, message, welcomed: false })
    }
    return current.run()
  }

  // ---- connection loop ----
  const run = async (): Promise<SendResult> => {
    const { migrationId } = m
    if (!isSafeMigrationId(migrationId))
      throw new SendError(
        `xbzrle ws send: migration id ${JSON.stringify(migrationId.slice(0, 130))} is not allowed: use 1-128 of [A-Za-z0-9._-], not starting with a dot`,
      )
    if (options.token !== undefined && insecureTarget(url))
      options.onEvent?.({
        type: 'warning',
        message: `the token is sent over ws:// without TLS to ${redact(url)}: anyone on the network path can read it; use wss://`,
      })
    const pumping = pump().catch((err) => {
      if (ac.signal.aborted) return
      sourceError ??= err as Error
      stop()
    })
    let backoff: ReconnectState = INITIAL_RECONNECT_STATE
    try {
      for (let n = 1; !ac.signal.aborted; n++) {
        const r = await attempt(n)
        if (r.done) {
          const { version, finalBytes: receiverBytes } = m
          const { bytesOut: bytes, retransmits } = channel
          return { migrationId, version, bytes, receiverBytes, messages, reconnects, retransmits }
        }
        if (ac.signal.aborted) break
        options.onEvent?.({ type: 'disconnected', code: r.code, reason: r.reason })
        const next = nextReconnect(backoff, r, options.reconnect ?? {}, Date.now(), Math.random())
        if (next.kind === 'give-up') {
          if (next.why !== 'time-limit')
            throw new SendError(`xbzrle ws send to ${redact(url)} failed: ${r.message}`, r.code, r.refuseCode)
          throw new SendError(
            `xbzrle ws send to ${redact(url)} failed: connection lost and not resumed within the ${next.limitMs} ms time limit (last error: ${r.message})`,
            r.code,
          )
        }
        backoff = next.state
        reconnects++
        options.onEvent?.({ type: 'reconnecting', attempt: n + 1, delayMs: next.delayMs })
        await sleep(next.waitMs, ac.signal)
      }
      if (sourceError) throw new SendError(`xbzrle ws send: source stream failed: ${sourceError.message}`)
      throw new SendError(`xbzrle ws send aborted${abortReason ? `: ${abortReason}` : ''}`)
    } finally {
      if (!ac.signal.aborted) ac.abort()
      wake.notify()
      await pumping
      reader.close()
      channel.dispose()
    }
  }

  const done = run()
  done.then(
    () => {
      if (rp && !rp.readableEnded) rp.push(null)
    },
    (err: Error) => {
      rp?.destroy(err)
      current?.ws.terminate()
    },
  )
  const onUserAbort = () => stop(String(options.signal?.reason ?? 'aborted'))
  if (options.signal?.aborted) onUserAbort()
  else options.signal?.addEventListener('abort', onUserAbort, { once: true })

  return {
    migrationId: m.migrationId,
    done,
    get returnPath() {
      return getReturnPath()
    },
    rateLimiter: bucket,
    abort: (reason?: string) => stop(reason ?? 'aborted'),
  }
}

/** ws:// (no TLS) to a host that is not a loopback name or address. */
function insecureTarget(url: string): boolean {
  try {
    const u = new URL(url)
    return u.protocol === 'ws:' && !isLoopbackHost(u.hostname)
  } catch {
    return false
  }
}

/** URL without userinfo or query (which might hold secrets). */
function redact(url: string): string {
  try {
    const u = new URL(url)
    u.username = ''
    u.password = ''
    u.search = ''
    return u.toString()
  } catch {
    return '<invalid url>'
  }
}
