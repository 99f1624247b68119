/**
 * Unix-socket migration proxy pair for `virsh migrate --migrateuri unix:///PATH` and plain QEMU
 * `migrate unix:PATH` / `-incoming unix:PATH`.
 *
 * ```
 * source QEMU ──unix──▶ source proxy ──(EncodeStream)──▶ transport ──(DecodeStream)──▶ destination proxy ──unix──▶ destination QEMU
 *             ◀──────────────────────── return path: raw bytes, untouched ◀───────────────────────────────
 * ```
 *
 * The transport is any full-duplex byte stream that supports half-close (a TCP socket here; a WebSocket Duplex
 * later): forward direction = xbzrle stream, reverse direction = QEMU's return path verbatim. One migration
 * (connection) at a time per proxy; a connection that arrives while one is active is refused (closed at once).
 * Migrations one after another through the same pair work.
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, lstatSync, renameSync, unlinkSync } from 'node:fs'
import { createServer, isIP, type Server, type Socket, connect as socketConnect } from 'node:net'
import { dirname, join } from 'node:path'
import type { Duplex, Transform } from 'node:stream'
import { type ConnectionOptions, createServer as createTlsServer, connect as tlsConnect } from 'node:tls'
import type { DecoderOptions } from '../filter/decoder.js'
import type { EncoderOptions } from '../filter/encoder.js'
import { DecodeStream, EncodeStream } from '../filter/streams.js'
import {
  clientHandshake,
  HandshakeRefused,
  HandshakeStatus,
  isLoopbackHost,
  serverHandshake,
} from './proxy-auth.js'

// ---------------------------------------------------------------------------------------------------------
// Transports

/** Opens one transport connection (source side), e.g. TCP to the destination proxy. */
export type TransportConnector = () => Promise<Duplex>

/**
 * Yields transport connections (destination side). The Duplex must support half-close: `end()` on one side is
 * seen as `'end'` on the other while the opposite direction stays open.
 */
export interface TransportListener {
  /** Human-readable address for messages, e.g. `tcp:127.0.0.1:4444`. */
  readonly address: string
  /** Registers the handler for new connections (called once, by the proxy). */
  onConnection(handler: (connection: Duplex) => void): void
  close(): Promise<void>
}

export interface TcpEndpoint {
  host?: string
  port: number
}

function tuneTcp(s: Socket): void {
  s.setNoDelay(true) // the return path carries tiny messages QEMU waits for
  s.setKeepAlive(true, 10_000)
}

/** TLS on the source side: `true` = verify against the system CAs; `ca` = trust these (PEM). */
export type TlsClientOptions = boolean | { ca?: string | Buffer; servername?: string }

/** TLS on the destination side: certificate chain and private key (PEM). */
export interface TlsServerOptions {
  cert: string | Buffer
  key: string | Buffer
}

/**
 * A TransportConnector that opens a TCP connection (half-close enabled, no Nagle, keep-alive), with TLS when
 * `tls` is given (the server certificate is verified; the host name is checked unless it is an IP address).
 */
