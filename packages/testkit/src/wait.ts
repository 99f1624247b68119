/** Polling helpers shared by tests, the harness and the benchmarks. */

/** Resolve after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise<void>((r) => setTimeout(r, ms))

export interface WaitForOptions {
  /** Give up after this long. Default 15000 ms. */
  timeoutMs?: number
  /** Pause between two calls of the condition. Default 50 ms. */
  intervalMs?: number
}

/**
 * Call `cond` (sync or async) until it returns a truthy value and return that value. `what` names the awaited
 * thing in the timeout error (`timed out after N ms waiting for <what>`); a function is called only then, so
 * it can add context such as a log tail. An exception thrown by `cond` ends the wait at once and propagates.
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  what: string | (() => string | Promise<string>),
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 15_000
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await cond()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) {
      const label = typeof what === 'string' ? what : await what()
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${label}`)
    }
    await sleep(options.intervalMs ?? 50)
  }
}
