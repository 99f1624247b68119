/**
 * One WebSocket connection on the receiver: waits for a hello, has it admitted, then carries one session's
 * messages until it closes or a resumed connection supersedes it.
 */
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { CloseCode, type CloseCodeName, SessionRefusal } from '../codes.js'
import { HEADER_BYTES } from '../frame.js'
import { parseControl, type WsAck, type WsHello, type WsWelcome } from '../messages.js'
import { admit, isAuthenticated } from './admission.js'
import type { ReceiverConfig } from './config.js'
import type { PreAuth, PreAuthTracker } from './preauth.js'
import { sendRefusal } from './refuse.js'
import type { SessionRegistry } from './registry.js'
import { Session, type SessionDeps } from './session.js'
import type { PipelineFactory, ReceiverEvent } from './types.js'

/**
 * awaiting-hello  nothing but a hello is accepted (binary → BAD_HELLO)
 * admitting       the hello is being admitted (pipeline creation is async); the socket is paused
 * open            carries its session's messages
 * closing         refused or done: everything else the peer sends is ignored
 */
export type ConnectionState = 'awaiting-hello' | 'admitting' | 'open' | 'closing'

const TRANSITIONS: { readonly [S in ConnectionState]: readonly ConnectionState[] } = {
  'awaiting-hello': ['admitting', 'closing'],
  admitting: ['open', 'closing'],
  open: ['closing'],
  closing: [],
}

export interface ConnectionContext {
  readonly config: ReceiverConfig
  readonly registry: SessionRegistry<Session>
  readonly preAuth: PreAuthTracker
  readonly sessionDeps: SessionDeps
  readonly createPipeline: PipelineFactory
  emit(event: ReceiverEvent): void
}

