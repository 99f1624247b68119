/**
 * One connection attempt of the sender: connect, hello, welcome, then carry the channel until the socket closes.
 * Resolves (never rejects) with how it ended; the reconnect loop in sender.ts decides what comes next.
 */
import WebSocket from 'ws'
import type { ReliableChannel } from '../channel.js'
import { CloseCode } from '../codes.js'
import { HEADER_BYTES } from '../frame.js'
import { parseControl, type WsControl, type WsRefuse } from '../messages.js'
import { wsTransport } from '../transport.js'
import { classifyClose } from './close.js'
import { buildHello, welcomeProblem } from './handshake.js'
import type { SenderEvent, SenderOptions } from './types.js'

/**
 * connecting  TCP/TLS and the HTTP upgrade        welcomed   data flows both ways
 * hello-sent  waiting for the welcome             finishing  the final ack came; closing normally
 * closed      the socket is gone (terminal)
 */
export type AttemptState = 'connecting' | 'hello-sent' | 'welcomed' | 'finishing' | 'closed'

const TRANSITIONS: { readonly [S in AttemptState]: readonly AttemptState[] } = {
  connecting: ['hello-sent', 'closed'],
  'hello-sent': ['welcomed', 'closed'],
  welcomed: ['finishing', 'closed'],
  finishing: ['closed'],
  closed: [],
}

export interface AttemptResult {
  /** The final ack arrived: the migration is complete. */
  done: boolean
  code: number
  reason: string
  fatal: boolean
  message: string
  /** It got as far as a welcome (the reconnect backoff starts over). */
  welcomed: boolean
  refuseCode?: string
}

/** The migration's state that outlives connections; attempts read and update it. */
export interface SenderMigration {
  readonly migrationId: string
  readonly url: string
  readonly options: SenderOptions
  readonly versions: readonly number[]
  readonly channel: ReliableChannel
  readonly maxMsgWanted: number
  readonly handshakeTimeoutMs: number
  readonly pingIntervalMs: number
  readonly signal: AbortSignal
  readonly abortReason: string | undefined
  /** Negotiated in the first welcome (0 before). */
  version: number
  /** Issued by the receiver in the first welcome; proves on resume that we are the sender that started it. */
  sessionSecret: string | undefined
  /** Largest payload per message, lowered to what the receiver accepts. */
  maxMsg: number
  helloSent: boolean
  /** The source was read to its end and END queued. */
  sourceDone: boolean
  /** Payload bytes the receiver reports in its final ack (-1 until then). */
  finalBytes: number
  emit(event: SenderEvent): void
  /** The socket became writable or the window opened. */
  wake(): void
}

export class Attempt {
  private state: AttemptState = 'connecting'
  private reachedWelcome = false
  private refuse: Pick<WsRefuse, 'code' | 'message'> | undefined
  private lastError: Error | undefined
  private fatalError: string | undefined
  private lastSeen = Date.now()
  readonly ws: WebSocket

