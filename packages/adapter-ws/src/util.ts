/** A re-armable wake-up signal: `wait()` resolves at the next `notify()`. */
export class Wakeup {
  private waiters: Array<() => void> = []
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }
  notify(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/** Truncates to at most `max` UTF-8 bytes (close reasons are limited to 123 bytes). */
export function truncateUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s
  let out = s.slice(0, max)
  while (out.length > 0 && Buffer.byteLength(`${out}…`) > max) out = out.slice(0, -1)
  return `${out}…`
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::ffff:127.0.0.1'
}

/**
 * Migration ids end up in file names (`receive -o 'dir/{id}.mig'`): only `[A-Za-z0-9._-]`, 1–128 characters, no
 * leading dot (so no `.`, `..` or hidden files), hence never a path separator or a dots-only segment.
 */
export function isSafeMigrationId(id: string): boolean {
  return /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(id)
}

export const KiB = 1024
export const MiB = 1024 * 1024
