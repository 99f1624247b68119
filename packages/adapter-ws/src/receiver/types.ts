/** The receiver's public types (re-exported by `receiver.ts` and the package index). */
import type { Server as HttpServer } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { Writable } from 'node:stream'
import type { StreamHeaderJson } from '@xbzrle/protocol'
import type { BaseOffer, WsHello } from '../messages.js'

/** What the pipeline factory learns about a migration. */
export interface SessionInfo {
  readonly migrationId: string
  /** Negotiated format version. */
  readonly version: number
  /** Stream parameters declared by the sender, if any. */
  readonly header: StreamHeaderJson | undefined
  /** The base image the sender holds (hello.base, issue #15), if it offered one. */
  readonly base?: BaseOffer
  /** URL path of the connection that created the session. */
  readonly path: string
  readonly remoteAddress: string | undefined
  /** Memory budget reserved for this session (bytes). */
  readonly memoryBytes: number
  /** Bytes written here travel back to the sender (`Sender.returnPath`), reliably and across reconnects. */
  readonly returnPath: Writable
  /** Aborted when the session is torn down (failure, expiry, receiver close). */
  readonly signal: AbortSignal
}

/**
 * The pipeline factory's result: a Writable that receives the stream bytes in order (it is ended at end of stream),
 * and optionally a `done` promise that settles when everything downstream finished (e.g. the decoder's output was
 * flushed). Without `done`, the Writable finishing is the end. A rejection of `done` or an error on the Writable
 * aborts the session and is reported to the sender as a PIPELINE_ERROR refusal.
 */
export type Pipeline = Writable | { writable: Writable; done?: Promise<unknown> }
export type PipelineFactory = (session: SessionInfo) => Pipeline | Promise<Pipeline>

export interface ReceiverOptions {
  createPipeline: PipelineFactory
  /**
   * The base image this receiver holds (issue #15), named in every welcome: a sender that offered the same base
   * encodes against it, any other sender sends without a base.
   */
  base?: BaseOffer
  /** Shared secret expected as `Authorization: Bearer …` or `hello.token`. */
  token?: string
  /** Allow listening on a non-loopback address without a token. Default false. */
  allowInsecureNoToken?: boolean
  /** TLS: serve wss:// with this certificate and key. */
  tls?: { cert: string | Buffer; key: string | Buffer }
  /** Attach to an existing http(s) server instead of creating one (listen() is then not used). */
  server?: HttpServer | HttpsServer
  /** Only accept upgrades whose path starts with this (default '/'). */
  pathPrefix?: string
  versions?: readonly number[]
  /** Largest data payload per message (default 1 MiB); larger messages are closed with 1009. */
  maxMessageBytes?: number
  /** Largest control (JSON) message (default 16 KiB; larger → 4413). */
  maxControlBytes?: number
  /** Concurrent TCP connections, authenticated or not (default 256); more are dropped at accept. */
  maxConnections?: number
  /**
   * Concurrent connections that have not yet presented a valid token in their hello (default 64). When full, a new
   * connection evicts the oldest unauthenticated one (idle TCP first), so idle sockets cannot lock out a sender.
   */
  maxPreAuthConnections?: number
  /** Concurrent sessions (default 32). */
  maxSessions?: number
  /** Time from TCP accept to an authenticated hello: TLS, HTTP upgrade and hello (default 3000 ms). */
  preAuthTimeoutMs?: number
  /** Older name of `preAuthTimeoutMs` (used when that is not set). */
  handshakeTimeoutMs?: number
  /** Close a connection without traffic for this long (default 60 000 ms; not while we pause it). */
  idleTimeoutMs?: number
  /** Keep a disconnected session (and its pipeline) for this long, waiting for a resume (default 30 000 ms). */
  resumeGraceMs?: number
  /** Global memory cap over all session budgets (default 1 GiB). */
  memoryCapBytes?: number
  /** Largest budget one session may need (default 512 MiB). */
  maxSessionBytes?: number
  /** Memory budget of a session from its hello. Default: header cache size + 2 × window + 4 messages. */
  estimateSessionBytes?: (hello: WsHello) => number
  /** Return-path window (default 4 MiB). */
  windowBytes?: number
  /** Ack at least every this many bytes (default 1 MiB). */
  ackEveryBytes?: number
  /** Ack after this delay at the latest (default 20 ms). */
  ackDelayMs?: number
  /** Log hook (contains no secret). */
  onEvent?: (event: ReceiverEvent) => void
}

export type ReceiverEvent =
  | { type: 'session-start'; migrationId: string; version: number; memoryBytes: number }
  | { type: 'session-resume'; migrationId: string; fromSeq: number }
  | { type: 'session-end'; migrationId: string; bytes: number }
  | { type: 'session-error'; migrationId: string; message: string }
  | { type: 'refused'; code: number; name: string; message: string; remoteAddress: string | undefined }
  | { type: 'warning'; message: string }

export interface SessionSnapshot {
  migrationId: string
  state: 'active' | 'ending' | 'finished' | 'failed'
  connected: boolean
  bytes: number
  memoryBytes: number
  path: string
  remoteAddress: string | undefined
}

export interface Receiver {
  /** Starts listening (not with `server`). Refuses a non-loopback host without a token unless allowed. */
  listen(host?: string, port?: number): Promise<AddressInfo>
  /** Closes every connection and session and the server (an attached server is left open). */
  close(): Promise<void>
  readonly address: AddressInfo | null
  readonly sessions: SessionSnapshot[]
  /** Memory reserved by the live sessions. */
  readonly memoryInUse: number
  /** Open TCP connections. */
  readonly connections: number
  readonly server: HttpServer | HttpsServer
}
