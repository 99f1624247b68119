import { connect, type Socket } from 'node:net'
import { sleep } from './wait.js'

/** An asynchronous QMP event. */
export interface QmpEvent {
  event: string
  data?: Record<string, unknown>
  timestamp?: { seconds: number; microseconds: number }
}

/** A QMP command that returned an error. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`)
    this.name = 'QmpError'
  }
}

interface Pending {
  command: string
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

interface EventWaiter {
  name: string
  match: ((e: QmpEvent) => boolean) | undefined
  resolve: (e: QmpEvent) => void
}

/**
 * Minimal QMP client over a unix socket: greeting + qmp_capabilities, id-matched commands with timeouts,
 * buffered async events.
 */
export class QmpClient {
  /** Every event received so far, in order. */
  readonly events: QmpEvent[] = []
  greeting: unknown
  private buf = ''
  private nextId = 1
  private readonly pending = new Map<string, Pending>()
  private readonly waiters = new Set<EventWaiter>()
  private closedError: Error | undefined
  private greetingResolve: ((v: unknown) => void) | undefined

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => this.onData(chunk))
    socket.on('error', (err) => this.fail(new Error(`QMP socket error: ${err.message}`)))
    socket.on('close', () => this.fail(new Error('QMP connection closed')))
  }

  /**
   * Connect to a QMP unix socket, retrying until it exists (QEMU creates it during startup).
   * `alive` is polled between attempts so a QEMU that died is reported at once.
   */
  static async connect(
    path: string,
    options: { timeoutMs?: number; alive?: () => string | undefined } = {},
  ): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? 15_000)
    for (;;) {
      const dead = options.alive?.()
      if (dead) throw new Error(dead)
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path)
          s.once('connect', () => {
            s.removeListener('error', reject)
            resolve(s)
          })
          s.once('error', reject)
        })
        const client = new QmpClient(socket)
        await client.handshake(Math.max(1000, deadline - Date.now()))
        return client
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        if ((code === 'ENOENT' || code === 'ECONNREFUSED') && Date.now() < deadline) {
          await sleep(25)
          continue
        }
        throw e
      }
    }
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeting = new Promise<unknown>((resolve) => {
      this.greetingResolve = resolve
    })
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('QMP greeting timed out')), timeoutMs)
    })
    try {
      this.greeting = await Promise.race([greeting, timeout])
    } finally {
      clearTimeout(timer)
    }
    await this.execute('qmp_capabilities', undefined, timeoutMs)
  }

  private onData(chunk: string): void {
    this.buf += chunk
    for (;;) {
      const nl = this.buf.indexOf('\n')
      if (nl < 0) break
      const line = this.buf.slice(0, nl).trim()
      this.buf = this.buf.slice(nl + 1)
      if (line) this.onMessage(line)
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>
    try {
      msg = JSON.parse(line) as Record<string, unknown>
    } catch {
      return
    }
    if ('QMP' in msg) {
      this.greetingResolve?.(msg.QMP)
      this.greetingResolve = undefined
      return
    }
    if (typeof msg.event === 'string') {
      const ev = msg as unknown as QmpEvent
      this.events.push(ev)
      for (const w of [...this.waiters]) {
        if (w.name === ev.event && (!w.match || w.match(ev))) {
          this.waiters.delete(w)
          w.resolve(ev)
        }
      }
      return
    }
    const id = msg.id === undefined ? undefined : String(msg.id)
    if (id === undefined) return
    const p = this.pending.get(id)
    if (!p) return
    this.pending.delete(id)
    clearTimeout(p.timer)
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string }
      p.reject(new QmpError(p.command, err.class ?? 'GenericError', err.desc ?? JSON.stringify(err)))
    } else {
      p.resolve(msg.return)
    }
  }

  private fail(err: Error): void {
    if (this.closedError) return
    this.closedError = err
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(new Error(`${err.message} (while waiting for ${p.command})`))
    }
    this.pending.clear()
  }

  /** True once the connection is closed or broken. */
  get closed(): boolean {
    return this.closedError !== undefined
  }

  /** Run a QMP command and return its `return` value. Rejects with QmpError on a QMP error. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closedError) return Promise.reject(new Error(`${this.closedError.message} (${command})`))
    const id = String(this.nextId++)
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`QMP ${command} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer })
      const msg: Record<string, unknown> = { execute: command, id }
      if (args !== undefined) msg.arguments = args
      this.socket.write(`${JSON.stringify(msg)}\n`)
    })
  }

  /**
   * Wait for an event. Events already received at index >= `since` (default: all buffered events) count,
   * so no event is lost between issuing a command and waiting.
   */
  waitForEvent(
    name: string,
    timeoutMs = 30_000,
    options: { since?: number; match?: (e: QmpEvent) => boolean } = {},
  ): Promise<QmpEvent> {
    const match = options.match
    for (let i = options.since ?? 0; i < this.events.length; i++) {
      const ev = this.events[i]!
      if (ev.event === name && (!match || match(ev))) return Promise.resolve(ev)
    }
    return new Promise<QmpEvent>((resolve, reject) => {
      const waiter: EventWaiter = {
        name,
        match,
        resolve: (e) => {
          clearTimeout(timer)
          resolve(e)
        },
      }
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for QMP event ${name}`))
      }, timeoutMs)
      this.waiters.add(waiter)
    })
  }

  /** Close the socket (does not stop QEMU). */
  close(): void {
    this.fail(new Error('QMP connection closed by client'))
    this.socket.destroy()
  }
}
