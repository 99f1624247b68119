/** ReceiverOptions with every default applied, resolved once so the parts below never repeat a default. */
import { SUPPORTED_VERSIONS } from '@xbzrle/protocol'
import { HEADER_BYTES } from '../frame.js'
import type { WsHello } from '../messages.js'
import { MiB } from '../util.js'
import type { ReceiverOptions } from './types.js'

export interface ReceiverConfig {
  readonly token: string | undefined
  readonly versions: readonly number[]
  /** Largest data payload per message. */
  readonly maxMsg: number
  readonly maxControl: number
  readonly maxConnections: number
  readonly maxPreAuth: number
  readonly maxSessions: number
  readonly preAuthTimeoutMs: number
  readonly idleTimeoutMs: number
  /** How long a disconnected session (and, after it ended, its outcome) waits for a resume. */
  readonly graceMs: number
  readonly memoryCap: number
  readonly maxSessionBytes: number
  readonly windowBytes: number
  readonly ackEveryBytes: number
  readonly ackDelayMs: number
  readonly estimate: (hello: WsHello) => number
  readonly pathPrefix: string
  readonly base: ReceiverOptions['base']
}

export function resolveConfig(options: ReceiverOptions): ReceiverConfig {
  const maxMsg = options.maxMessageBytes ?? MiB
  const windowBytes = options.windowBytes ?? 4 * MiB
  return {
    token: options.token,
    versions: options.versions ?? SUPPORTED_VERSIONS,
    maxMsg,
    maxControl: options.maxControlBytes ?? 16 * 1024,
    maxConnections: options.maxConnections ?? 256,
    // at least one, or every new connection would evict itself
    maxPreAuth: Math.max(1, options.maxPreAuthConnections ?? 64),
    maxSessions: options.maxSessions ?? 32,
    preAuthTimeoutMs: options.preAuthTimeoutMs ?? options.handshakeTimeoutMs ?? 3000,
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    graceMs: options.resumeGraceMs ?? 30_000,
    memoryCap: options.memoryCapBytes ?? 1024 * MiB,
    maxSessionBytes: options.maxSessionBytes ?? 512 * MiB,
    windowBytes,
    ackEveryBytes: options.ackEveryBytes ?? MiB,
    ackDelayMs: options.ackDelayMs ?? 20,
    estimate:
      options.estimateSessionBytes ??
      ((h) => (h.header?.cache.cacheBytes ?? 0) + 2 * windowBytes + 4 * (maxMsg + HEADER_BYTES)),
    pathPrefix: options.pathPrefix ?? '/',
    base: options.base,
  }
}
