/**
 * Connections that have not authenticated yet (TCP accept → hello with a valid token). They are the cheap ones for
 * an attacker to open, so they get their own limit and deadline; the decisions are pure functions below, the
 * bookkeeping (sockets, timers) is the tracker.
 */
import type { Socket } from 'node:net'

/** An unauthenticated connection. */
export interface PreAuth {
  readonly socket: Socket
  /** Reached the HTTP upgrade (a real client does at once; idle sockets never do): evicted last. */
  upgraded: boolean
  timer: NodeJS.Timeout
  /** Called at the deadline instead of destroying the socket (set once the WebSocket exists). */
  onTimeout?: () => void
}

export interface AcceptLimits {
  readonly maxPreAuth: number
  readonly maxConnections: number
}

/**
 * What to do with a new TCP connection: when the pre-auth slots are full, evict one of those first (so a flood of
 * silent sockets costs the attacker fresh connections, and a real sender, which authenticates within a round trip,
 * gets in); then accept it if the overall connection limit allows.
 */
export function acceptConnection(
  now: { closing: boolean; preAuth: number; connections: number },
  limits: AcceptLimits,
): { evict: boolean; accept: boolean } {
  if (now.closing) return { evict: false, accept: false }
  // the evicted socket still counts here: it leaves the connection count only when its close event comes
  return { evict: now.preAuth >= limits.maxPreAuth, accept: now.connections < limits.maxConnections }
}

/** The oldest connection that never reached the HTTP upgrade, else the oldest one (`records` oldest first). */
export function pickVictim<T extends { readonly upgraded: boolean }>(records: Iterable<T>): T | undefined {
  let victim: T | undefined
  for (const r of records) {
    if (!r.upgraded) return r
    victim ??= r
  }
  return victim
}

export class PreAuthTracker {
  /** By raw socket, oldest first (Map keeps insertion order). */
  private readonly records = new Map<Socket, PreAuth>()
  /** Raw or TLS socket → its record. */
  private readonly bySocket = new WeakMap<Socket, PreAuth>()

  constructor(private readonly timeoutMs: number) {}

  get size(): number {
    return this.records.size
  }

  /** Starts the deadline: TLS handshake, HTTP upgrade and an authenticated hello must all finish before it. */
  track(socket: Socket): PreAuth {
    const rec: PreAuth = {
      socket,
      upgraded: false,
      timer: setTimeout(() => {
        this.drop(rec)
        if (rec.onTimeout) rec.onTimeout()
        else socket.destroy()
      }, this.timeoutMs),
    }
    this.records.set(socket, rec)
    this.bySocket.set(socket, rec)
    socket.once('close', () => this.drop(rec))
    return rec
  }

  get(socket: Socket): PreAuth | undefined {
    return this.bySocket.get(socket)
  }

  /** The upgrade arrives on the TLS socket: let it find the raw socket's record. */
  link(tlsSocket: Socket, raw: Socket | undefined): void {
    const rec = raw ? this.bySocket.get(raw) : undefined
    if (rec) this.bySocket.set(tlsSocket, rec)
  }

  /** Authenticated or closed: no longer counted, no deadline. */
  drop(rec: PreAuth): void {
    clearTimeout(rec.timer)
    this.records.delete(rec.socket)
  }

  evictOne(): void {
    const victim = pickVictim(this.records.values())
    if (!victim) return
    this.drop(victim)
    victim.socket.destroy()
  }

  clear(): void {
    for (const rec of this.records.values()) clearTimeout(rec.timer)
    this.records.clear()
  }
}