  /** @throws if the URL or options are unusable (the caller reports that as a fatal attempt) */
  constructor(
    private readonly m: SenderMigration,
    private readonly n: number,
  ) {
    const o = m.options
    const headers: Record<string, string> = { ...o.headers }
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`
    this.ws = new WebSocket(m.url, {
      headers,
      perMessageDeflate: false,
      maxPayload: m.maxMsgWanted + HEADER_BYTES + 64 * 1024,
      handshakeTimeout: m.handshakeTimeoutMs,
      ...(o.ca !== undefined ? { ca: o.ca } : {}),
      rejectUnauthorized: o.rejectUnauthorized ?? true,
      ...(o.zeroMask ? { generateMask: (mask: Buffer) => void mask.fill(0) } : {}),
    })
  }

  private to(next: AttemptState): boolean {
    if (!TRANSITIONS[this.state].includes(next)) return false
    this.state = next
    if (next === 'welcomed') this.reachedWelcome = true
    return true
  }

  run(): Promise<AttemptResult> {
    const { ws, m } = this
    return new Promise((resolve) => {
      const hsTimer = setTimeout(
        () => this.lose(`no welcome within ${m.handshakeTimeoutMs} ms`),
        m.handshakeTimeoutMs,
      )
      // a receiver that stops answering pings is gone even if TCP has not noticed: drop it (and resume)
      const pingTimer =
        m.pingIntervalMs > 0
          ? setInterval(() => {
              if (Date.now() - this.lastSeen > 3 * m.pingIntervalMs)
                this.lose(`no traffic from the receiver for ${3 * m.pingIntervalMs} ms`)
              else if (ws.readyState === WebSocket.OPEN) ws.ping()
            }, m.pingIntervalMs)
          : undefined
      const onAbort = () => {
        if (ws.readyState !== WebSocket.OPEN) return ws.terminate()
        const message = m.abortReason ?? 'aborted'
        ws.send(JSON.stringify({ type: 'refuse', code: 'SENDER_ABORTED', message } satisfies WsControl))
        ws.close(1000, 'sender aborted')
      }
      m.signal.addEventListener('abort', onAbort, { once: true })
      ws.on('pong', () => {
        this.lastSeen = Date.now()
      })
      ws.on('open', () => this.sendHello())
      ws.on('message', (data: Buffer, isBinary) => {
        this.lastSeen = Date.now()
        try {
          this.onMessage(data, isBinary, () => clearTimeout(hsTimer))
        } catch (err) {
          this.protocolFail((err as Error).message)
        }
      })
      ws.on('error', (err) => {
        this.lastError = err
      })
      ws.on('close', (code, reasonBuf) => {
        if (!this.to('closed')) return
        clearTimeout(hsTimer)
        if (pingTimer) clearInterval(pingTimer)
        m.signal.removeEventListener('abort', onAbort)
        m.channel.detach()
        const reason = reasonBuf.toString('utf8')
        const welcomed = this.reachedWelcome
        if (m.finalBytes >= 0)
          return resolve({ done: true, code, reason, fatal: false, message: '', welcomed })
        const { refuse, lastError, fatalError } = this
        const { fatal, message } = classifyClose({ code, reason, refuse, lastError, fatalError })
        resolve({
          done: false,
          code,
          reason,
          fatal,
          message,
          welcomed,
          ...(refuse ? { refuseCode: refuse.code } : {}),
        })
      })
    })
  }

  /** Ends this connection as lost (not fatal): the loop reconnects. */
  private lose(message: string): void {
    this.lastError = new Error(message)
    this.ws.terminate()
  }

  private protocolFail(message: string): void {
    this.fatalError = message
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(CloseCode.PROTOCOL_ERROR, 'protocol error')
    else this.ws.terminate()
  }

  private sendHello(): void {
    const { m } = this
    const hello = buildHello({
      migrationId: m.migrationId,
      versions: m.versions,
      header: m.options.header,
      base: m.options.base,
      token: m.options.tokenInHello ? m.options.token : undefined,
      resuming: m.helloSent,
      sessionSecret: m.sessionSecret,
      channel: m.channel,
    })
    m.helloSent = true
    this.to('hello-sent')
    this.ws.send(JSON.stringify(hello))
  }

  private onMessage(data: Buffer, isBinary: boolean, welcomed: () => void) {
    const { m } = this
    const inSession = this.state === 'welcomed' || this.state === 'finishing'
    if (isBinary) {
      if (!inSession) return this.protocolFail('binary message before welcome')
      return m.channel.handleBinary(data)
    }
    const r = parseControl(data.toString('utf8'))
    if (!r.ok) return this.protocolFail(`bad control message from receiver: ${r.error}`)
    const msg = r.msg
    if (msg.type === 'refuse') {
      this.refuse = { code: msg.code, message: msg.message }
    } else if (msg.type === 'welcome') {
      if (inSession) return this.protocolFail('second welcome')
      const problem = welcomeProblem(msg, m)
      if (problem) return this.protocolFail(problem)
      m.version = msg.version
      if (msg.sessionSecret !== undefined) m.sessionSecret = msg.sessionSecret
      if (msg.maxMessageBytes !== undefined)
        m.maxMsg = Math.max(1024, Math.min(m.maxMsgWanted, msg.maxMessageBytes - HEADER_BYTES))
      welcomed()
      this.to('welcomed')
      m.channel.attach(wsTransport(this.ws), msg.resumeFromSeq)
      m.emit({
        type: 'connected',
        attempt: this.n,
        resumeFromSeq: msg.resumeFromSeq,
        version: m.version,
        ...(msg.base ? { base: msg.base } : {}),
      })
      m.wake()
    } else if (msg.type === 'ack') {
      if (!inSession) return this.protocolFail('ack before welcome')
      if (msg.final === undefined) return m.channel.handleAck(msg.seq)
      if (!m.sourceDone || msg.seq !== m.channel.endSeq)
        return this.protocolFail(`final ack for ${msg.seq} but the stream ends at ${m.channel.endSeq || '?'}`)
      m.channel.handleAck(msg.seq)
      m.finalBytes = msg.final
      this.to('finishing')
      this.ws.close(1000, 'done')
    } else this.protocolFail(`unexpected ${msg.type} from receiver`)
  }
}
