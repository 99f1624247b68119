/**
 * Sender: reads an (already encoded) xbzrle byte stream and carries it to a receiver over ws:// or wss://, with
 * backpressure, optional rate limit, reconnect + resume, and a return path (receiver → sender bytes).
 */
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { type StreamHeaderJson, SUPPORTED_VERSIONS } from '@xbzrle/protocol'
import WebSocket from 'ws'
import { type ChannelTransport, ReliableChannel } from './channel.js'
import { CloseCode, closeCodeName, FATAL_CLOSE_CODES } from './codes.js'
import { HEADER_BYTES } from './frame.js'
import { parseControl, type WsHello } from './messages.js'
import { TokenBucket } from './rate.js'
import { isLoopbackHost, isSafeMigrationId, MiB, sleep, Wakeup } from './util.js'

export interface ReconnectPolicy {
  /** First delay after a lost connection (default 100 ms). */
  initialDelayMs?: number
  /** Largest delay between attempts (default 5000 ms). */
  maxDelayMs?: number
  /** Give up when the connection could not be re-established for this long (default 30 000 ms). */
  timeLimitMs?: number
  /** Random fraction taken off each delay, 0–1 (default 0.5). */
  jitter?: number
}

export interface SenderOptions {
  /** Shared secret, sent as `Authorization: Bearer …` (never logged). */
  token?: string
  /** Also put the token into the hello message (for peers that cannot read headers). Default false. */
  tokenInHello?: boolean
  /** CA certificate(s) trusted for wss:// (e.g. the receiver's self-signed certificate). */
  ca?: string | Buffer | Array<string | Buffer>
  /** Verify the receiver's certificate (default true). */
  rejectUnauthorized?: boolean
  /** Migration id (default: random). `[A-Za-z0-9._-]{1,128}`, not starting with a dot. */
  migrationId?: string
  /** Stream parameters declared in the hello; the receiver sizes its memory budget from `cache.cacheBytes`. */
  header?: StreamHeaderJson
  /** Versions offered (default: SUPPORTED_VERSIONS). */
  versions?: readonly number[]
  /** Largest payload per binary message (default 1 MiB; lowered to what the receiver accepts). */
  maxMessageBytes?: number
  /** Unacked bytes allowed in flight = retransmit buffer size (default 8 MiB). */
  windowBytes?: number
  /** Stop reading the source while the socket buffers this much (default 4 MiB). */
  highWaterBytes?: number
  /** Rate limit in bytes/s (token bucket; default none). Applies to first transmissions. */
  maxRate?: number
  /** Token bucket size in bytes (default max(maxMessageBytes, maxRate / 10)). */
  rateBurstBytes?: number
  /** Reconnect policy, or false to fail on the first lost connection. */
  reconnect?: ReconnectPolicy | false
  /** Time allowed from connect to welcome (default 10 000 ms). */
  handshakeTimeoutMs?: number
  /** Ping interval; the connection is dropped (and resumed) after 3 missed intervals. 0 = off. Default 10 000 ms. */
  pingIntervalMs?: number
  /** Skip WebSocket masking (zero mask). Only between trusted Node peers. Default false. */
  zeroMask?: boolean
  /** Extra HTTP headers for the upgrade request. */
  headers?: Record<string, string>
  /** Aborts the transfer. */
  signal?: AbortSignal
  /** Progress and connection events (for logs; contains no secret). */
  onEvent?: (event: SenderEvent) => void
}

export type SenderEvent =
  | { type: 'connected'; attempt: number; resumeFromSeq: number; version: number }
  | { type: 'disconnected'; code: number; reason: string }
  | { type: 'reconnecting'; attempt: number; delayMs: number }
  | { type: 'ack'; seq: number; bytes: number }
  /** E.g. a token about to travel over ws:// (cleartext) to a non-loopback host. Emitted once, no secret in it. */
  | { type: 'warning'; message: string }

export interface SendResult {
  migrationId: string
  version: number
  /** Payload bytes sent (= bytes read from the source). */
  bytes: number
  /** Bytes the receiver reports as delivered to its pipeline. */
  receiverBytes: number
  messages: number
  reconnects: number
  retransmits: number
}

export interface Sender {
  readonly migrationId: string
  /** Resolves after the receiver's final ack; rejects with a one-line error. */
  readonly done: Promise<SendResult>
  /**
   * Bytes the receiver side writes to its return path. Created on first access; if never accessed, return-path
   * bytes are discarded. Reading it slowly slows the receiver's return-path writer (not the main stream).
   */
  readonly returnPath: Readable
  /** The rate limiter, if `maxRate` was set. */
  readonly rateLimiter: TokenBucket | undefined
  abort(reason?: string): void
}