export class Connection {
  private state: ConnectionState = 'awaiting-hello'
  private session: Session | null = null
  private idleTimer: NodeJS.Timeout | null = null
  private readonly pre: PreAuth

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: ConnectionContext,
    private readonly path: string,
    private readonly remoteAddress: string | undefined,
    private readonly headerToken: string | undefined,
    socket: Socket,
  ) {
    const { preAuth, config } = ctx
    // the pre-auth deadline runs on from TCP accept (a connection from before we were attached gets a fresh one)
    this.pre = preAuth.get(socket) ?? preAuth.track(socket)
    this.pre.upgraded = true
    this.pre.onTimeout = () =>
      this.refuse('HANDSHAKE_TIMEOUT', `no authenticated hello within ${config.preAuthTimeoutMs} ms`)
    ws.on('error', () => {})
    ws.on('ping', this.touch)
    ws.on('pong', this.touch)
    ws.on('close', () => {
      this.to('closing')
      preAuth.drop(this.pre)
      if (this.idleTimer) clearTimeout(this.idleTimer)
      this.session?.detach(ws)
    })
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary))
    this.touch()
  }

  private to(next: ConnectionState): boolean {
    if (!TRANSITIONS[this.state].includes(next)) return false
    this.state = next
    return true
  }

  /** Idle timeout: any traffic (pings included) rearms it; a connection we paused ourselves is not idle. */
  private readonly touch = (): void => {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    const ms = this.ctx.config.idleTimeoutMs
    this.idleTimer = setTimeout(() => {
      if (this.ws.isPaused) return this.touch()
      this.refuse('IDLE_TIMEOUT', `no traffic for ${ms} ms`)
    }, ms)
  }

  /**
   * Refuses this connection and reports it as a 'refused' event. (A failing session refuses its connection itself,
   * through SessionDeps.refuse, without this event: it has its session-error.)
   */
  private refuse(code: CloseCodeName, message: string): void {
    this.to('closing')
    const { remoteAddress } = this
    this.ctx.emit({ type: 'refused', code: CloseCode[code], name: code, message, remoteAddress })
    sendRefusal(this.ws, code, message)
  }

  private onMessage(data: Buffer, isBinary: boolean) {
    this.touch()
    const { maxControl } = this.ctx.config
    if (this.state === 'awaiting-hello') {
      if (isBinary) return this.refuse('BAD_HELLO', 'expected a JSON hello, got binary data')
      if (data.length > maxControl)
        return this.refuse('MESSAGE_TOO_BIG', `hello of ${data.length} bytes (max ${maxControl})`)
      const r = parseControl(data.toString('utf8'))
      if (!r.ok) return this.refuse('BAD_HELLO', r.error)
      if (r.msg.type !== 'hello') return this.refuse('BAD_HELLO', `expected hello, got ${r.msg.type}`)
      this.to('admitting')
      this.ws.pause() // no data until the session is attached
      this.handleHello(r.msg).then(
        () => {
          if (this.ws.readyState === WebSocket.OPEN && !(this.session?.channel.held ?? false))
            this.ws.resume()
        },
        (err: unknown) => {
          if (err instanceof SessionRefusal) this.refuse(err.codeName, err.message)
          else this.refuse('PROTOCOL_ERROR', `internal error: ${(err as Error).message}`)
        },
      )
      return
    }
    const s = this.session
    // a superseded connection's late messages are dropped: its session lives on another socket now
    if (this.state !== 'open' || !s || s.ws !== this.ws) return
    try {
      if (isBinary) return s.channel.handleBinary(data)
      if (data.length > maxControl)
        return this.refuse('MESSAGE_TOO_BIG', `control message of ${data.length} bytes`)
      const r = parseControl(data.toString('utf8'))
      if (!r.ok) return this.refuse('PROTOCOL_ERROR', r.error)
      if (r.msg.type === 'ack') s.channel.handleAck(r.msg.seq)
      else if (r.msg.type === 'refuse') {
        s.fail(`sender aborted: ${r.msg.code}: ${r.msg.message}`)
        this.to('closing')
        this.ws.close(1000)
      } else this.refuse('PROTOCOL_ERROR', `unexpected ${r.msg.type} after the handshake`)
    } catch (err) {
      this.refuse('PROTOCOL_ERROR', (err as Error).message)
      s.detach(this.ws)
    }
  }

  private welcome(migrationId: string, version: number, resumeFromSeq: number, secret?: string): string {
    const w: WsWelcome = {
      type: 'welcome',
      version,
      migrationId,
      resumeFromSeq,
      maxMessageBytes: this.ctx.config.maxMsg + HEADER_BYTES,
      ...(secret !== undefined ? { sessionSecret: secret } : {}),
      ...(this.ctx.config.base ? { base: this.ctx.config.base } : {}),
    }
    return JSON.stringify(w)
  }

  private async handleHello(hello: WsHello): Promise<void> {
    const { ws, ctx } = this
    const decision = admit(hello, this.headerToken, ctx.registry, ctx.config)
    if (isAuthenticated(decision)) ctx.preAuth.drop(this.pre)
    const id = hello.migrationId
    switch (decision.kind) {
      case 'refuse':
        throw new SessionRefusal(decision.code, decision.reason)
      case 'replay-end': {
        const ack: WsAck = { type: 'ack', seq: decision.endSeq, final: decision.bytes }
        ws.send(this.welcome(id, decision.version, decision.endSeq + 1))
        ws.send(JSON.stringify(ack))
        this.to('closing')
        ws.close(1000, 'done')
        return
      }
      case 'resume': {
        const s = decision.session
        s.supersede()
        this.session = s
        this.to('open')
        ws.send(this.welcome(id, decision.version, s.channel.nextExpected))
        s.attach(ws, decision.returnFromSeq)
        ctx.emit({ type: 'session-resume', migrationId: id, fromSeq: s.channel.nextExpected })
        return
      }
      case 'admit':
        return this.start(hello, decision.version, decision.memoryBytes, decision.returnFromSeq)
    }
  }

  private async start(hello: WsHello, version: number, memoryBytes: number, returnFromSeq: number) {
    const { ws, ctx } = this
    const id = hello.migrationId
    const params = {
      id,
      version,
      header: hello.header,
      base: hello.base,
      path: this.path,
      remoteAddress: this.remoteAddress,
      memoryBytes,
      legacy: hello.secretAware !== true,
    }
    const s = new Session(params, ctx.sessionDeps)
    ctx.registry.add(s)
    try {
      await s.start(ctx.createPipeline)
    } catch (err) {
      if (err instanceof SessionRefusal) {
        // a refusal by the factory (e.g. output busy): the session never started, so no session-error
        s.discard(err.message)
        throw err
      }
      const message = `cannot create pipeline: ${(err as Error).message}`
      s.fail(message)
      throw new SessionRefusal('PIPELINE_ERROR', message)
    }
    if (s.state !== 'active') return
    if (ws.readyState !== WebSocket.OPEN) {
      // connection lost during setup: the sender never got the session secret, so nobody could resume this
      // session; drop it (no trace), and the sender's next hello starts it afresh
      s.discard('connection lost during session setup')
      return
    }
    ctx.emit({ type: 'session-start', migrationId: id, version, memoryBytes })
    this.session = s
    this.to('open')
    ws.send(this.welcome(id, version, s.channel.nextExpected, s.secret))
    s.attach(ws, returnFromSeq)
  }
}
