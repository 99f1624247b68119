/**
 * One migration on the receiver: its pipeline, its ReliableChannel (which outlives connections) and its return
 * path. Its life is the state machine of session-state.ts, changed only through `to()`; which connection carries
 * it (if any) is orthogonal and changes on every resume.
 */
import { randomBytes } from 'node:crypto'
import { PassThrough, type Writable } from 'node:stream'
import type { StreamHeaderJson } from '@xbzrle/protocol'
import type WebSocket from 'ws'
import { ReliableChannel } from '../channel.js'
import { CloseCode, type CloseCodeName, SessionRefusal } from '../codes.js'
import type { BaseOffer, WsAck } from '../messages.js'
import { wsTransport } from '../transport.js'
import type { EndedSessionView, LiveSessionView } from './admission.js'
import type { ReceiverConfig } from './config.js'
import { openPipeline } from './pipeline.js'
import { pumpReturnPath } from './return-path.js'
import { SESSION_TRANSITIONS, type SessionState, SNAPSHOT_STATE } from './session-state.js'
import type { PipelineFactory, ReceiverEvent, SessionInfo, SessionSnapshot } from './types.js'

export type { SessionState } from './session-state.js'

export interface SessionDeps {
  readonly config: Pick<ReceiverConfig, 'windowBytes' | 'maxMsg' | 'ackEveryBytes' | 'ackDelayMs' | 'graceMs'>
  emit(event: ReceiverEvent): void
  /** Refuses the session's connection with a code (no 'refused' event: a failed session has its session-error). */
  refuse(ws: WebSocket, code: CloseCodeName, message: string): void
  /** The session reached a terminal state; `outcome` undefined = leave no trace. */
  release(session: Session, outcome: Omit<EndedSessionView, 'secret' | 'legacy'> | undefined): void
}

export interface SessionParams {
  readonly id: string
  readonly version: number
  readonly header: StreamHeaderJson | undefined
  readonly base?: BaseOffer
  readonly path: string
  readonly remoteAddress: string | undefined
  readonly memoryBytes: number
  /** The first hello had no `secretAware`: a sender older than the session secret (see admission). */
  readonly legacy?: boolean
}

export class Session implements LiveSessionView {
  private _state: SessionState = 'starting'
  private readonly ac = new AbortController()
  private _ws: WebSocket | null = null
  private graceTimer: NodeJS.Timeout | null = null
  private writable: Writable | undefined
  readonly returnPath = new PassThrough({ highWaterMark: 256 * 1024 })
  readonly channel: ReliableChannel
  /** Issued in the first welcome; a resume must present it (constant-time compare). */
  readonly secret = randomBytes(32).toString('base64url')
  readonly id: string
  readonly memoryBytes: number
  readonly legacy: boolean

  constructor(
    readonly params: SessionParams,
    private readonly deps: SessionDeps,
  ) {
    this.id = params.id
    this.memoryBytes = params.memoryBytes
    this.legacy = params.legacy === true
    const { windowBytes, ackEveryBytes, ackDelayMs } = deps.config
    this.channel = new ReliableChannel({
      windowBytes,
      highWaterBytes: windowBytes,
      ackEveryBytes,
      ackDelayMs,
      deliver: (payload) => this.writable!.write(payload),
      onInboundEnd: () => this.endOfStream(),
      onWritable: () => {
        this.pump()
        this.maybeComplete()
      },
      onInboundHold: (held) => {
        if (held) {
          this._ws?.pause()
          this.writable!.once('drain', () => this.channel.resumeInbound())
        } else this._ws?.resume()
      },
    })
    this.returnPath.on('readable', () => this.pump())
    this.returnPath.on('end', () => {
      this.channel.end()
      this.maybeComplete()
    })
    this.returnPath.on('error', () => {})
  }

  get state(): SessionState {
    return this._state
  }
  get ws(): WebSocket | null {
    return this._ws
  }
  get failed(): boolean {
    return this._state === 'failed'
  }
  get nextExpected(): number {
    return this.channel.nextExpected
  }
  canResumeAt(returnFromSeq: number): boolean {
    return this.channel.canResumeAt(returnFromSeq)
  }
  private get terminal(): boolean {
    return SESSION_TRANSITIONS[this._state].length === 0
  }

  /** The one place the state changes; false (and no change) for a transition the table does not allow. */
  private to(next: SessionState): boolean {
    if (!SESSION_TRANSITIONS[this._state].includes(next)) return false
    this._state = next
    return true
  }

  private pump(): void {
    pumpReturnPath(this.returnPath, this.channel, this.deps.config)
  }

