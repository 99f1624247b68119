/** The sender's public types (re-exported by `sender.ts` and the package index). */
import type { Readable } from 'node:stream'
import type { StreamHeaderJson } from '@xbzrle/protocol'
import type { BaseOffer } from '../messages.js'
import type { TokenBucket } from '../rate.js'

export interface ReconnectPolicy {
  /** First delay after a lost connection (default 100 ms). */
  initialDelayMs?: number
  /** Largest delay between attempts (default 5000 ms). */
  maxDelayMs?: number
  /** Give up when the connection could not be re-established for this long (default 30 000 ms). */
  timeLimitMs?: number
  /** Random fraction taken off each delay, 0–1 (default 0.5). */
  jitter?: number
}

export interface SenderOptions {
  /** Shared secret, sent as `Authorization: Bearer …` (never logged). */
  token?: string
  /** Also put the token into the hello message (for peers that cannot read headers). Default false. */
  tokenInHello?: boolean
  /** CA certificate(s) trusted for wss:// (e.g. the receiver's self-signed certificate). */
  ca?: string | Buffer | Array<string | Buffer>
  /** Verify the receiver's certificate (default true). */
  rejectUnauthorized?: boolean
  /** Migration id (default: random). `[A-Za-z0-9._-]{1,128}`, not starting with a dot. */
  migrationId?: string
  /** Stream parameters declared in the hello; the receiver sizes its memory budget from `cache.cacheBytes`. */
  header?: StreamHeaderJson
  /**
   * The base image the sender can encode against (issue #15), offered in the hello; the `connected` event says
   * which base the receiver holds, and the caller encodes against ours only if it is the same.
   */
  base?: BaseOffer
  /** Versions offered (default: SUPPORTED_VERSIONS). */
  versions?: readonly number[]
  /** Largest payload per binary message (default 1 MiB; lowered to what the receiver accepts). */
  maxMessageBytes?: number
  /** Unacked bytes allowed in flight = retransmit buffer size (default 8 MiB). */
  windowBytes?: number
  /** Stop reading the source while the socket buffers this much (default 4 MiB). */
  highWaterBytes?: number
  /** Rate limit in bytes/s (token bucket; default none). Applies to first transmissions. */
  maxRate?: number
  /** Token bucket size in bytes (default max(maxMessageBytes, maxRate / 10)). */
  rateBurstBytes?: number
  /** Reconnect policy, or false to fail on the first lost connection. */
  reconnect?: ReconnectPolicy | false
  /** Time allowed from connect to welcome (default 10 000 ms). */
  handshakeTimeoutMs?: number
  /** Ping interval; the connection is dropped (and resumed) after 3 missed intervals. 0 = off. Default 10 000 ms. */
  pingIntervalMs?: number
  /** Skip WebSocket masking (zero mask). Only between trusted Node peers. Default false. */
  zeroMask?: boolean
  /** Extra HTTP headers for the upgrade request. */
  headers?: Record<string, string>
  /** Aborts the transfer. */
  signal?: AbortSignal
  /** Progress and connection events (for logs; contains no secret). */
  onEvent?: (event: SenderEvent) => void
}

export type SenderEvent =
  /** `base`: the base image the receiver holds, when it holds one. */
  | { type: 'connected'; attempt: number; resumeFromSeq: number; version: number; base?: BaseOffer }
  | { type: 'disconnected'; code: number; reason: string }
  | { type: 'reconnecting'; attempt: number; delayMs: number }
  | { type: 'ack'; seq: number; bytes: number }
  /** E.g. a token about to travel over ws:// (cleartext) to a non-loopback host. Emitted once, no secret in it. */
  | { type: 'warning'; message: string }

export interface SendResult {
  migrationId: string
  version: number
  /** Payload bytes sent (= bytes read from the source). */
  bytes: number
  /** Bytes the receiver reports as delivered to its pipeline. */
  receiverBytes: number
  messages: number
  reconnects: number
  retransmits: number
}

export interface Sender {
  readonly migrationId: string
  /** Resolves after the receiver's final ack; rejects with a one-line error. */
  readonly done: Promise<SendResult>
  /**
   * Bytes the receiver side writes to its return path. Created on first access; if never accessed, return-path
   * bytes are discarded. Reading it slowly slows the receiver's return-path writer (not the main stream).
   */
  readonly returnPath: Readable
  /** The rate limiter, if `maxRate` was set. */
  readonly rateLimiter: TokenBucket | undefined
  abort(reason?: string): void
}

export class SendError extends Error {
  override name = 'SendError'
  constructor(
    message: string,
    readonly closeCode?: number,
    readonly refuseCode?: string,
  ) {
    super(message)
  }
}