export class SendError extends Error {
  override name = 'SendError'
  constructor(
    message: string,
    readonly closeCode?: number,
    readonly refuseCode?: string,
  ) {
    super(message)
  }
}

const TLS_ERROR = /CERT|SIGNATURE|ALTNAME|SELF_SIGNED|ERR_TLS|ERR_SSL/

/** Sends `source` to `url` and resolves when the receiver confirmed the whole stream. */
export function sendStream(source: Readable, url: string, options: SenderOptions = {}): Promise<SendResult> {
  return createSender(source, url, options).done
}

interface AttemptResult {
  done?: boolean
  code: number
  reason: string
  fatal: boolean
  message: string
  welcomed: boolean
  refuseCode?: string
}

export function createSender(source: Readable, url: string, options: SenderOptions = {}): Sender {
  const migrationId = options.migrationId ?? `m-${randomBytes(9).toString('base64url')}`
  const maxMsgWanted = options.maxMessageBytes ?? MiB
  let maxMsg = maxMsgWanted
  const windowBytes = Math.max(options.windowBytes ?? 8 * MiB, 2 * (maxMsg + HEADER_BYTES))
  const highWater = options.highWaterBytes ?? 4 * MiB
  const versions = options.versions ?? SUPPORTED_VERSIONS
  const reconnect = options.reconnect === false ? false : { ...options.reconnect }
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000
  const pingIntervalMs = options.pingIntervalMs ?? 10_000
  const bucket =
    options.maxRate !== undefined
      ? new TokenBucket(options.maxRate, options.rateBurstBytes ?? Math.max(maxMsg, options.maxRate / 10))
      : undefined
  const ac = new AbortController()
  const wake = new Wakeup()
  let abortReason: string | undefined
  let sourceError: Error | undefined
  let sourceDone = false
  let finalBytes = -1
  let version = 0
  let messages = 0
  let reconnects = 0
  let helloSentOnce = false
  /** Issued by the receiver in the first welcome; proves on resume that we are the sender that started it. */
  let sessionSecret: string | undefined
  let currentWs: WebSocket | null = null

  // ---- return path ----
  let rp: Readable | undefined
  const channel: ReliableChannel = new ReliableChannel({
    windowBytes,
    highWaterBytes: highWater,
    ackEveryBytes: 64 * 1024,
    ackDelayMs: 20,
    deliver: (payload) => (rp ? rp.push(Buffer.from(payload)) : true),
    onInboundEnd: () => rp?.push(null),
    onWritable: () => wake.notify(),
    onAck: (seq) => options.onEvent?.({ type: 'ack', seq, bytes: channel.bytesOut }),
  })
  const getReturnPath = () => {
    rp ??= new Readable({
      highWaterMark: MiB,
      read: () => channel.resumeInbound(),
    })
    if (channel.inEnded && channel.nextExpected > 1) rp.push(null)
    return rp
  }

  // ---- source ----
  let pending: Buffer | null = null
  let srcEnded = false
  const onReadable = () => wake.notify()
  const onEnd = () => {
    srcEnded = true
    wake.notify()
  }
  const onSrcError = (err: Error) => {
    sourceError = err
    ac.abort()
    wake.notify()
  }
  source.on('readable', onReadable)
  source.on('end', onEnd)
  source.on('error', onSrcError)

  const take = (max: number): Buffer[] | null => {
    const parts: Buffer[] = []
    let total = 0
    const add = (c: Buffer) => {
      if (total + c.length > max) {
        const n = max - total
        parts.push(c.subarray(0, n))
        pending = c.subarray(n)
        total = max
      } else {
        parts.push(c)
        total += c.length
      }
    }
    if (pending) {
      const p = pending
      pending = null
      add(p)
    }
    while (total < max) {
      const c: unknown = source.read()
      if (c === null) break
      if (typeof c === 'string') add(Buffer.from(c))
      else if (Buffer.isBuffer(c)) add(c)
      else if (c instanceof Uint8Array) add(Buffer.from(c.buffer, c.byteOffset, c.byteLength))
      else throw new TypeError('source must yield Buffers, Uint8Arrays or strings')
    }
    return total > 0 ? parts : null
  }
  const sourceExhausted = () => srcEnded && pending === null

  // ---- pump: source → channel ----
  const pump = async () => {
    while (!ac.signal.aborted) {
      if (!channel.canSend) {
        await wake.wait()
        continue
      }
      const parts = take(maxMsg)
      if (parts === null) {
        if (sourceExhausted() || source.readableEnded) {
          channel.end()
          sourceDone = true
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

  // ---- one connection attempt ----
  const transportOf = (ws: WebSocket): ChannelTransport => ({
    sendBinary: (buf, cb) => ws.send(buf, { binary: true }, cb),
    sendText: (text) => ws.send(text),
    get bufferedAmount() {
      return ws.bufferedAmount
    },
  })

  const attempt = (n: number): Promise<AttemptResult> =>
    new Promise((resolve) => {
      const headers: Record<string, string> = { ...options.headers }
      if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
      let ws: WebSocket
      try {
        ws = new WebSocket(url, {
          headers,
          perMessageDeflate: false,
          maxPayload: maxMsgWanted + HEADER_BYTES + 64 * 1024,
          handshakeTimeout: handshakeTimeoutMs,
          ...(options.ca !== undefined ? { ca: options.ca } : {}),
          rejectUnauthorized: options.rejectUnauthorized ?? true,
          ...(options.zeroMask ? { generateMask: (m: Buffer) => void m.fill(0) } : {}),
        })
      } catch (err) {
        resolve({ code: 0, reason: '', fatal: true, message: (err as Error).message, welcomed: false })
        return
      }
      currentWs = ws
      let welcomed = false
      let settled = false
      let refuse: { code: string; message: string } | undefined
      let lastError: Error | undefined
      let fatalError: string | undefined
      let lastSeen = Date.now()
      const hsTimer = setTimeout(() => {
        lastError = new Error(`no welcome within ${handshakeTimeoutMs} ms`)
        ws.terminate()
      }, handshakeTimeoutMs)
      const pingTimer =
        pingIntervalMs > 0
          ? setInterval(() => {
              if (Date.now() - lastSeen > 3 * pingIntervalMs) {
                lastError = new Error(`no traffic from the receiver for ${3 * pingIntervalMs} ms`)
                ws.terminate()
              } else if (ws.readyState === WebSocket.OPEN) ws.ping()
            }, pingIntervalMs)
          : undefined
      const onAbort = () => {
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(
            JSON.stringify({ type: 'refuse', code: 'SENDER_ABORTED', message: abortReason ?? 'aborted' }),
          )
          ws.close(1000, 'sender aborted')
        } else ws.terminate()
      }
      ac.signal.addEventListener('abort', onAbort, { once: true })
      const protocolFail = (msg: string) => {
        fatalError = msg
        if (ws.readyState === WebSocket.OPEN) ws.close(CloseCode.PROTOCOL_ERROR, 'protocol error')
        else ws.terminate()
      }

      ws.on('pong', () => {
        lastSeen = Date.now()
      })
      ws.on('open', () => {
        const hello: WsHello = {
          type: 'hello',
          protocol: 'xbzrle',
          versions: [...versions],
          migrationId,
          returnFromSeq: channel.nextExpected,
        }
        if (options.header) hello.header = options.header
        if (helloSentOnce) hello.resume = { fromSeq: channel.oldestHeld }
        if (hello.resume && sessionSecret !== undefined) hello.sessionSecret = sessionSecret
        if (options.tokenInHello && options.token !== undefined) hello.token = options.token
        helloSentOnce = true
        ws.send(JSON.stringify(hello))
      })
      ws.on('message', (data: Buffer, isBinary) => {
        lastSeen = Date.now()
        try {
          if (isBinary) {
            if (!welcomed) return protocolFail('binary message before welcome')
            channel.handleBinary(data)
            return
          }
          const r = parseControl(data.toString('utf8'))
          if (!r.ok) return protocolFail(`bad control message from receiver: ${r.error}`)
          const m = r.msg
          if (m.type === 'refuse') {
            refuse = { code: m.code, message: m.message }
          } else if (m.type === 'welcome') {
            if (welcomed) return protocolFail('second welcome')
            if (m.migrationId !== migrationId)
              return protocolFail(`welcome for migration ${m.migrationId}, expected ${migrationId}`)
            if (!versions.includes(m.version))
              return protocolFail(`receiver chose version ${m.version}, which was not offered`)
            if (version !== 0 && m.version !== version)
              return protocolFail(`receiver switched version from ${version} to ${m.version} on resume`)
            if (!channel.canResumeAt(m.resumeFromSeq))
              return protocolFail(
                `receiver wants to resume at ${m.resumeFromSeq}, retransmit buffer holds ${channel.oldestHeld}–${channel.nextOutSeq - 1}`,
              )
            version = m.version
            if (m.sessionSecret !== undefined) sessionSecret = m.sessionSecret
            if (m.maxMessageBytes !== undefined)
              maxMsg = Math.max(1024, Math.min(maxMsgWanted, m.maxMessageBytes - HEADER_BYTES))
            clearTimeout(hsTimer)
            welcomed = true
            channel.attach(transportOf(ws), m.resumeFromSeq)
            options.onEvent?.({ type: 'connected', attempt: n, resumeFromSeq: m.resumeFromSeq, version })
            wake.notify()
          } else if (m.type === 'ack') {
            if (!welcomed) return protocolFail('ack before welcome')
            if (m.final !== undefined) {
              if (!sourceDone || m.seq !== channel.endSeq)
                return protocolFail(`final ack for ${m.seq} but the stream ends at ${channel.endSeq || '?'}`)
              channel.handleAck(m.seq)
              finalBytes = m.final
              ws.close(1000, 'done')
            } else channel.handleAck(m.seq)
          } else return protocolFail(`unexpected ${m.type} from receiver`)
        } catch (err) {
          protocolFail((err as Error).message)
        }
      })
      ws.on('error', (err) => {
        lastError = err
      })
      ws.on('close', (code, reasonBuf) => {
        if (settled) return
        settled = true
        clearTimeout(hsTimer)
        if (pingTimer) clearInterval(pingTimer)
        ac.signal.removeEventListener('abort', onAbort)
        channel.detach()
        currentWs = null
        const reason = reasonBuf.toString('utf8')
        if (finalBytes >= 0) return resolve({ done: true, code, reason, fatal: false, message: '', welcomed })
        const name = closeCodeName(code)
        const errCode = (lastError as NodeJS.ErrnoException | undefined)?.code ?? ''
        let message: string
        if (fatalError) message = fatalError
        else if (refuse) message = `refused: ${code} ${refuse.code}: ${refuse.message}`
        else if (code >= 4000 || (code !== 1006 && code !== 1005 && code !== 1000))
          message = `connection closed: ${code}${name ? ` ${name}` : ''}${reason ? `: ${reason}` : ''}`
        else message = lastError ? lastError.message : `connection closed (${code}${name ? ` ${name}` : ''})`
        const fatal =
          !!fatalError ||
          FATAL_CLOSE_CODES.has(code) ||
          (refuse !== undefined && code !== CloseCode.TOO_MANY_SESSIONS) ||
          TLS_ERROR.test(errCode) ||
          /Unexpected server response: 4\d\d/.test(lastError?.message ?? '')
        resolve({ code, reason, fatal, message, welcomed, ...(refuse ? { refuseCode: refuse.code } : {}) })
      })
    })

  // ---- connection loop ----
  const run = async (): Promise<SendResult> => {
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
      if (!ac.signal.aborted) {
        sourceError ??= err as Error
        ac.abort()
      }
    })
    let failures = 0
    let lostSince: number | undefined
    try {
      for (let n = 1; ; n++) {
        if (ac.signal.aborted) break
        const r = await attempt(n)
        if (r.done) {
          return {
            migrationId,
            version,
            bytes: channel.bytesOut,
            receiverBytes: finalBytes,
            messages,
            reconnects,
            retransmits: channel.retransmits,
          }
        }
        if (ac.signal.aborted) break
        options.onEvent?.({ type: 'disconnected', code: r.code, reason: r.reason })
        if (r.fatal || reconnect === false)
          throw new SendError(`xbzrle ws send to ${redact(url)} failed: ${r.message}`, r.code, r.refuseCode)
        if (r.welcomed) {
          failures = 0
          lostSince = Date.now()
        }
        lostSince ??= Date.now()
        const limit = reconnect.timeLimitMs ?? 30_000
        if (Date.now() - lostSince > limit)
          throw new SendError(
            `xbzrle ws send to ${redact(url)} failed: connection lost and not resumed within the ${limit} ms time limit (last error: ${r.message})`,
            r.code,
          )
        const base = Math.min(reconnect.maxDelayMs ?? 5000, (reconnect.initialDelayMs ?? 100) * 2 ** failures)
        const delay = Math.round(base * (1 - (reconnect.jitter ?? 0.5) * Math.random()))
        failures++
        reconnects++
        options.onEvent?.({ type: 'reconnecting', attempt: n + 1, delayMs: delay })
        await sleep(Math.min(delay, Math.max(0, lostSince + limit - Date.now()) + 1), ac.signal)
      }
      if (sourceError) throw new SendError(`xbzrle ws send: source stream failed: ${sourceError.message}`)
      throw new SendError(`xbzrle ws send aborted${abortReason ? `: ${abortReason}` : ''}`)
    } finally {
      if (!ac.signal.aborted) ac.abort()
      wake.notify()
      await pumping
      source.off('readable', onReadable)
      source.off('end', onEnd)
      source.off('error', onSrcError)
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
      currentWs?.terminate()
    },
  )
  const onUserAbort = () => {
    abortReason = String(options.signal?.reason ?? 'aborted')
    ac.abort()
    wake.notify()
  }
  if (options.signal?.aborted) onUserAbort()
  else options.signal?.addEventListener('abort', onUserAbort, { once: true })

  return {
    migrationId,
    done,
    get returnPath() {
      return getReturnPath()
    },
    rateLimiter: bucket,
    abort(reason?: string) {
      abortReason = reason ?? 'aborted'
      ac.abort()
      wake.notify()
    },
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