  /** Creates the pipeline. A throw (e.g. a SessionRefusal) leaves the session 'starting' for the caller. */
  async start(factory: PipelineFactory): Promise<void> {
    const { id, version, header, base, path, remoteAddress, memoryBytes } = this.params
    const info: SessionInfo = {
      migrationId: id,
      version,
      header,
      ...(base ? { base } : {}),
      path,
      remoteAddress,
      memoryBytes,
      returnPath: this.returnPath,
      signal: this.ac.signal,
    }
    const { writable, done } = await openPipeline(factory, info)
    this.writable = writable
    writable.on('error', (err) => this.failWith(err))
    done.then(
      () => this.pipelineDone(),
      (err: unknown) => this.failWith(err),
    )
    this.to('active')
  }

  attach(ws: WebSocket, returnFromSeq: number): void {
    if (this.graceTimer) clearTimeout(this.graceTimer)
    this.graceTimer = null
    this._ws = ws
    this.channel.attach(wsTransport(ws), returnFromSeq)
    if (this.channel.held) ws.pause()
    this.pump()
    this.maybeComplete()
  }

  /** `ws` is gone: wait `graceMs` for a resume. A finished session then completes, any other fails. */
  detach(ws: WebSocket): void {
    if (this._ws !== ws || this.terminal) return
    this._ws = null
    this.channel.detach()
    this.graceTimer = setTimeout(() => {
      if (this._state === 'finished') this.complete()
      else this.fail(`sender did not resume within ${this.deps.config.graceMs} ms`)
    }, this.deps.config.graceMs)
  }

  /** A resumed connection replaces the current one, which is told so and closed. */
  supersede(): void {
    const old = this._ws
    if (!old) return
    this.detach(old)
    old.close(CloseCode.SUPERSEDED, 'superseded by a resumed connection')
  }

  private endOfStream(): void {
    if (!this.to('ending')) return
    this.writable!.end()
    // an ending Writable never emits 'drain': stop holding (the rest only needs the close handshake and acks)
    this.channel.resumeInbound()
  }

  private pipelineDone() {
    // fail() is a no-op once terminal, so only a live session that had not seen the END fails here
    if (this._state !== 'ending') return this.fail('pipeline finished before the end of the stream')
    this.to('finished')
    if (!this.returnPath.writableEnded) this.returnPath.end()
    this.maybeComplete()
  }

  private maybeComplete(): void {
    if (this._state !== 'finished' || !this.channel.outComplete || !this._ws) return
    const ws = this._ws
    const ack: WsAck = { type: 'ack', seq: this.channel.nextExpected - 1, final: this.channel.bytesIn }
    ws.send(JSON.stringify(ack))
    this.complete()
    ws.close(1000, 'done')
  }

  private complete(): void {
    if (!this.to('completed')) return
    this.release({ ok: true, message: '' })
    this.deps.emit({ type: 'session-end', migrationId: this.id, bytes: this.channel.bytesIn })
  }

  /** A pipeline error: a SessionRefusal keeps its own code and message, anything else is a PIPELINE_ERROR. */
  failWith(err: unknown): void {
    if (err instanceof SessionRefusal) this.fail(err.message, err.codeName)
    else this.fail(`pipeline failed: ${err instanceof Error ? err.message : String(err)}`)
  }

  fail(message: string, code: CloseCodeName = 'PIPELINE_ERROR'): void {
    if (!this.to('failed')) return
    this.deps.emit({ type: 'session-error', migrationId: this.id, message })
    if (this._ws) this.deps.refuse(this._ws, code, message)
    this.teardown(undefined)
    this.release({ ok: false, message })
  }

  /** Dropped without a trace (no event, no outcome kept): nobody ever learnt this session's secret. */
  discard(reason: string): void {
    if (!this.to('discarded')) return
    this.teardown(new Error(reason))
    this.release(undefined)
  }

  /** Torn down by the receiver's close(). */
  shutdown(): void {
    if (!this.to('shut-down')) return
    this._ws?.close(CloseCode.SERVER_SHUTDOWN, 'receiver shutting down')
    this.teardown(new Error('receiver closed'))
    this.release({ ok: false, message: 'receiver closed' })
  }

  private teardown(err: Error | undefined): void {
    this.writable?.destroy(err)
    this.returnPath.destroy()
  }

  private release(
    outcome: Omit<EndedSessionView, 'secret' | 'legacy' | 'endSeq' | 'bytes'> | undefined,
  ): void {
    if (this.graceTimer) clearTimeout(this.graceTimer)
    this.graceTimer = null
    this.ac.abort()
    const endSeq = this.channel.nextExpected - 1
    const bytes = this.channel.bytesIn
    this.channel.dispose()
    this.deps.release(this, outcome && { ...outcome, endSeq, bytes })
  }

  snapshot(): SessionSnapshot {
    return {
      migrationId: this.id,
      state: SNAPSHOT_STATE[this._state],
      connected: this._ws !== null,
      bytes: this.channel.bytesIn,
      memoryBytes: this.memoryBytes,
      path: this.params.path,
      remoteAddress: this.params.remoteAddress,
    }
  }
}
