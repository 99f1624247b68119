/**
 * Receiver: an http(s) + ws server that accepts migrations. Each migration (told apart by its migration id) gets its
 * own pipeline from the injected factory, its own memory budget and its own ReliableChannel, which survives
 * reconnects for `resumeGraceMs`.
 */
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer, type Server as HttpServer, type IncomingMessage } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { type Duplex, PassThrough, type Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { negotiateVersion, type StreamHeaderJson, SUPPORTED_VERSIONS } from '@xbzrle/protocol'
import WebSocket, { WebSocketServer } from 'ws'
import { type ChannelTransport, ReliableChannel } from './channel.js'
import { CloseCode, type CloseCodeName, SessionRefusal } from './codes.js'
import { HEADER_BYTES } from './frame.js'
import { parseControl, type WsHello, type WsWelcome } from './messages.js'
import { bearerToken, tokensEqual } from './token.js'
import { isLoopbackHost, isSafeMigrationId, MiB, truncateUtf8 } from './util.js'

/** What the pipeline factory learns about a migration. */
export interface SessionInfo {
  readonly migrationId: string
  /** Negotiated format version. */
  readonly version: number
  /** Stream parameters declared by the sender, if any. */
  readonly header: StreamHeaderJson | undefined
  /** URL path of the connection that created the session. */
  readonly path: string
  readonly remoteAddress: string | undefined
  /** Memory budget reserved for this session (bytes). */
  readonly memoryBytes: number
  /** Bytes written here travel back to the sender (`Sender.returnPath`), reliably and across reconnects. */
  readonly returnPath: Writable
  /** Aborted when the session is torn down (failure, expiry, receiver close). */
  readonly signal: AbortSignal
}

/**
 * The pipeline factory's result: a Writable that receives the stream bytes in order (it is ended at end of stream),
 * and optionally a `done` promise that settles when everything downstream finished (e.g. the decoder's output was
 * flushed). Without `done`, the Writable finishing is the end. A rejection of `done` or an error on the Writable
 * aborts the session and is reported to the sender as a PIPELINE_ERROR refusal.
 */
export type Pipeline = Writable | { writable: Writable; done?: Promise<unknown> }
export type PipelineFactory = (session: SessionInfo) => Pipeline | Promise<Pipeline>

export interface ReceiverOptions {
  createPipeline: PipelineFactory
  /** Shared secret expected as `Authorization: Bearer …` or `hello.token`. */
  token?: string
  /** Allow listening on a non-loopback address without a token. Default false. */
  allowInsecureNoToken?: boolean
  /** TLS: serve wss:// with this certificate and key. */
  tls?: { cert: string | Buffer; key: string | Buffer }
  /** Attach to an existing http(s) server instead of creating one (listen() is then not used). */
  server?: HttpServer | HttpsServer
  /** Only accept upgrades whose path starts with this (default '/'). */
  pathPrefix?: string
  versions?: readonly number[]
  /** Largest data payload per message (default 1 MiB); larger messages are closed with 1009. */
  maxMessageBytes?: number
  /** Largest control (JSON) message (default 16 KiB; larger → 4413). */
  maxControlBytes?: number
  /** Concurrent TCP connections, authenticated or not (default 256); more are dropped at accept. */
  maxConnections?: number
  /**
   * Concurrent connections that have not yet presented a valid token in their hello (default 64). When full, a new
   * connection evicts the oldest unauthenticated one (idle TCP first), so idle sockets cannot lock out a sender.
   */
  maxPreAuthConnections?: number
  /** Concurrent sessions (default 32). */
  maxSessions?: number
  /** Time from TCP accept to an authenticated hello: TLS, HTTP upgrade and hello (default 3000 ms). */
  preAuthTimeoutMs?: number
  /** Older name of `preAuthTimeoutMs` (used when that is not set). */
  handshakeTimeoutMs?: number
  /** Close a connection without traffic for this long (default 60 000 ms; not while we pause it). */
  idleTimeoutMs?: number
  /** Keep a disconnected session (and its pipeline) for this long, waiting for a resume (default 30 000 ms). */
  resumeGraceMs?: number
  /** Global memory cap over all session budgets (default 1 GiB). */
  memoryCapBytes?: number
  /** Largest budget one session may need (default 512 MiB). */
  maxSessionBytes?: number
  /** Memory budget of a session from its hello. Default: header cache size + 2 × window + 4 messages. */
  estimateSessionBytes?: (hello: WsHello) => number
  /** Return-path window (default 4 MiB). */
  windowBytes?: number
  /** Ack at least every this many bytes (default 1 MiB). */
  ackEveryBytes?: number
  /** Ack after this delay at the latest (default 20 ms). */
  ackDelayMs?: number
  /** Log hook (contains no secret). */
  onEvent?: (event: ReceiverEvent) => void
}

export type ReceiverEvent =
  | { type: 'session-start'; migrationId: string; version: number; memoryBytes: number }
  | { type: 'session-resume'; migrationId: string; fromSeq: number }
  | { type: 'session-end'; migrationId: string; bytes: number }
  | { type: 'session-error'; migrationId: string; message: string }
  | { type: 'refused'; code: number; name: string; message: string; remoteAddress: string | undefined }
  | { type: 'warning'; message: string }

export interface SessionSnapshot {
  migrationId: string
  state: 'active' | 'ending' | 'finished' | 'failed'
  connected: boolean
  bytes: number
  memoryBytes: number
  path: string
  remoteAddress: string | undefined
}

export interface Receiver {
  /** Starts listening (not with `server`). Refuses a non-loopback host without a token unless allowed. */
  listen(host?: string, port?: number): Promise<AddressInfo>
  /** Closes every connection and session and the server (an attached server is left open). */
  close(): Promise<void>
  readonly address: AddressInfo | null
  readonly sessions: SessionSnapshot[]
  /** Memory reserved by the live sessions. */
  readonly memoryInUse: number
  /** Open TCP connections. */
  readonly connections: number
  readonly server: HttpServer | HttpsServer
}

interface Tombstone {
  ok: boolean
  secret: string
  endSeq: number
  bytes: number
  message: string
  timer: NodeJS.Timeout
}

const RefuseError = SessionRefusal

/** An unauthenticated connection (from TCP accept until a hello with a valid token). */
interface PreAuth {
  socket: Socket
  /** Reached the HTTP upgrade (a real client does at once; idle sockets never do): evicted last. */
  upgraded: boolean
  timer: NodeJS.Timeout
  /** Called at the deadline instead of destroying the socket (set once the WebSocket exists). */
  onTimeout?: () => void
}

export function createReceiver(options: ReceiverOptions): Receiver {
  const versions = options.versions ?? SUPPORTED_VERSIONS
  const maxMsg = options.maxMessageBytes ?? MiB
  const maxControl = options.maxControlBytes ?? 16 * 1024
  const maxConnections = options.maxConnections ?? 256
  const maxPreAuth = Math.max(1, options.maxPreAuthConnections ?? 64)
  const maxSessions = options.maxSessions ?? 32
  const handshakeTimeoutMs = options.preAuthTimeoutMs ?? options.handshakeTimeoutMs ?? 3000
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000
  const graceMs = options.resumeGraceMs ?? 30_000
  const memoryCap = options.memoryCapBytes ?? 1024 * MiB
  const maxSessionBytes = options.maxSessionBytes ?? 512 * MiB
  const windowBytes = options.windowBytes ?? 4 * MiB
  const ackEveryBytes = options.ackEveryBytes ?? MiB
  const ackDelayMs = options.ackDelayMs ?? 20
  const estimate =
    options.estimateSessionBytes ??
    ((h: WsHello) => (h.header?.cache.cacheBytes ?? 0) + 2 * windowBytes + 4 * (maxMsg + HEADER_BYTES))
  const pathPrefix = options.pathPrefix ?? '/'
  const emit = (e: ReceiverEvent) => {
    try {
      options.onEvent?.(e)
    } catch {
      // a logging hook must not break the server
    }
  }

  const server: HttpServer | HttpsServer =
    options.server ??
    (options.tls
      ? createHttpsServer({
          cert: options.tls.cert,
          key: options.tls.key,
          handshakeTimeout: handshakeTimeoutMs,
        })
      : createHttpServer())
  const ownServer = options.server === undefined
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: maxMsg + HEADER_BYTES,
    clientTracking: false,
  })
  const sockets = new Set<Socket>()
  const clients = new Set<WebSocket>()
  const sessions = new Map<string, Session>()
  const tombstones = new Map<string, Tombstone>()
  let memoryInUse = 0
  let closing = false

  // ---- raw connections: limits and the pre-auth deadline ----
  const isTls = 'setSecureContext' in server
  /** Unauthenticated connections by raw socket, oldest first. */
  const preAuth = new Map<Socket, PreAuth>()
  /** Raw or TLS socket → its pre-auth record. */
  const preAuthOf = new WeakMap<Socket, PreAuth>()
  const dropPreAuth = (rec: PreAuth) => {
    clearTimeout(rec.timer)
    preAuth.delete(rec.socket)
  }
  const trackPreAuth = (socket: Socket): PreAuth => {
    // slow-loris: TLS handshake, HTTP upgrade and an authenticated hello must all finish before the deadline
    const rec: PreAuth = {
      socket,
      upgraded: false,
      timer: setTimeout(() => {
        dropPreAuth(rec)
        if (rec.onTimeout) rec.onTimeout()
        else socket.destroy()
      }, handshakeTimeoutMs),
    }
    preAuth.set(socket, rec)
    preAuthOf.set(socket, rec)
    socket.once('close', () => dropPreAuth(rec))
    return rec
  }
  const evictOnePreAuth = () => {
    let victim: PreAuth | undefined
    for (const r of preAuth.values()) {
      if (!r.upgraded) {
        victim = r
        break
      }
      victim ??= r
    }
    if (!victim) return
    dropPreAuth(victim)
    victim.socket.destroy()
  }
  const onConnection = (socket: Socket) => {
    if (closing) {
      socket.destroy()
      return
    }
    if (preAuth.size >= maxPreAuth) evictOnePreAuth()
    if (sockets.size >= maxConnections) {
      socket.destroy()
      return
    }
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
    trackPreAuth(socket)
  }
  const onSecureConnection = (tlsSocket: Socket) => {
    // the upgrade arrives on the TLS socket; link it to the raw socket's record
    const raw = (tlsSocket as Socket & { _parent?: Socket })._parent
    const rec = raw ? preAuthOf.get(raw) : undefined
    if (rec) preAuthOf.set(tlsSocket, rec)
    tlsSocket.on('error', () => {})
  }
  const onRequest = (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
    res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' })
    res.end('xbzrle receiver: WebSocket upgrade required\n')
  }
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {})
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    if (closing || !path.startsWith(pathPrefix)) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      socket.destroy()
      return
    }
    const rec = preAuthOf.get(socket as Socket)
    if (rec) rec.upgraded = true
    try {
      wss.handleUpgrade(req, socket, head, (ws) => onWebSocket(ws, req, socket as Socket, path))
    } catch {
      socket.destroy()
    }
  }
  server.on('connection', onConnection)
  if (isTls) server.on('secureConnection', onSecureConnection)
  server.on('request', onRequest)
  server.on('upgrade', onUpgrade)
  server.on('clientError', (_err, socket) => socket.destroy())
  const onWssError = () => {}
  wss.on('error', onWssError)

  /** `report`: emit a 'refused' event (not for a session failure, which already had its 'session-error'). */
  const refuse = (
    ws: WebSocket,
    name: CloseCodeName,
    message: string,
    remoteAddress: string | undefined,
    report = true,
  ) => {
    const code = CloseCode[name]
    if (report) emit({ type: 'refused', code, name, message, remoteAddress })
    if (ws.isPaused) ws.resume() // to read the peer's close frame
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'refuse', code: name, message: truncateUtf8(message, 1000) }))
      ws.close(code, truncateUtf8(message, 120))
      setTimeout(() => ws.terminate(), 2000).unref()
    } else ws.terminate()
  }

  // ---- sessions ----
  class Session {
    readonly ac = new AbortController()
    ws: WebSocket | null = null
    state: SessionSnapshot['state'] = 'active'
    graceTimer: NodeJS.Timeout | null = null
    writable!: Writable
    readonly returnPath: PassThrough
    readonly channel: ReliableChannel
    info!: SessionInfo
    /** Issued in the first welcome; a resume must present it (constant-time compare). */
    readonly secret = randomBytes(32).toString('base64url')
    private rpDraining = false

    constructor(
      readonly id: string,
      readonly memoryBytes: number,
      readonly path: string,
      readonly remoteAddress: string | undefined,
    ) {
      this.channel = new ReliableChannel({
        windowBytes,
        highWaterBytes: windowBytes,
        ackEveryBytes,
        ackDelayMs,
        deliver: (payload) => this.writable.write(payload),
        onInboundEnd: () => this.endOfStream(),
        onWritable: () => {
          this.pumpReturnPath()
          this.maybeComplete()
        },
        onInboundHold: (held) => {
          if (held) {
            this.ws?.pause()
            this.writable.once('drain', () => this.channel.resumeInbound())
          } else this.ws?.resume()
        },
      })
      // Return path: a PassThrough the pipeline writes to; drained into the channel as the window allows.
      this.returnPath = new PassThrough({ highWaterMark: 256 * 1024 })
      this.returnPath.on('readable', () => this.pumpReturnPath())
      this.returnPath.on('end', () => {
        this.channel.end()
        this.maybeComplete()
      })
      this.returnPath.on('error', () => {})
    }

    pumpReturnPath(): void {
      if (this.rpDraining) return
      this.rpDraining = true
      try {
        while (this.channel.canSend || (!this.channel.attached && this.channel.unackedBytes < windowBytes)) {
          if (this.channel.outEnded) break
          const parts: Buffer[] = []
          let n = 0
          while (n < maxMsg) {
            const c: Buffer | null = this.returnPath.read()
            if (c === null) break
            parts.push(c)
            n += c.length
          }
          if (n === 0) break
          this.channel.send(parts)
        }
      } finally {
        this.rpDraining = false
      }
    }

    async start(factory: PipelineFactory, info: SessionInfo): Promise<void> {
      this.info = info
      const p = await factory(info)
      const writable =
        'writable' in p && typeof (p as { writable: unknown }).writable === 'object' && !('write' in p)
          ? (p as { writable: Writable }).writable
          : (p as Writable)
      const done = (p as { done?: Promise<unknown> }).done ?? finished(writable)
      this.writable = writable
      writable.on('error', (err) => this.failWith(err))
      Promise.resolve(done).then(
        () => this.pipelineDone(),
        (err: unknown) => this.failWith(err),
      )
    }

    attach(ws: WebSocket, returnFromSeq: number): void {
      if (this.graceTimer) clearTimeout(this.graceTimer)
      this.graceTimer = null
      this.ws = ws
      this.channel.attach(
        {
          sendBinary: (buf, cb) => ws.send(buf, { binary: true }, cb),
          sendText: (text) => ws.send(text),
          get bufferedAmount() {
            return ws.bufferedAmount
          },
        } satisfies ChannelTransport,
        returnFromSeq,
      )
      if (this.channel.held) ws.pause()
      this.pumpReturnPath()
      this.maybeComplete()
    }

    detach(ws: WebSocket): void {
      if (this.ws !== ws || sessions.get(this.id) !== this) return
      this.ws = null
      this.channel.detach()
      if (this.state === 'active' || this.state === 'ending' || this.state === 'finished') {
        this.graceTimer = setTimeout(() => {
          if (this.state === 'finished') this.complete()
          else this.fail(`sender did not resume within ${graceMs} ms`)
        }, graceMs)
      }
    }

    endOfStream(): void {
      if (this.state !== 'active') return
      this.state = 'ending'
      this.writable.end()
      // an ending Writable never emits 'drain': stop holding (the rest only needs the close handshake and acks)
      this.channel.resumeInbound()
    }

    pipelineDone(): void {
      if (this.state === 'failed') return
      if (this.state !== 'ending') {
        this.fail('pipeline finished before the end of the stream')
        return
      }
      this.state = 'finished'
      if (!this.returnPath.writableEnded) this.returnPath.end()
      this.maybeComplete()
    }

    maybeComplete(): void {
      if (this.state !== 'finished' || !this.channel.outComplete || !this.ws) return
      const ws = this.ws
      ws.send(
        JSON.stringify({ type: 'ack', seq: this.channel.nextExpected - 1, final: this.channel.bytesIn }),
      )
      this.complete()
      ws.close(1000, 'done')
    }

    complete(): void {
      this.cleanup(true, '')
      emit({ type: 'session-end', migrationId: this.id, bytes: this.channel.bytesIn })
    }

    /** A pipeline error: a SessionRefusal keeps its own code and message, anything else is a PIPELINE_ERROR. */
    failWith(err: unknown): void {
      if (err instanceof SessionRefusal) this.fail(err.message, err.codeName)
      else this.fail(`pipeline failed: ${err instanceof Error ? err.message : String(err)}`)
    }

    fail(message: string, code: CloseCodeName = 'PIPELINE_ERROR'): void {
      if (this.state === 'failed' || !sessions.has(this.id)) return
      this.state = 'failed'
      emit({ type: 'session-error', migrationId: this.id, message })
      if (this.ws) refuse(this.ws, code, message, this.remoteAddress, false)
      this.writable?.destroy()
      this.returnPath.destroy()
      this.cleanup(false, message)
    }

    /** Dropped without a trace (no event, no tombstone): nobody ever learnt this session's secret. */
    discard(reason: string): void {
      if (!sessions.has(this.id)) return
      this.state = 'failed'
      this.writable?.destroy(new Error(reason))
      this.returnPath.destroy()
      this.cleanup(false, reason)
      const t = tombstones.get(this.id)
      if (t) clearTimeout(t.timer)
      tombstones.delete(this.id)
    }

    /** Torn down by the receiver's close(). */
    shutdown(): void {
      if (!sessions.has(this.id)) return
      this.state = 'failed'
      this.ws?.close(CloseCode.SERVER_SHUTDOWN, 'receiver shutting down')
      this.writable?.destroy(new Error('receiver closed'))
      this.returnPath.destroy()
      this.cleanup(false, 'receiver closed')
    }

    private cleanup(ok: boolean, message: string): void {
      if (!sessions.has(this.id) || sessions.get(this.id) !== this) return
      sessions.delete(this.id)
      memoryInUse -= this.memoryBytes
      if (this.graceTimer) clearTimeout(this.graceTimer)
      this.graceTimer = null
      this.ac.abort()
      const endSeq = this.channel.nextExpected - 1
      const bytes = this.channel.bytesIn
      this.channel.dispose()
      if (!closing) {
        const timer = setTimeout(() => tombstones.delete(this.id), graceMs)
        timer.unref()
        tombstones.get(this.id)?.timer && clearTimeout(tombstones.get(this.id)!.timer)
        tombstones.set(this.id, { ok, secret: this.secret, endSeq, bytes, message, timer })
      }
    }

    snapshot(): SessionSnapshot {
      return {
        migrationId: this.id,
        state: this.state,
        connected: this.ws !== null,
        bytes: this.channel.bytesIn,
        memoryBytes: this.memoryBytes,
        path: this.path,
        remoteAddress: this.remoteAddress,
      }
    }
  }

  // ---- one WebSocket connection ----
  const onWebSocket = (ws: WebSocket, req: IncomingMessage, socket: Socket, path: string) => {
    clients.add(ws)
    const remoteAddress = req.socket.remoteAddress
    const headerToken = bearerToken(req.headers.authorization)
    let session: Session | null = null
    let handshaking = true
    let idleTimer: NodeJS.Timeout | null = null
    // the pre-auth deadline runs on from TCP accept (a connection from before we were attached gets a fresh one)
    const pre = preAuthOf.get(socket) ?? trackPreAuth(socket)
    pre.upgraded = true
    pre.onTimeout = () =>
      refuse(ws, 'HANDSHAKE_TIMEOUT', `no authenticated hello within ${handshakeTimeoutMs} ms`, remoteAddress)
    const authenticated = () => dropPreAuth(pre)
    const touch = () => {
      if (idleTimer) clearTimeout(idleTimer)
      idleTimer = setTimeout(() => {
        if (ws.isPaused) return touch()
        refuse(ws, 'IDLE_TIMEOUT', `no traffic for ${idleTimeoutMs} ms`, remoteAddress)
      }, idleTimeoutMs)
    }
    ws.on('error', () => {})
    ws.on('ping', touch)
    ws.on('pong', touch)
    ws.on('close', () => {
      clients.delete(ws)
      dropPreAuth(pre)
      if (idleTimer) clearTimeout(idleTimer)
      session?.detach(ws)
    })

    const handleHello = async (hello: WsHello): Promise<void> => {
      if (options.token !== undefined && !tokensEqual(options.token, headerToken ?? hello.token))
        throw new RefuseError('BAD_TOKEN', 'missing or invalid token')
      authenticated()
      if (!isSafeMigrationId(hello.migrationId))
        throw new RefuseError(
          'BAD_MIGRATION_ID',
          `migration id ${JSON.stringify(hello.migrationId.slice(0, 130))} is not allowed: use 1-128 of [A-Za-z0-9._-], not starting with a dot`,
        )
      let version: number
      try {
        version = negotiateVersion(versions, hello.versions)
      } catch (err) {
        throw new RefuseError('NO_COMMON_VERSION', (err as Error).message)
      }
      const id = hello.migrationId
      const returnFromSeq = hello.returnFromSeq ?? 1
      const welcome = (s: { nextExpected: number }, secret?: string): WsWelcome => ({
        type: 'welcome',
        version,
        migrationId: id,
        resumeFromSeq: s.nextExpected,
        maxMessageBytes: maxMsg + HEADER_BYTES,
        ...(secret !== undefined ? { sessionSecret: secret } : {}),
      })
      // Only the sender that started a session holds its secret: anyone else (even with the token) cannot resume it.
      const checkSecret = (secret: string) => {
        if (!tokensEqual(secret, hello.sessionSecret))
          throw new RefuseError(
            'BAD_SESSION_SECRET',
            `cannot resume migration ${id}: ${hello.sessionSecret === undefined ? 'no' : 'wrong'} session secret (only the sender that started it can resume; senders older than adapter-ws 0.2 cannot resume)`,
          )
      }
      const tomb = tombstones.get(id)
      const existing = sessions.get(id)
      if (!existing && tomb) {
        if (!hello.resume) throw new RefuseError('DUPLICATE_SESSION', `migration ${id} already ran`)
        checkSecret(tomb.secret)
        if (!tomb.ok) throw new RefuseError('PIPELINE_ERROR', tomb.message)
        ws.send(JSON.stringify(welcome({ nextExpected: tomb.endSeq + 1 })))
        ws.send(JSON.stringify({ type: 'ack', seq: tomb.endSeq, final: tomb.bytes }))
        ws.close(1000, 'done')
        return
      }
      if (existing) {
        if (!hello.resume)
          throw new RefuseError('DUPLICATE_SESSION', `migration ${id} is already in progress`)
        checkSecret(existing.secret)
        if (existing.state === 'failed') throw new RefuseError('SESSION_GONE', `migration ${id} failed`)
        if (hello.resume.fromSeq > existing.channel.nextExpected)
          throw new RefuseError(
            'SESSION_GONE',
            `cannot resume: receiver needs ${existing.channel.nextExpected}, sender holds from ${hello.resume.fromSeq}`,
          )
        if (!existing.channel.canResumeAt(returnFromSeq))
          throw new RefuseError('SESSION_GONE', `cannot resume the return path at ${returnFromSeq}`)
        if (existing.ws) {
          const old = existing.ws
          existing.detach(old)
          old.close(CloseCode.SUPERSEDED, 'superseded by a resumed connection')
        }
        session = existing
        ws.send(JSON.stringify(welcome(existing.channel)))
        existing.attach(ws, returnFromSeq)
        emit({ type: 'session-resume', migrationId: id, fromSeq: existing.channel.nextExpected })
        return
      }
      if (hello.resume && hello.resume.fromSeq > 1)
        throw new RefuseError('SESSION_GONE', `no session ${id} to resume (expired or unknown)`)
      if (sessions.size >= maxSessions)
        throw new RefuseError('TOO_MANY_SESSIONS', `too many sessions (${maxSessions})`)
      const need = Math.ceil(estimate(hello))
      if (need > maxSessionBytes)
        throw new RefuseError(
          'SESSION_TOO_LARGE',
          `session needs ${need} bytes of memory, the per-session limit is ${maxSessionBytes}`,
        )
      if (memoryInUse + need > memoryCap)
        throw new RefuseError(
          'OVER_MEMORY_CAP',
          `receiver memory cap reached: ${memoryInUse} + ${need} > ${memoryCap} bytes; try again later`,
        )
      const s = new Session(id, need, path, remoteAddress)
      sessions.set(id, s)
      memoryInUse += need
      tombstones.delete(id)
      const info: SessionInfo = {
        migrationId: id,
        version,
        header: hello.header,
        path,
        remoteAddress,
        memoryBytes: need,
        returnPath: s.returnPath,
        signal: s.ac.signal,
      }
      try {
        await s.start(options.createPipeline, info)
      } catch (err) {
        if (err instanceof SessionRefusal) {
          // a refusal by the factory (e.g. output busy): the session never started, so no session-error
          s.discard(err.message)
          throw err
        }
        s.fail(`cannot create pipeline: ${(err as Error).message}`)
        throw new RefuseError('PIPELINE_ERROR', `cannot create pipeline: ${(err as Error).message}`)
      }
      if (s.state === 'failed') return
      if (ws.readyState !== WebSocket.OPEN) {
        // connection lost during setup: the sender never got the session secret, so nobody could resume this
        // session; drop it (no tombstone), and the sender's next hello starts it afresh
        s.discard('connection lost during session setup')
        return
      }
      emit({ type: 'session-start', migrationId: id, version, memoryBytes: need })
      session = s
      ws.send(JSON.stringify(welcome(s.channel, s.secret)))
      s.attach(ws, returnFromSeq)
    }

    touch()
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      touch()
      if (handshaking) {
        if (isBinary) return refuse(ws, 'BAD_HELLO', 'expected a JSON hello, got binary data', remoteAddress)
        if (data.length > maxControl)
          return refuse(
            ws,
            'MESSAGE_TOO_BIG',
            `hello of ${data.length} bytes (max ${maxControl})`,
            remoteAddress,
          )
        const r = parseControl(data.toString('utf8'))
        if (!r.ok) return refuse(ws, 'BAD_HELLO', r.error, remoteAddress)
        if (r.msg.type !== 'hello')
          return refuse(ws, 'BAD_HELLO', `expected hello, got ${r.msg.type}`, remoteAddress)
        handshaking = false
        ws.pause() // no data until the session is attached
        handleHello(r.msg).then(
          () => {
            if (ws.readyState === WebSocket.OPEN && !(session?.channel.held ?? false)) ws.resume()
          },
          (err: unknown) => {
            if (err instanceof RefuseError) refuse(ws, err.codeName, err.message, remoteAddress)
            else refuse(ws, 'PROTOCOL_ERROR', `internal error: ${(err as Error).message}`, remoteAddress)
          },
        )
        return
      }
      const s = session
      if (!s || s.ws !== ws) return
      try {
        if (isBinary) {
          s.channel.handleBinary(data)
          return
        }
        if (data.length > maxControl)
          return refuse(ws, 'MESSAGE_TOO_BIG', `control message of ${data.length} bytes`, remoteAddress)
        const r = parseControl(data.toString('utf8'))
        if (!r.ok) return refuse(ws, 'PROTOCOL_ERROR', r.error, remoteAddress)
        if (r.msg.type === 'ack') s.channel.handleAck(r.msg.seq)
        else if (r.msg.type === 'refuse') {
          s.fail(`sender aborted: ${r.msg.code}: ${r.msg.message}`)
          ws.close(1000)
        } else refuse(ws, 'PROTOCOL_ERROR', `unexpected ${r.msg.type} after the handshake`, remoteAddress)
      } catch (err) {
        refuse(ws, 'PROTOCOL_ERROR', (err as Error).message, remoteAddress)
        s.detach(ws)
      }
    })
  }

  let address: AddressInfo | null = null
  return {
    async listen(host = '127.0.0.1', port = 0) {
      if (!ownServer) throw new Error('listen() is not available when attached to an existing server')
      if (options.token === undefined && !options.allowInsecureNoToken && !isLoopbackHost(host))
        throw new Error(
          `refusing to listen on ${host} without a token (set a token, or allowInsecureNoToken to accept anyone)`,
        )
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      address = server.address() as AddressInfo
      if (options.token !== undefined && !options.tls && !isLoopbackHost(host))
        emit({
          type: 'warning',
          message: `the token is accepted over ws:// without TLS on ${host}: anyone on the network path can read it (and the session secrets); set tls`,
        })
      return address
    },
    async close() {
      closing = true
      for (const s of [...sessions.values()]) s.shutdown()
      for (const t of tombstones.values()) clearTimeout(t.timer)
      tombstones.clear()
      for (const ws of clients) ws.terminate()
      for (const rec of preAuth.values()) clearTimeout(rec.timer)
      preAuth.clear()
      server.off('connection', onConnection)
      server.off('secureConnection', onSecureConnection)
      server.off('request', onRequest)
      server.off('upgrade', onUpgrade)
      wss.close()
      wss.off('error', onWssError)
      if (ownServer) {
        for (const s of sockets) s.destroy()
        if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()))
      }
    },
    get address() {
      return address
    },
    get sessions() {
      return [...sessions.values()].map((s) => s.snapshot())
    },
    get memoryInUse() {
      return memoryInUse
    },
    get connections() {
      return sockets.size
    },
    server,
  }
}