export function tcpConnector(
  endpoint: TcpEndpoint & { timeoutMs?: number; tls?: TlsClientOptions },
): TransportConnector {
  const host = endpoint.host ?? '127.0.0.1'
  const timeoutMs = endpoint.timeoutMs ?? 10_000
  const tls = endpoint.tls === true ? {} : endpoint.tls || undefined
  const scheme = tls ? 'tls' : 'tcp'
  return () =>
    new Promise<Duplex>((resolve, reject) => {
      const s: Socket = tls
        ? tlsConnect({
            host,
            port: endpoint.port,
            // passed on to the TLSSocket (half-close: the return path stays open after the stream's end)
            allowHalfOpen: true,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
            servername: tls.servername ?? (isIP(host) ? undefined : host),
          } as ConnectionOptions)
        : socketConnect({ host, port: endpoint.port, allowHalfOpen: true })
      const timer = setTimeout(() => {
        s.destroy()
        reject(new Error(`connecting to ${scheme}:${host}:${endpoint.port} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      s.once(tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer)
        s.removeAllListeners('error')
        tuneTcp(s)
        resolve(s)
      })
      s.once('error', (e) => {
        clearTimeout(timer)
        reject(new Error(`cannot connect to ${scheme}:${host}:${endpoint.port}: ${e.message}`))
      })
    })
}

/**
 * A TransportListener on a TCP port (port 0 picks a free one; see `port`), with TLS when `tls` is given
 * (`handshakeTimeoutMs` then bounds the TLS handshake too; default 10000 ms).
 */
export async function listenTcp(
  endpoint: TcpEndpoint & { tls?: TlsServerOptions; handshakeTimeoutMs?: number },
): Promise<TransportListener & { port: number }> {
  const host = endpoint.host ?? '127.0.0.1'
  let handler: ((c: Duplex) => void) | undefined
  const onSocket = (s: Socket) => {
    tuneTcp(s)
    if (handler) handler(s)
    else s.destroy()
  }
  const server: Server = endpoint.tls
    ? createTlsServer(
        {
          cert: endpoint.tls.cert,
          key: endpoint.tls.key,
          allowHalfOpen: true,
          handshakeTimeout: endpoint.handshakeTimeoutMs ?? 10_000,
        },
        onSocket,
      )
    : createServer({ allowHalfOpen: true }, onSocket)
  if (endpoint.tls) server.on('tlsClientError', () => {}) // a failed TLS handshake only loses that connection
  await listen(server, { host, port: endpoint.port })
  const addr = server.address()
  const port = typeof addr === 'object' && addr ? addr.port : endpoint.port
  return {
    address: `${endpoint.tls ? 'tls' : 'tcp'}:${host}:${port}`,
    port,
    onConnection(h) {
      handler = h
    },
    close: () => closeServer(server),
  }
}

function listen(server: Server, where: { host: string; port: number } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e)
    server.once('error', onError)
    server.listen(where, () => {
      server.off('error', onError)
      resolve()
    })
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve()
      return
    }
    server.close(() => resolve())
  })
}

/**
 * Makes `path` free for a unix socket we are about to bind, without ever taking a live one: nothing there → ok;
 * a socket nobody accepts on (ECONNREFUSED: its owner died) → removed; a socket something accepts on → throws
 * "… is in use by another process"; anything that is not a socket → throws.
 */
async function claimUnixPath(path: string): Promise<void> {
  let st: ReturnType<typeof lstatSync>
  try {
    st = lstatSync(path)
  } catch {
    return
  }
  if (!st.isSocket()) throw new Error(`unix:${path} exists and is not a socket; refusing to replace it`)
  const state = await new Promise<'live' | 'stale' | 'gone' | string>((resolve) => {
    const s = socketConnect({ path })
    const timer = setTimeout(() => {
      s.destroy()
      resolve('live') // a full backlog is a live listener too
    }, 2000)
    s.once('connect', () => {
      clearTimeout(timer)
      s.destroy()
      resolve('live')
    })
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve(e.code === 'ECONNREFUSED' ? 'stale' : e.code === 'ENOENT' ? 'gone' : (e.code ?? e.message))
    })
  })
  if (state === 'live') throw new Error(`unix:${path} is in use by another process`)
  if (state === 'stale') {
    try {
      unlinkSync(path)
    } catch {
      // removed meanwhile
    }
  } else if (state !== 'gone') {
    throw new Error(`unix:${path} exists and cannot be checked (${state}); refusing to replace it`)
  }
}

/** Identity of the socket file we bound, to remove it on exit only if it is still ours. */
function socketIdentity(path: string): { dev: number; ino: number } | undefined {
  try {
    const st = lstatSync(path)
    return st.isSocket() ? { dev: st.dev, ino: st.ino } : undefined
  } catch {
    return undefined
  }
}

function unlinkIfOurs(path: string, ours: { dev: number; ino: number } | undefined): void {
  if (!ours) return
  const now = socketIdentity(path)
  if (now && now.dev === ours.dev && now.ino === ours.ino) {
    try {
      unlinkSync(path)
    } catch {
      // already gone
    }
  }
}

function connectUnix(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = socketConnect({ path, allowHalfOpen: true })
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`connecting to unix:${path} timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    s.once('connect', () => {
      clearTimeout(timer)
      s.removeAllListeners('error')
      resolve(s)
    })
    s.once('error', (e) => {
      clearTimeout(timer)
      reject(new Error(`cannot connect to QEMU at unix:${path}: ${e.message}`))
    })
  })
}

// ---------------------------------------------------------------------------------------------------------
// Sessions

/** What one migration through a proxy did. Byte counts are of this proxy's side. */
export interface ProxySessionResult {
  /** 1, 2, 3 … per proxy. */
  id: number
  ok: boolean
  /** One-line reason when `ok` is false. */
  error?: string
  /** Bytes read in the forward direction (source: QEMU stream; destination: xbzrle stream). */
  forwardIn: number
  /** Bytes written in the forward direction (source: xbzrle stream; destination: QEMU stream). */
  forwardOut: number
  /** Return-path bytes relayed (destination QEMU → source QEMU), unchanged. */
  returnPath: number
  durationMs: number
  /**
   * With `digest: true`: SHA-256 (hex) of the QEMU stream as this proxy saw it (source: read from QEMU;
   * destination: written to QEMU). Equal on both halves = the migration stream crossed byte for byte.
   */
  qemuSha256?: string
}

/** Totals over all sessions of one proxy. */
export interface ProxyCounters {
  sessions: number
  completed: number
  failed: number
  /** Connections refused because a migration was already running. */
  refused: number
  /**
   * Destination: transport connections dropped before a session (wrong or missing token, handshake timeout,
   * not an xbzrle proxy). Source: always 0.
   */
  unauthenticated: number
  forwardIn: number
  forwardOut: number
  returnPath: number
}

export interface MigrationProxy {
  readonly role: 'source' | 'destination'
  /** Where the proxy listens (`unix:/path` or the transport's address). */
  readonly address: string
  /** Totals, updated live (also during a session). */
  readonly counters: Readonly<ProxyCounters>
  readonly busy: boolean
  /** Every finished session so far. */
  readonly sessions: readonly ProxySessionResult[]
  /** Resolves when the running session ends, or else the next one to start. */
  nextSession(): Promise<ProxySessionResult>
  /** Resolves when session `id` (1, 2, …) has ended; at once if it already has. */
  waitForSession(id: number): Promise<ProxySessionResult>
  /** Stops listening and aborts a running session (its sockets are destroyed). Idempotent. */
  close(): Promise<void>
}

export interface ProxyCommonOptions {
  /** Called once per finished session (success or failure). */
  onSession?: (result: ProxySessionResult) => void
  /** One-line log messages (default: none). `formatSession` turns results into such lines. */
  log?: (line: string) => void
  /** Timeout for opening the outgoing connection (transport or QEMU socket). Default 10000 ms. */
  connectTimeoutMs?: number
  /** Abort a session when no byte moved in either direction for this long. Default 0 = never. */
  idleTimeoutMs?: number
  /** Hash the QEMU side of the stream (ProxySessionResult.qemuSha256). Costs CPU. Default false. */
  digest?: boolean
  /**
   * Once the return path has ended (destination QEMU or transport closed it), the forward direction must end
   * within this time, else the session fails. At a normal end the source QEMU closes right after it read
   * the destination's SHUT message; a destination that died leaves the source side half-open forever without
   * this. Default 30000 ms.
   */
  halfCloseTimeoutMs?: number
  /**
   * Shared secret of the pair (see proxy-auth.ts for the handshake). Destination: connections must prove they
   * know it. Source: proves it when the destination asks. Default: none.
   */
  token?: string
}

export interface SourceProxyOptions extends ProxyCommonOptions {
  /** Unix socket path the source QEMU (or libvirtd, for `--migrateuri unix://PATH`) connects to. */
  listen: string
  /** Opens the transport to the destination half for each migration. */
  connect: TransportConnector
  encoder?: EncoderOptions
  /** Mode of the socket file (default 0o660: libvirtd runs as root; QEMU started by hand may need 0o666). */
  socketMode?: number
}

export interface DestinationProxyOptions extends ProxyCommonOptions {
  /** Where transport connections come from: a listener, or a TCP endpoint to listen on. */
  accept?: TransportListener
  listen?: TcpEndpoint
  /** Unix socket the destination QEMU listens on (`-incoming unix:PATH` / `migrate-incoming unix:PATH`). */
  qemuSocket: string
  decoder?: DecoderOptions
  /** TLS for the `listen` TCP listener (ignored with `accept`). */
  tls?: TlsServerOptions
  /**
   * A transport connection must finish the proxy handshake (and TLS) within this time, else it is dropped; the
   * migration slot is only taken after authentication, so idle connections cannot block a migration.
   * Default 10000 ms.
   */
  handshakeTimeoutMs?: number
  /** Unauthenticated connections held at once (more are dropped at once). Default 16. */
  maxPendingHandshakes?: number
  /**
   * `listen` on a non-loopback address without a `token` is refused unless this is true (anyone who can reach
   * the port could feed the destination QEMU a migration stream).
   */
  allowRemoteWithoutToken?: boolean
}

/**
 * Watches (never changes) QEMU's return path: `be16 type | be16 len | data` messages (QEMU 7.2
 * migration.c: SHUT=1, PONG=2, REQ_PAGES_ID=3, REQ_PAGES=4, RECV_BITMAP=5, RESUME_ACK=6; 10.x SWITCHOVER_ACK=7).
 * At the end of a successful migration the destination sends SHUT with a be32 0; a return path that ends
 * without it means the destination did not confirm the migration (it failed, or a proxy or the link died).
 */
export class ReturnPathWatcher {
  messages = 0
  /** be32 payload of the last SHUT message (0 = destination loaded the stream), if any. */
  shut: number | undefined
  /** Set when the bytes stop looking like return-path messages (then no conclusion is drawn). */
  unparsable = false
  private head = Buffer.alloc(4)
  private headLen = 0
  private type = 0
  private left = 0
  private body: Buffer[] = []

  push(chunk: Buffer): void {
    let i = 0
    while (i < chunk.length && !this.unparsable) {
      if (this.left === 0 && this.headLen < 4) {
        const n = Math.min(4 - this.headLen, chunk.length - i)
        chunk.copy(this.head, this.headLen, i, i + n)
        this.headLen += n
        i += n
        if (this.headLen < 4) return
        this.type = this.head.readUInt16BE(0)
        this.left = this.head.readUInt16BE(2)
        if (this.type < 1 || this.type > 7) {
          this.unparsable = true
          return
        }
        this.body = []
        if (this.left === 0) this.complete()
        continue
      }
      const n = Math.min(this.left, chunk.length - i)
      if (this.type === 1) this.body.push(chunk.subarray(i, i + n))
      this.left -= n
      i += n
      if (this.left === 0) this.complete()
    }
  }

  private complete(): void {
    this.messages++
    if (this.type === 1) {
      const b = Buffer.concat(this.body)
      this.shut = b.length >= 4 ? b.readUInt32BE(0) : 1
    }
    this.headLen = 0
    this.left = 0
  }

  /** Why the migration must count as failed, judged from the return path alone (undefined: no objection). */
  verdict(): string | undefined {
    if (this.unparsable || this.messages === 0) return undefined
    if (this.shut === undefined) {
      return 'the return path ended without a SHUT message: the destination did not confirm the migration'
    }
    if (this.shut !== 0) return `the destination QEMU reported a failed migration (SHUT ${this.shut})`
    return undefined
  }
}

const PEER_GONE = new Set(['EPIPE', 'ECONNRESET', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED'])

function oneLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e)
  return m.replace(/\s+/g, ' ').trim()
}

interface SessionEnds {
  /** The side the forward stream comes from (source: QEMU; destination: transport). */
  a: Duplex
  /** The side the forward stream goes to (source: transport; destination: QEMU). */
  b: Duplex
  aName: string
  bName: string
  transform: Transform
}

/**
 * Runs one session: a → transform → b (forward), b → a raw (return path). Resolves (never rejects) when both
 * directions are complete or on the first failure, after destroying everything.
 */
function runSession(
  id: number,
  ends: SessionEnds,
  counters: ProxyCounters,
  timeouts: { idleTimeoutMs: number; halfCloseTimeoutMs: number; digest: boolean; qemuIsA: boolean },
): { result: Promise<ProxySessionResult>; abort: (why: string) => void } {
  const { a, b, aName, bName, transform } = ends
  const t0 = Date.now()
  let forwardIn = 0
  let forwardOut = 0
  let returnPath = 0
  let done = false
  let forwardDone = false
  let reverseDone = false
  let lastActivity = Date.now()
  let resolveResult!: (r: ProxySessionResult) => void
  const result = new Promise<ProxySessionResult>((r) => {
    resolveResult = r
  })
  let idleTimer: NodeJS.Timeout | undefined
  let halfCloseTimer: NodeJS.Timeout | undefined
  const { idleTimeoutMs, halfCloseTimeoutMs } = timeouts
  const hash = timeouts.digest ? createHash('sha256') : undefined

  const watcher = new ReturnPathWatcher()
  const finish = (error?: string) => {
    if (done) return
    done = true
    error ??= watcher.verdict()
    if (idleTimer) clearInterval(idleTimer)
    if (halfCloseTimer) clearTimeout(halfCloseTimer)
    a.destroy()
    b.destroy()
    transform.destroy()
    const r: ProxySessionResult = {
      id,
      ok: error === undefined,
      forwardIn,
      forwardOut,
      returnPath,
      durationMs: Date.now() - t0,
    }
    if (error !== undefined) r.error = error
    if (hash) r.qemuSha256 = hash.digest('hex')
    resolveResult(r)
  }
  const fail = (why: string) => finish(why)
  const check = () => {
    if (forwardDone && reverseDone) finish()
  }

  // forward: a → transform → b
  a.on('data', (c: Buffer) => {
    if (hash && timeouts.qemuIsA) hash.update(c)
    forwardIn += c.length
    counters.forwardIn += c.length
    lastActivity = Date.now()
  })
  transform.on('data', (c: Buffer) => {
    if (hash && !timeouts.qemuIsA) hash.update(c)
    forwardOut += c.length
    counters.forwardOut += c.length
  })
  a.pipe(transform).pipe(b)
  // reverse (return path): b → a, raw
  b.on('data', (c: Buffer) => {
    watcher.push(c)
    returnPath += c.length
    counters.returnPath += c.length
    lastActivity = Date.now()
  })
  b.pipe(a)
  b.on('end', () => {
    if (forwardDone || done || halfCloseTimeoutMs <= 0) return
    halfCloseTimer = setTimeout(
      () =>
        fail(
          `${bName} closed the return path but ${aName} did not end its stream within ${halfCloseTimeoutMs} ms`,
        ),
      halfCloseTimeoutMs,
    )
  })

  b.on('finish', () => {
    forwardDone = true
    check()
  })
  a.on('finish', () => {
    reverseDone = true
    check()
  })

  // A peer that already sent EOF may refuse our last bytes / our FIN (EPIPE): harmless once everything that
  // direction carries has been handed over (upstream ended).
  const onSocketError = (side: Duplex, name: string, upstreamEnded: () => boolean) => (e: Error) => {
    const code = (e as NodeJS.ErrnoException).code ?? ''
    if (PEER_GONE.has(code) && side.readableEnded && upstreamEnded()) {
      if (side === b) forwardDone = true
      else reverseDone = true
      check()
      return
    }
    fail(`${name}: ${oneLine(e)}`)
  }
  a.on(
    'error',
    onSocketError(a, aName, () => b.readableEnded),
  )
  b.on(
    'error',
    onSocketError(b, bName, () => transform.readableEnded),
  )
  transform.on('error', (e) => fail(oneLine(e)))
  a.on('close', () => {
    if (!done && !(a.readableEnded && (reverseDone || a.writableFinished))) {
      fail(`${aName} closed the connection before the end of the migration`)
    }
  })
  b.on('close', () => {
    if (!done && !(b.readableEnded && (forwardDone || b.writableFinished))) {
      fail(`${bName} closed the connection before the end of the migration`)
    }
  })
  if (idleTimeoutMs > 0) {
    idleTimer = setInterval(
      () => {
        if (Date.now() - lastActivity > idleTimeoutMs)
          fail(`no data in either direction for ${idleTimeoutMs} ms`)
      },
      Math.min(1000, idleTimeoutMs),
    )
    idleTimer.unref()
  }
  return { result, abort: fail }
}

/** One line for a finished session, e.g. for logs. */
export function formatSession(role: 'source' | 'destination', r: ProxySessionResult): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`
  if (!r.ok) return `xbzrle proxy ${role}: migration ${r.id} failed: ${r.error}`
  const ratio =
    role === 'source'
      ? r.forwardOut > 0
        ? r.forwardIn / r.forwardOut
        : 0
      : r.forwardIn > 0
        ? r.forwardOut / r.forwardIn
        : 0
  const [qemu, xbz] = role === 'source' ? [r.forwardIn, r.forwardOut] : [r.forwardOut, r.forwardIn]
  return (
    `xbzrle proxy ${role}: migration ${r.id} done: QEMU ${mb(qemu)}, xbzrle ${mb(xbz)} (ratio ${ratio.toFixed(2)}), ` +
    `return path ${r.returnPath} B, ${(r.durationMs / 1000).toFixed(1)} s` +
    (r.qemuSha256 ? `, sha256 ${r.qemuSha256.slice(0, 16)}` : '')
  )
}

class ProxyState {
  readonly counters: ProxyCounters = {
    sessions: 0,
    completed: 0,
    failed: 0,
    refused: 0,
    unauthenticated: 0,
    forwardIn: 0,
    forwardOut: 0,
    returnPath: 0,
  }
  readonly sessions: ProxySessionResult[] = []
  active: { abort: (why: string) => void; result: Promise<ProxySessionResult> } | undefined
  closed = false
  private waiters: ((r: ProxySessionResult) => void)[] = []
  private byId = new Map<number, ((r: ProxySessionResult) => void)[]>()

  constructor(
    readonly role: 'source' | 'destination',
    private readonly options: ProxyCommonOptions,
  ) {}

  log(line: string): void {
    this.options.log?.(line)
  }

  nextSession(): Promise<ProxySessionResult> {
    if (this.active) return this.active.result
    return new Promise((r) => this.waiters.push(r))
  }

  waitForSession(id: number): Promise<ProxySessionResult> {
    const done = this.sessions.find((r) => r.id === id)
    if (done) return Promise.resolve(done)
    return new Promise((r) => {
      const list = this.byId.get(id) ?? []
      list.push(r)
      this.byId.set(id, list)
    })
  }

  /** Registers a session that is being set up (so that a second connection is refused meanwhile). */
  begin(): {
    id: number
    settle: (r: ProxySessionResult) => void
    setAbort: (f: (why: string) => void) => void
  } {
    const id = ++this.counters.sessions
    let settle!: (r: ProxySessionResult) => void
    const result = new Promise<ProxySessionResult>((r) => {
      settle = r
    })
    const active = { abort: (_why: string) => {}, result }
    this.active = active
    for (const w of this.waiters.splice(0)) result.then(w)
    void result.then((r) => {
      if (this.active === active) this.active = undefined
      this.sessions.push(r)
      if (r.ok) this.counters.completed++
      else this.counters.failed++
      this.log(formatSession(this.role, r))
      this.options.onSession?.(r)
      for (const w of this.byId.get(r.id) ?? []) w(r)
      this.byId.delete(r.id)
    })
    return {
      id,
      settle,
      setAbort: (f) => {
        active.abort = f
      },
    }
  }

  refuse(conn: Duplex, what: string): void {
    this.counters.refused++
    this.log(`xbzrle proxy ${this.role}: refused ${what}: a migration is already running (one at a time)`)
    conn.destroy()
  }

  abortActive(why: string): Promise<void> {
    const a = this.active
    if (!a) return Promise.resolve()
    a.abort(why)
    return a.result.then(() => undefined)
  }
}

function timeoutsOf(o: ProxyCommonOptions, qemuIsA: boolean) {
  return {
    idleTimeoutMs: o.idleTimeoutMs ?? 0,
    halfCloseTimeoutMs: o.halfCloseTimeoutMs ?? 30_000,
    digest: o.digest ?? false,
    qemuIsA,
  }
}

function failedResult(id: number, error: string, t0: number): ProxySessionResult {
  return { id, ok: false, error, forwardIn: 0, forwardOut: 0, returnPath: 0, durationMs: Date.now() - t0 }
}

/**
 * Source half: listens on `listen` (unix socket); for each connection from the source QEMU / libvirtd it opens
 * the transport, encodes QEMU's stream into it and relays the return path back to QEMU verbatim.
 */
export async function startSourceProxy(options: SourceProxyOptions): Promise<MigrationProxy> {
  const state = new ProxyState('source', options)
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  await claimUnixPath(options.listen)
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (qemu) => {
    if (state.closed) {
      qemu.destroy()
      return
    }
    if (state.active) {
      state.refuse(qemu, `a connection on unix:${options.listen}`)
      return
    }
    qemu.on('error', () => {}) // until the session owns it
    // A session starts with QEMU's first byte: a connection that closes without sending anything (another
    // proxy checking whether this socket is alive, see claimUnixPath) is no migration and is dropped quietly.
    const onFirst = () => {
      qemu.off('readable', onFirst)
      if (qemu.readableLength === 0) {
        qemu.destroy()
        return
      }
      start(qemu)
    }
    qemu.on('readable', onFirst)
  })
  const start = (qemu: Socket) => {
    if (state.closed) {
      qemu.destroy()
      return
    }
    if (state.active) {
      state.refuse(qemu, `a connection on unix:${options.listen}`)
      return
    }
    const s = state.begin()
    const t0 = Date.now()
    let aborted: string | undefined
    let transport: Duplex | undefined
    s.setAbort((why) => {
      aborted = why
      qemu.destroy()
      transport?.destroy()
    })
    const timer = setTimeout(() => {
      aborted ??= `opening the transport timed out after ${connectTimeoutMs} ms`
      qemu.destroy()
      transport?.destroy()
    }, connectTimeoutMs)
    const connecting = options.connect().then(async (t) => {
      transport = t
      t.on('error', () => {}) // until the session owns it
      if (aborted !== undefined) throw new Error(aborted)
      await clientHandshake(t, options.token)
      return t
    })
    connecting.then(
      (t) => {
        clearTimeout(timer)
        if (aborted !== undefined || qemu.destroyed) {
          t.destroy()
          s.settle(failedResult(s.id, aborted ?? 'source QEMU closed the connection early', t0))
          return
        }
        qemu.removeAllListeners('error')
        t.removeAllListeners('error')
        const run = runSession(
          s.id,
          {
            a: qemu,
            b: t,
            aName: 'source QEMU',
            bName: 'transport',
            // A live migration: the second stage adapts to the link, and the transport's write queue is the
            // encoder's backlog, kept to ~30 ms of link in flight (streams.ts).
            transform: new EncodeStream({
              ...options.encoder,
              compression: options.encoder?.compression ?? 'auto',
            }).drainsInto(t),
          },
          state.counters,
          timeoutsOf(options, true),
        )
        s.setAbort(run.abort)
        qemu.resume()
        run.result.then(s.settle)
      },
      (e: unknown) => {
        clearTimeout(timer)
        qemu.destroy()
        transport?.destroy()
        s.settle(failedResult(s.id, aborted ?? oneLine(e), t0))
      },
    )
  }
  // Bound under a temporary name and renamed into place: libuv unlinks a unix server's path by name when it
  // closes, which would remove whatever socket is at `listen` by then (another proxy's). Its temporary name is
  // gone after the rename, so that unlink hits nothing; we remove `listen` ourselves, only if it is ours.
  const bound = join(dirname(options.listen), `.xbz-${randomBytes(4).toString('hex')}`)
  await listen(server, { path: bound })
  try {
    chmodSync(bound, options.socketMode ?? 0o660)
    renameSync(bound, options.listen)
  } catch (e) {
    await closeServer(server)
    throw e
  }
  const ours = socketIdentity(options.listen)
  return {
    role: 'source',
    address: `unix:${options.listen}`,
    counters: state.counters,
    get busy() {
      return state.active !== undefined
    },
    sessions: state.sessions,
    nextSession: () => state.nextSession(),
    waitForSession: (id) => state.waitForSession(id),
    close: async () => {
      if (state.closed) return
      state.closed = true
      // Our socket file only: another proxy may have taken the path since (compared right before unlink).
      unlinkIfOurs(options.listen, ours)
      const closing = closeServer(server)
      await state.abortActive('proxy closed')
      await closing
    },
  }
}

/**
 * Destination half: takes transport connections (from `accept`, or a TCP listener on `listen`), connects to the
 * destination QEMU's unix socket, decodes the stream into it and relays QEMU's return path back verbatim.
 */
export async function startDestinationProxy(options: DestinationProxyOptions): Promise<MigrationProxy> {
  const state = new ProxyState('destination', options)
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000
  const maxPending = options.maxPendingHandshakes ?? 16
  let listener = options.accept
  if (!listener) {
    if (!options.listen) throw new Error('startDestinationProxy: give `accept` or `listen`')
    const host = options.listen.host ?? '127.0.0.1'
    if (!options.token && !isLoopbackHost(host) && !options.allowRemoteWithoutToken) {
      throw new Error(
        `refusing to listen on ${host} without a token: anyone who reaches the port could feed the destination ` +
          'QEMU; give --token-file FILE or XBZRLE_TOKEN (or listen on 127.0.0.1)',
      )
    }
    listener = await listenTcp({ ...options.listen, tls: options.tls, handshakeTimeoutMs })
  }
  const pending = new Set<Duplex>()
  const peerOf = (c: Duplex) => {
    const sock = c as Partial<Socket>
    return sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : 'a transport connection'
  }
  listener.onConnection((transport) => {
    if (state.closed || pending.size >= maxPending) {
      transport.destroy()
      return
    }
    pending.add(transport)
    transport.on('error', () => {})
    const peer = peerOf(transport)
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      transport.destroy()
    }, handshakeTimeoutMs)
    const drop = (why: string) => {
      state.counters.unauthenticated++
      state.log(`xbzrle proxy destination: dropped ${peer}: ${why}`)
    }
    serverHandshake(transport, options.token).then(
      (hs) => {
        clearTimeout(timer)
        pending.delete(transport)
        if (state.closed) {
          transport.destroy()
          return
        }
        // The slot is taken only now, after authentication.
        if (state.active) {
          state.counters.refused++
          state.log(
            `xbzrle proxy destination: refused ${peer}: a migration is already running (one at a time)`,
          )
          hs.refuse(HandshakeStatus.Busy, 'a migration is already running through this proxy (one at a time)')
          return
        }
        hs.accept()
        startSession(transport)
      },
      (e: unknown) => {
        clearTimeout(timer)
        pending.delete(transport)
        transport.destroy()
        if (timedOut) drop(`no proxy handshake within ${handshakeTimeoutMs} ms`)
        else if (e instanceof HandshakeRefused) drop(e.message)
        else drop(oneLine(e))
      },
    )
  })
  const startSession = (transport: Duplex) => {
    const s = state.begin()
    const t0 = Date.now()
    let aborted: string | undefined
    s.setAbort((why) => {
      aborted = why
      transport.destroy()
    })
    transport.pause()
    connectUnix(options.qemuSocket, connectTimeoutMs).then(
      (qemu) => {
        if (aborted !== undefined || transport.destroyed) {
          qemu.destroy()
          s.settle(failedResult(s.id, aborted ?? 'the transport closed before QEMU was reached', t0))
          return
        }
        transport.removeAllListeners('error')
        const run = runSession(
          s.id,
          {
            a: transport,
            b: qemu,
            aName: 'transport',
            bName: 'destination QEMU',
            transform: new DecodeStream(options.decoder),
          },
          state.counters,
          timeoutsOf(options, false),
        )
        s.setAbort(run.abort)
        run.result.then(s.settle)
      },
      (e: unknown) => {
        transport.destroy()
        s.settle(failedResult(s.id, oneLine(e), t0))
      },
    )
  }
  const l = listener
  return {
    role: 'destination',
    address: l.address,
    counters: state.counters,
    get busy() {
      return state.active !== undefined
    },
    sessions: state.sessions,
    nextSession: () => state.nextSession(),
    waitForSession: (id) => state.waitForSession(id),
    close: async () => {
      if (state.closed) return
      state.closed = true
      for (const c of pending) c.destroy()
      const closing = l.close()
      await state.abortActive('proxy closed')
      await closing
    },
  }
}
