/**
 * One migration's relay: the forward stream goes `from → filter → to` (source: QEMU → encoder → transport;
 * destination: transport → decoder → QEMU) and the return path goes `to → from` raw. States:
 *
 * ```
 * Relaying ──forward delivered──▶ ForwardDone ──return path delivered──▶ Closed (ok)
 *     └─────return path delivered──▶ ReturnDone ──forward delivered──────▶ Closed (ok)
 * any state ──error, early close, idle or half-close timeout, abort──────▶ Closed (failed)
 * ```
 *
 * "Delivered" = the receiving side's writable finished (every byte handed over and its end sent).
 */
import { createHash } from 'node:crypto'
import type { Duplex, Transform } from 'node:stream'
import { ReturnPathWatcher } from './return-path.js'
import type { ProxyCounters, ProxySessionResult } from './sessions.js'

export enum RelayState {
  /** Both directions flowing. */
  Relaying = 'relaying',
  /** The forward stream is delivered; the return path is still open. */
  ForwardDone = 'forward-done',
  /** The return path is delivered; the forward stream is still flowing. */
  ReturnDone = 'return-done',
  /** Over (complete or failed): every stream destroyed, the result settled. */
  Closed = 'closed',
}

export interface RelayEnds {
  /** The side the forward stream comes from (source: QEMU; destination: transport). */
  from: Duplex
  /** The side the forward stream goes to (source: transport; destination: QEMU). */
  to: Duplex
  fromName: string
  toName: string
  /** EncodeStream (source) or DecodeStream (destination). */
  filter: Transform
  /** A stage before the filter (the destination's BaseGate): holds the stream until the decoder has its base. */
  gate?: Transform
  /** Which side is QEMU (for the digest: the QEMU stream is `from`'s input or `filter`'s output). */
  qemuIs: 'from' | 'to'
}

export interface RelayOptions {
  /** Fail when no byte moved in either direction for this long (0 = never). */
  idleTimeoutMs: number
  /** Once the return path ended, the forward stream must end within this time (0 = no limit). */
  halfCloseTimeoutMs: number
  /** SHA-256 of the QEMU stream (ProxySessionResult.qemuSha256). */
  digest: boolean
}

const PEER_GONE = new Set(['EPIPE', 'ECONNRESET', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED'])

export function oneLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e)
  return m.replace(/\s+/g, ' ').trim()
}

export class Relay {
  state = RelayState.Relaying
  /** Resolves (never rejects) once Closed. */
  readonly result: Promise<ProxySessionResult>
  private settle!: (r: ProxySessionResult) => void
  private readonly t0 = Date.now()
  private forwardIn = 0
  private forwardOut = 0
  /** Forward bytes whose write into `to` completed without error (handed to the kernel, for a socket). */
  private forwardAccepted = 0
  private returnPath = 0
  private lastActivity = Date.now()
  private idleTimer: NodeJS.Timeout | undefined
  private halfCloseTimer: NodeJS.Timeout | undefined
  private readonly hash
  private readonly watcher = new ReturnPathWatcher()

  constructor(
    readonly id: number,
    private readonly ends: RelayEnds,
    private readonly counters: ProxyCounters,
    private readonly o: RelayOptions,
  ) {
    this.result = new Promise((r) => {
      this.settle = r
    })
    this.hash = o.digest ? createHash('sha256') : undefined
    this.wireForward()
    this.wireReturnPath()
    this.wireErrors()
    if (o.idleTimeoutMs > 0) {
      this.idleTimer = setInterval(
        () => {
          if (Date.now() - this.lastActivity > o.idleTimeoutMs)
            this.fail(`no data in either direction for ${o.idleTimeoutMs} ms`)
        },
        Math.min(1000, o.idleTimeoutMs),
      )
      this.idleTimer.unref()
    }
  }

  /** Ends the relay as failed with a one-line reason (no-op once Closed). */
  fail(why: string): void {
    this.close(why)
  }

  private wireForward(): void {
    const { from, to, filter, gate, qemuIs } = this.ends
    from.on('data', (c: Buffer) => {
      if (qemuIs === 'from') this.hash?.update(c)
      this.forwardIn += c.length
      this.counters.forwardIn += c.length
      this.lastActivity = Date.now()
    })
    filter.on('data', (c: Buffer) => {
      if (qemuIs === 'to') this.hash?.update(c)
      this.forwardOut += c.length
      this.counters.forwardOut += c.length
    })
    this.countAcceptedWrites(to)
    if (gate) from.pipe(gate).pipe(filter).pipe(to)
    else from.pipe(filter).pipe(to)
    to.on('finish', () => this.delivered('forward'))
  }

