/** Token bucket for `maxRate` (bytes/s). `take(n)` waits until n tokens are available, then spends them. */
export class TokenBucket {
  readonly rate: number
  readonly capacity: number
  private tokens: number
  private last: number
  private readonly now: () => number

  constructor(rate: number, capacity: number, now: () => number = () => performance.now()) {
    if (!(rate > 0)) throw new RangeError(`maxRate must be > 0, got ${rate}`)
    this.rate = rate
    this.capacity = Math.max(1, capacity)
    this.now = now
    this.last = now()
    this.tokens = this.capacity
  }

  private refill(): void {
    const t = this.now()
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.rate)
    this.last = t
  }

  /** Milliseconds to wait before `n` bytes may be sent (0 = now). n is clamped to the capacity. */
  delayFor(n: number): number {
    this.refill()
    const need = Math.min(n, this.capacity)
    return this.tokens >= need ? 0 : Math.ceil(((need - this.tokens) / this.rate) * 1000)
  }

  /** Spends n bytes' worth of tokens; n larger than the capacity spends the whole bucket (and the deficit). */
  async take(n: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const d = this.delayFor(n)
      if (d === 0) break
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(done, d)
        function done() {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        }
        function onAbort() {
          clearTimeout(t)
          reject(signal?.reason ?? new Error('aborted'))
        }
        signal?.addEventListener('abort', onAbort, { once: true })
      })
      if (signal?.aborted) throw signal.reason
    }
    this.tokens -= n
  }
}
