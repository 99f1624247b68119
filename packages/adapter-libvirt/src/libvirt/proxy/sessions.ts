/**
 * The migrations of one proxy: what a session reports, the proxy's totals, and the registry that holds the one
 * slot (one migration at a time), numbers sessions and lets callers wait for them.
 */
import type { Duplex } from 'node:stream'

export type ProxyRole = 'source' | 'destination'

/**
 * Why a connection was refused, as `onRefused` reports it: BUSY (a migration is running), and on the
 * destination AUTH_FAILED, UNSUPPORTED_VERSION, MALFORMED (not an xbzrle proxy), HANDSHAKE_TIMEOUT,
 * HANDSHAKE_ABORTED (closed or failed during the handshake), TOO_MANY_PENDING (maxPendingHandshakes reached).
 */
export type ProxyRefusal =
  | 'BUSY'
  | 'AUTH_FAILED'
  | 'UNSUPPORTED_VERSION'
  | 'MALFORMED'
  | 'HANDSHAKE_TIMEOUT'
  | 'HANDSHAKE_ABORTED'
  | 'TOO_MANY_PENDING'

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

/** Totals of a proxy that has seen nothing yet. */
export function zeroProxyCounters(): ProxyCounters {
  return {
    sessions: 0,
    completed: 0,
    failed: 0,
    refused: 0,
    unauthenticated: 0,
    forwardIn: 0,
    forwardOut: 0,
    returnPath: 0,
  }
}

/** A session that failed before its relay started (nothing was relayed). */
export function failedResult(id: number, error: string, t0: number): ProxySessionResult {
  return { id, ok: false, error, forwardIn: 0, forwardOut: 0, returnPath: 0, durationMs: Date.now() - t0 }
}

/** One line for a finished session, e.g. for logs. */
export function formatSession(role: ProxyRole, r: ProxySessionResult): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`
  if (!r.ok) return `xbzrle proxy ${role}: migration ${r.id} failed: ${r.error}`
  // QEMU bytes and xbzrle bytes: the source reads QEMU's stream, the destination writes it.
  const [qemu, xbz] = role === 'source' ? [r.forwardIn, r.forwardOut] : [r.forwardOut, r.forwardIn]
  const ratio = xbz > 0 ? qemu / xbz : 0
  return (
    `xbzrle proxy ${role}: migration ${r.id} done: QEMU ${mb(qemu)}, xbzrle ${mb(xbz)} (ratio ${ratio.toFixed(2)}), ` +
    `return path ${r.returnPath} B, ${(r.durationMs / 1000).toFixed(1)} s` +
    (r.qemuSha256 ? `, sha256 ${r.qemuSha256.slice(0, 16)}` : '')
  )
}

/** A session between `begin` and its result. */
export interface PendingSession {
  readonly id: number
  settle(r: ProxySessionResult): void
  /** What aborting the session does right now (destroy its sockets); replaced as the session progresses. */
  setAbort(f: (why: string) => void): void
}

export class SessionRegistry {
  readonly counters: ProxyCounters = zeroProxyCounters()
  readonly sessions: ProxySessionResult[] = []
  closed = false
  private active: { abort: (why: string) => void; result: Promise<ProxySessionResult> } | undefined
  private waiters: ((r: ProxySessionResult) => void)[] = []
  private byId = new Map<number, ((r: ProxySessionResult) => void)[]>()

  constructor(
    readonly role: ProxyRole,
    private readonly hooks: {
      log?: (line: string) => void
      onSession?: (r: ProxySessionResult) => void
      onRefused?: (reason: ProxyRefusal) => void
    },
  ) {}

  get busy(): boolean {
    return this.active !== undefined
  }

  log(line: string): void {
    this.hooks.log?.(line)
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

  /** Takes the slot for a session that is being set up (so that a second connection is refused meanwhile). */
  begin(): PendingSession {
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
      this.hooks.onSession?.(r)
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

  /** A connection while a migration runs: counted, logged, and (when given) destroyed. */
  refuseBusy(what: string, conn?: Duplex): void {
    this.counters.refused++
    this.hooks.onRefused?.('BUSY')
    this.log(`xbzrle proxy ${this.role}: refused ${what}: a migration is already running (one at a time)`)
    conn?.destroy()
  }

  /** A transport connection dropped before a session (destination); `reason` from a small fixed set. */
  dropUnauthenticated(peer: string, reason: ProxyRefusal, why: string): void {
    this.counters.unauthenticated++
    this.hooks.onRefused?.(reason)
    this.log(`xbzrle proxy ${this.role}: dropped ${peer}: ${why}`)
  }

  /** Refused without a log line (e.g. too many connections waiting for their handshake). */
  refusedQuietly(reason: ProxyRefusal): void {
    this.hooks.onRefused?.(reason)
  }

  abortActive(why: string): Promise<void> {
    const a = this.active
    if (!a) return Promise.resolve()
    a.abort(why)
    return a.result.then(() => undefined)
  }
}
