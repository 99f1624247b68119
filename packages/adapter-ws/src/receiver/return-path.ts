/**
 * Return path (receiver → sender): the pipeline writes into a PassThrough; this drains it into the session's
 * channel as far as the window allows. While no connection is attached it still fills the window, so bytes are
 * ready to go the moment the sender resumes.
 */
import type { PassThrough } from 'node:stream'
import type { ReliableChannel } from '../channel.js'

const draining = new WeakSet<PassThrough>()

export function pumpReturnPath(
  returnPath: PassThrough,
  channel: ReliableChannel,
  limits: { readonly windowBytes: number; readonly maxMsg: number },
): void {
  // channel.send() may call back into us (onWritable): one drain loop at a time
  if (draining.has(returnPath)) return
  draining.add(returnPath)
  try {
    while (channel.canSend || (!channel.attached && channel.unackedBytes < limits.windowBytes)) {
      if (channel.outEnded) break
      const parts: Buffer[] = []
      let n = 0
      while (n < limits.maxMsg) {
        const c: Buffer | null = returnPath.read()
        if (c === null) break
        parts.push(c)
        n += c.length
      }
      if (n === 0) break
      channel.send(parts)
    }
  } finally {
    draining.delete(returnPath)
  }
}
