/**
 * How fast the output side of a filter drains, measured from its backlog (bytes produced but not yet taken by
 * the consumer: a pipe, a socket, a WebSocket send queue). While there is a backlog, the bytes taken per unit of
 * time are the link's rate. While there is none, the link took everything: the rate is at least what was
 * produced, so the estimate only rises then. With no backlog ever seen, the link is not the limit (undefined).
 *
 * The rate sizes the in-flight budget (a few tens of ms of link time, not a fixed number of bytes: QEMU's
 * downtime estimate counts whatever the filter accepted as sent) and feeds the adaptive second stage.
 */

/** Time window over which one rate sample is taken. */
const WINDOW_NS = 50e6
/** Weight of a new sample. */
const EWMA = 0.5

export class DrainMeter {
  private produced = 0
  private lastT: number | undefined
  private lastTaken = 0
  private lastBacklog = 0
  /** Bytes taken and time, summed until a window is full: while backlogged, and while not. */
  private readonly busy = { bytes: 0, ns: 0 }
  private readonly free = { bytes: 0, ns: 0 }
  private estimate: number | undefined

  /** Bytes/s the output drains, or undefined while it has never held a backlog. */
  get rate(): number | undefined {
    return this.estimate
  }

  /** The filter produced `bytes` more output. */
  produce(bytes: number): void {
    this.produced += bytes
  }

  /** The output holds `backlog` bytes not yet taken, at time `now` (ns, monotonic). */
  sample(now: number, backlog: number): void {
    const taken = this.produced - backlog
    if (this.lastT !== undefined) {
      const dt = now - this.lastT
      const bytes = taken - this.lastTaken
      const backlogged = this.lastBacklog > 0
      const w = backlogged ? this.busy : this.free
      w.bytes += bytes
      w.ns += dt
      if (w.ns >= WINDOW_NS) {
        this.take(w.bytes, w.ns, !backlogged)
        w.bytes = 0
        w.ns = 0
      }
    }
    this.lastT = now
    this.lastTaken = taken
    this.lastBacklog = backlog
  }

  /** A rate sample: exact while backlogged, a lower bound when the link kept up (then it only raises). */
  private take(bytes: number, ns: number, lowerBound: boolean): void {
    const r = (bytes * 1e9) / ns
    if (lowerBound) {
      if (this.estimate !== undefined && r > this.estimate) this.estimate = r
      return // no backlog ever: the link is not the limit, the rate stays unknown
    }
    this.estimate = this.estimate === undefined ? r : this.estimate + EWMA * (r - this.estimate)
  }
}

/** In-flight time budget: what the output may hold, in link time. */
export const IN_FLIGHT_MS = 30
/** The smallest in-flight budget in bytes (below this, per-batch overhead dominates). */
export const MIN_IN_FLIGHT = 64 * 1024

/** Bytes the output may hold for `rate` (bytes/s; undefined: not link-bound, `fallback`). */
export function inFlightBudget(rate: number | undefined, fallback: number): number {
  if (rate === undefined) return fallback
  return Math.max(MIN_IN_FLIGHT, Math.round((rate * IN_FLIGHT_MS) / 1000))
}