  /**
   * Counts the forward bytes `to` really accepted. pipe() writes without a callback, and a peer that closes early
   * makes a write fail (EPIPE) after the filter has already handed everything over: the bytes of that write are
   * lost. Only a write that completed counts, so an early close is told apart from an EPIPE on our FIN alone.
   */
  private countAcceptedWrites(to: Duplex): void {
    const write = to.write.bind(to) as (chunk: unknown, encoding?: unknown, cb?: unknown) => boolean
    to.write = ((chunk: Buffer, encoding?: unknown, cb?: unknown) => {
      const done = typeof encoding === 'function' ? encoding : cb
      return write(chunk, typeof encoding === 'function' ? undefined : encoding, (e?: Error | null) => {
        if (!e) this.forwardAccepted += chunk.length
        if (typeof done === 'function') done(e)
      })
    }) as Duplex['write']
  }

  private wireReturnPath(): void {
    const { from, to, fromName, toName } = this.ends
    to.on('data', (c: Buffer) => {
      this.watcher.push(c)
      this.returnPath += c.length
      this.counters.returnPath += c.length
      this.lastActivity = Date.now()
    })
    to.pipe(from)
    from.on('finish', () => this.delivered('return'))
    to.on('end', () => {
      const { halfCloseTimeoutMs } = this.o
      const forwardOpen = this.state === RelayState.Relaying || this.state === RelayState.ReturnDone
      if (!forwardOpen || halfCloseTimeoutMs <= 0) return
      this.halfCloseTimer = setTimeout(
        () =>
          this.fail(
            `${toName} closed the return path but ${fromName} did not end its stream within ${halfCloseTimeoutMs} ms`,
          ),
        halfCloseTimeoutMs,
      )
    })
  }

  private wireErrors(): void {
    const { from, to, fromName, toName, filter } = this.ends
    // A peer that already sent EOF may refuse our last bytes / our FIN (EPIPE): harmless once everything that
    // direction carries has been handed over (upstream ended).
    const onSocketError =
      (side: Duplex, name: string, direction: 'forward' | 'return', allHandedOver: () => boolean) =>
      (e: Error) => {
        const code = (e as NodeJS.ErrnoException).code ?? ''
        if (PEER_GONE.has(code) && side.readableEnded && allHandedOver()) this.delivered(direction)
        else if (PEER_GONE.has(code) && direction === 'forward' && filter.readableEnded)
          this.fail(
            `${name} closed the connection before it took the whole stream (${this.forwardAccepted} of ${this.forwardOut} bytes)`,
          )
        else this.fail(`${name}: ${oneLine(e)}`)
      }
    from.on(
      'error',
      onSocketError(from, fromName, 'return', () => to.readableEnded),
    )
    to.on(
      'error',
      onSocketError(
        to,
        toName,
        'forward',
        () => filter.readableEnded && this.forwardAccepted === this.forwardOut,
      ),
    )
    filter.on('error', (e) => this.fail(oneLine(e)))
    this.ends.gate?.on('error', (e) => this.fail(oneLine(e)))
    const onClose = (side: Duplex, name: string, direction: 'forward' | 'return') => () => {
      if (this.state === RelayState.Closed) return
      if (side.readableEnded && (this.isDelivered(direction) || side.writableFinished)) return
      this.fail(`${name} closed the connection before the end of the migration`)
    }
    from.on('close', onClose(from, fromName, 'return'))
    to.on('close', onClose(to, toName, 'forward'))
  }

  private isDelivered(direction: 'forward' | 'return'): boolean {
    return direction === 'forward'
      ? this.state === RelayState.ForwardDone
      : this.state === RelayState.ReturnDone
  }

  /** One direction is delivered: the state moves on; the second one closes the relay. */
  private delivered(direction: 'forward' | 'return'): void {
    const s = this.state
    if (s === RelayState.Closed || this.isDelivered(direction)) return
    if (s === RelayState.Relaying)
      this.state = direction === 'forward' ? RelayState.ForwardDone : RelayState.ReturnDone
    else this.close()
  }

  private close(error?: string): void {
    if (this.state === RelayState.Closed) return
    this.state = RelayState.Closed
    error ??= this.watcher.verdict()
    if (this.idleTimer) clearInterval(this.idleTimer)
    if (this.halfCloseTimer) clearTimeout(this.halfCloseTimer)
    const { from, to, filter } = this.ends
    from.destroy()
    to.destroy()
    this.ends.gate?.destroy()
    filter.destroy()
    const r: ProxySessionResult = {
      id: this.id,
      ok: error === undefined,
      forwardIn: this.forwardIn,
      forwardOut: this.forwardOut,
      returnPath: this.returnPath,
      durationMs: Date.now() - this.t0,
    }
    if (error !== undefined) r.error = error
    if (this.hash) r.qemuSha256 = this.hash.digest('hex')
    this.settle(r)
  }
}
