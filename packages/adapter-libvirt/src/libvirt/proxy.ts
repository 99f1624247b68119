/**
 * Unix-socket migration proxy pair for `virsh migrate --migrateuri unix:///PATH` and plain QEMU
 * `migrate unix:PATH` / `-incoming unix:PATH`.
 *
 * ```
 * source QEMU ──unix──▶ source proxy ──(EncodeStream)──▶ transport ──(DecodeStream)──▶ destination proxy ──unix──▶ destination QEMU
 *             ◀──────────────────────── return path: raw bytes, untouched ◀───────────────────────────────
 * ```
 *
 * `startProxy({ role: 'source' | 'destination', … })` starts either half. The pieces: proxy/transport.ts (TCP or
 * TLS between the halves, or any half-closable Duplex the caller connects / accepts), proxy/unix-socket.ts (the
 * QEMU sockets), proxy-auth.ts (the transport handshake), proxy/relay.ts (one migration: forward stream through
 * the filter, return path raw; a state machine), proxy/sessions.ts (the one slot, session results, totals).
 * One migration (connection) at a time per proxy; a connection that arrives while one is active is refused.
 * Migrations one after another through the same pair work.
 */
import { createServer, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { BaseGate } from '../base/base-gate.js'
import { type EncoderBase, prepareDecoderBase } from '../base/base-image.js'
import type { DecoderOptions, XbzrleDecoder } from '../filter/decoder.js'
import type { EncoderOptions, XbzrleEncoder } from '../filter/encoder.js'
import type { PassListener } from '../filter/pass-stats.js'
import { DecodeStream, EncodeStream } from '../filter/streams.js'
import { oneLine, Relay, type RelayEnds } from './proxy/relay.js'
import {
  failedResult,
  type ProxyCounters,
  type ProxyRefusal,
  type ProxyRole,
  type ProxySessionResult,
  SessionRegistry,
} from './proxy/sessions.js'
import {
  closeServer,
  listenTcp,
  type TcpEndpoint,
  type TlsServerOptions,
  type TransportConnector,
  type TransportListener,
} from './proxy/transport.js'
import { bindUnixServer, connectUnix, unlinkIfOurs } from './proxy/unix-socket.js'
import {
  agreeOnBase,
  clientHandshake,
  HandshakeRefused,
  HandshakeStatus,
  isLoopbackHost,
  type PeerBase,
  type ProxyBaseOffer,
  serverHandshake,
} from './proxy-auth.js'

// The pieces are exported from the package index; tcpConnector also from here (callers of startProxy need it).
export { tcpConnector } from './proxy/transport.js'

export interface MigrationProxy {
  readonly role: ProxyRole
  /** Where the proxy listens (`unix:/path` or the transport's address). */
  readonly address: string
  /** Totals, updated live (also during a session). */
  readonly counters: Readonly<ProxyCounters>
  readonly busy: boolean
  /** Every finished session so far. */
  readonly sessions: readonly ProxySessionResult[]
  /** Resolves when the running session ends, or else the next one to start. */
  nextSession(): Promise<ProxySessionResult>
  /** Resolves when session `id` (1, 2, …) has ended; at once if it already has. */
  waitForSession(id: number): Promise<ProxySessionResult>
  /** Stops listening and aborts a running session (its sockets are destroyed). Idempotent. */
  close(): Promise<void>
}

/** What a caller watches of one migration (`observeSession`): passes, the filter's counters, the end. */
export interface ProxySessionObserver {
  /** Given to the session's encoder (source) or decoder (destination) as its pass listener. */
  passListener?: PassListener
  /** The session's filter, before its first byte. Not called for a session that fails before its relay. */
  attach?(filter: { encoder: XbzrleEncoder } | { decoder: XbzrleDecoder }): void
  /** The session ended (ok or not). */
  end?(result: ProxySessionResult): void
}

export interface ProxyCommonOptions {
  /** Called once per finished session (success or failure). */
  onSession?: (result: ProxySessionResult) => void
  /** Called per migration as it starts (its id); what it returns watches that migration. */
  observeSession?: (id: number) => ProxySessionObserver | undefined
  /** Called for every refused or dropped connection. */
  onRefused?: (reason: ProxyRefusal) => void
  /** One-line log messages (default: none). `formatSession` turns results into such lines. */
  log?: (line: string) => void
  /** Timeout for opening the outgoing connection (transport or QEMU socket). Default 10000 ms. */
  connectTimeoutMs?: number
  /** Abort a session when no byte moved in either direction for this long. Default 0 = never. */
  idleTimeoutMs?: number
  /** Hash the QEMU side of the stream (ProxySessionResult.qemuSha256). Costs CPU. Default false. */
  digest?: boolean
  /**
   * Once the return path has ended (destination QEMU or transport closed it), the forward direction must end
   * within this time, else the session fails. At a normal end the source QEMU closes right after it read
   * the destination's SHUT message; a destination that died leaves the source side half-open forever without
   * this. Default 30000 ms.
   */
  halfCloseTimeoutMs?: number
  /**
   * Shared secret of the pair (see proxy-auth.ts for the handshake). Destination: connections must prove they
   * know it. Source: proves it when the destination asks. Default: none.
   */
  token?: string
}

export interface SourceProxyOptions extends ProxyCommonOptions {
  /** Unix socket path the source QEMU (or libvirtd, for `--migrateuri unix://PATH`) connects to. */
  listen: string
  /** Opens the transport to the destination half for each migration. */
  connect: TransportConnector
  encoder?: EncoderOptions
  /** Mode of the socket file (default 0o660: libvirtd runs as root; QEMU started by hand may need 0o666). */
  socketMode?: number
  /**
   * A base image the destination may hold (issue #15): `offer` is named in the handshake; when the destination
   * holds the same base, `prepare()` gives the seeded encoder state for this migration (a fresh one each time:
   * a migration consumes it). Otherwise the migration runs without a base (one log line).
   */
  base?: { offer: ProxyBaseOffer; prepare: () => Promise<EncoderBase> }
}

export interface DestinationProxyOptions extends ProxyCommonOptions {
  /** Where transport connections come from: a listener, or a TCP endpoint to listen on. */
  accept?: TransportListener
  listen?: TcpEndpoint
  /** Unix socket the destination QEMU listens on (`-incoming unix:PATH` / `migrate-incoming unix:PATH`). */
  qemuSocket: string
  decoder?: DecoderOptions
  /** TLS for the `listen` TCP listener (ignored with `accept`). */
  tls?: TlsServerOptions
  /**
   * A transport connection must finish the proxy handshake (and TLS) within this time, else it is dropped; the
   * migration slot is only taken after authentication, so idle connections cannot block a migration.
   * Default 10000 ms.
   */
  handshakeTimeoutMs?: number
  /**
   * The base image this destination holds (then the bases it depends on), named in the handshake by `offer`
   * (SHA-256 of its original bytes). A stream whose header names a base is decoded against it after the base
   * was verified against the header, before a byte reaches QEMU (BaseGate); a mismatch fails the migration.
   */
  base?: { offer: ProxyBaseOffer; chain: readonly string[] }
  /** Unauthenticated connections held at once (more are dropped at once). Default 16. */
  maxPendingHandshakes?: number
  /**
   * `listen` on a non-loopback address without a `token` is refused unless this is true (anyone who can reach
   * the port could feed the destination QEMU a migration stream).
   */
  allowRemoteWithoutToken?: boolean
}

export type ProxyOptions =
  | ({ role: 'source' } & SourceProxyOptions)
  | ({ role: 'destination' } & DestinationProxyOptions)

/**
 * Starts one half of the pair. Source: listens on the unix socket `listen`; for each connection from the source
 * QEMU / libvirtd it opens the transport, encodes QEMU's stream into it and relays the return path back to QEMU
 * verbatim. Destination: takes transport connections (from `accept`, or a TCP listener on `listen`), connects to
 * the destination QEMU's unix socket, decodes the stream into it and relays QEMU's return path back verbatim.
 */
export async function startProxy(options: ProxyOptions): Promise<MigrationProxy> {
  const registry = new SessionRegistry(options.role, options)
  const door =
    options.role === 'source' ? await sourceDoor(options, registry) : await destinationDoor(options, registry)
  return {
    role: options.role,
    address: door.address,
    counters: registry.counters,
    get busy() {
      return registry.busy
    },
    sessions: registry.sessions,
    nextSession: () => registry.nextSession(),
    waitForSession: (id) => registry.waitForSession(id),
    close: async () => {
      if (registry.closed) return
      registry.closed = true
      const closing = door.close()
      await registry.abortActive('proxy closed')
      await closing
    },
  }
}

/** `startProxy({ role: 'source', ...options })`. */
export function startSourceProxy(options: SourceProxyOptions): Promise<MigrationProxy> {
  return startProxy({ ...options, role: 'source' })
}

/** `startProxy({ role: 'destination', ...options })`. */
export function startDestinationProxy(options: DestinationProxyOptions): Promise<MigrationProxy> {
  return startProxy({ ...options, role: 'destination' })
}

/** Where a half takes its migrations from (the unix socket, or the transport listener). */
interface Door {
  address: string
  /** Stops taking connections (a running session is aborted by the caller). */
  close(): Promise<void>
}

/** What differs between the halves once a migration was admitted. */
interface SessionPlan {
  /** The connection the migration came in on, paused (source: QEMU; destination: the transport). */
  inbound: Duplex
  inboundName: string
  outboundName: string
  /**
   * Opens the other end (source: transport + handshake; destination: the QEMU socket). `track` is called with
   * the connection as soon as it exists (so that an abort destroys it); it throws when the session was aborted.
   */
  open(track: (outbound: Duplex) => void): Promise<Duplex>
  /**
   * Runs after `open`, outside its time limit (seeding a base can take longer than a connect); a rejection fails
   * the session with its message.
   */
  prepare?: () => Promise<void>
  /** A limit on `open` enforced here (undefined: `open` has its own). */
  openTimeoutMs?: number
  /** The failure when `inbound` went away while `open` ran. */
  inboundGone: string
  /**
   * The filter's options: the source encodes, the destination decodes. Read after `open` resolved (the
   * handshake decides the source's base). `base` (destination): the chain a BaseGate seeds the decoder from.
   */
  filter: () => { encoder: EncoderOptions } | { decoder: DecoderOptions; base?: readonly string[] }
}

/**
 * The session's filter, with the observer's pass listener, handed to the observer before its first byte; on the
 * destination with a base, the BaseGate that seeds and verifies the decoder's base from the stream header.
 */
function makeFilter(
  f: ReturnType<SessionPlan['filter']>,
  observer: ProxySessionObserver | undefined,
  out: Duplex,
): Pick<RelayEnds, 'filter' | 'gate'> {
  const listen = observer?.passListener ? { passListener: observer.passListener } : {}
  if ('encoder' in f) {
    // A live migration: the second stage adapts to the link, and the transport's write queue is the encoder's
    // backlog, kept to ~30 ms of link in flight (streams.ts).
    const enc = new EncodeStream({
      ...f.encoder,
      compression: f.encoder.compression ?? 'auto',
      ...listen,
    }).drainsInto(out)
    observer?.attach?.({ encoder: enc.encoder })
    return { filter: enc }
  }
  const dec = new DecodeStream({ ...f.decoder, ...listen })
  observer?.attach?.({ decoder: dec.decoder })
  const chain = f.base
  if (!chain) return { filter: dec }
  const maxCacheBytes = f.decoder.maxCacheBytes
  return {
    filter: dec,
    gate: new BaseGate(dec.decoder, (h) => prepareDecoderBase(chain, h, { maxCacheBytes })),
  }
}

/** Takes the slot, opens the far end, then relays. Resolves nothing: the registry gets the result. */
function runSession(registry: SessionRegistry, options: ProxyCommonOptions, plan: SessionPlan): void {
  const { inbound } = plan
  const s = registry.begin()
  const observer = options.observeSession?.(s.id)
  const t0 = Date.now()
  const settle = (r: ProxySessionResult) => {
    observer?.end?.(r)
    s.settle(r)
  }
  let aborted: string | undefined
  let outbound: Duplex | undefined
  const destroyBoth = () => {
    inbound.destroy()
    outbound?.destroy()
  }
  s.setAbort((why) => {
    aborted = why
    destroyBoth()
  })
  const timer =
    plan.openTimeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          aborted ??= `opening the ${plan.outboundName} timed out after ${plan.openTimeoutMs} ms`
          destroyBoth()
        }, plan.openTimeoutMs)
  const track = (out: Duplex) => {
    outbound = out
    out.on('error', () => {}) // until the relay owns it
    if (aborted !== undefined) {
      out.destroy()
      throw new Error(aborted)
    }
  }
  plan.open(track).then(
    async (out) => {
      clearTimeout(timer)
      outbound = out
      try {
        await plan.prepare?.()
      } catch (e) {
        destroyBoth()
        settle(failedResult(s.id, aborted ?? oneLine(e), t0))
        return
      }
      if (aborted !== undefined || inbound.destroyed) {
        out.destroy()
        settle(failedResult(s.id, aborted ?? plan.inboundGone, t0))
        return
      }
      inbound.removeAllListeners('error')
      out.removeAllListeners('error')
      const f = plan.filter()
      const relay = new Relay(
        s.id,
        {
          from: inbound,
          to: out,
          fromName: plan.inboundName,
          toName: plan.outboundName,
          ...makeFilter(f, observer, out),
          // the encoder reads QEMU's stream, the decoder writes it
          qemuIs: 'encoder' in f ? 'from' : 'to',
        },
        registry.counters,
        {
          idleTimeoutMs: options.idleTimeoutMs ?? 0,
          halfCloseTimeoutMs: options.halfCloseTimeoutMs ?? 30_000,
          digest: options.digest ?? false,
        },
      )
      s.setAbort((why) => relay.fail(why))
      inbound.resume()
      relay.result.then(settle)
    },
    (e: unknown) => {
      clearTimeout(timer)
      destroyBoth()
      settle(failedResult(s.id, aborted ?? oneLine(e), t0))
    },
  )
}

async function sourceDoor(options: SourceProxyOptions, registry: SessionRegistry): Promise<Door> {
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  const where = `a connection on unix:${options.listen}`
  const admit = (qemu: Socket) => {
    if (registry.closed) qemu.destroy()
    else if (registry.busy) registry.refuseBusy(where, qemu)
    else return true
    return false
  }
  const start = (qemu: Socket) => {
    if (!admit(qemu)) return
    let agreed = false
    let base: EncoderBase | undefined
    runSession(registry, options, {
      inbound: qemu,
      inboundName: 'source QEMU',
      outboundName: 'transport',
      open: async (track) => {
        const transport = await options.connect()
        track(transport)
        const peer = await clientHandshake(transport, options.token, options.base?.offer)
        agreed = decideBase(registry, 'source', options.base?.offer, peer)
        return transport
      },
      prepare: async () => {
        if (agreed) base = await options.base!.prepare()
      },
      openTimeoutMs: connectTimeoutMs,
      inboundGone: 'source QEMU closed the connection early',
      filter: () => ({ encoder: base ? { ...options.encoder, base } : (options.encoder ?? {}) }),
    })
  }
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (qemu) => {
    if (!admit(qemu)) return
    qemu.on('error', () => {}) // until the relay owns it
    // A session starts with QEMU's first byte: a connection that closes without sending anything (another
    // proxy checking whether this socket is alive, see claimUnixPath) is no migration and is dropped quietly.
    const onFirst = () => {
      qemu.off('readable', onFirst)
      if (qemu.readableLength === 0) qemu.destroy()
      else start(qemu)
    }
    qemu.on('readable', onFirst)
  })
  const ours = await bindUnixServer(server, options.listen, options.socketMode ?? 0o660)
  return {
    address: `unix:${options.listen}`,
    close: () => {
      // Our socket file only: another proxy may have taken the path since (compared right before unlink).
      unlinkIfOurs(options.listen, ours)
      return closeServer(server)
    },
  }
}

/** The base comparison of one migration (agreeOnBase), logged in one line; true when the base is used. */
function decideBase(
  registry: SessionRegistry,
  role: ProxyRole,
  ours: ProxyBaseOffer | undefined,
  peer: PeerBase,
): boolean {
  const { use, line } = agreeOnBase(role, ours, peer)
  if (line) registry.log(`xbzrle proxy ${role}: ${line}`)
  return use
}

const REFUSAL_OF: Partial<Record<HandshakeStatus, ProxyRefusal>> = {
  [HandshakeStatus.AuthFailed]: 'AUTH_FAILED',
  [HandshakeStatus.UnsupportedVersion]: 'UNSUPPORTED_VERSION',
  [HandshakeStatus.Malformed]: 'MALFORMED',
}

async function destinationDoor(options: DestinationProxyOptions, registry: SessionRegistry): Promise<Door> {
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000
  const maxPending = options.maxPendingHandshakes ?? 16
  let listener = options.accept
  if (!listener) {
    if (!options.listen) throw new Error('startProxy destination: give `accept` or `listen`')
    const host = options.listen.host ?? '127.0.0.1'
    if (!options.token && !isLoopbackHost(host) && !options.allowRemoteWithoutToken) {
      throw new Error(
        `refusing to listen on ${host} without a token: anyone who reaches the port could feed the destination ` +
          'QEMU; give --token-file FILE or XBZRLE_TOKEN (or listen on 127.0.0.1)',
      )
    }
    listener = await listenTcp({ ...options.listen, tls: options.tls, handshakeTimeoutMs })
  }
  const pending = new Set<Duplex>()
  const start = (transport: Duplex, peer: PeerBase) => {
    decideBase(registry, 'destination', options.base?.offer, peer)
    runSession(registry, options, {
      inbound: transport,
      inboundName: 'transport',
      outboundName: 'destination QEMU',
      open: async (track) => {
        const qemu = await connectUnix(options.qemuSocket, connectTimeoutMs)
        track(qemu)
        return qemu
      },
      inboundGone: 'the transport closed before QEMU was reached',
      // With a base held here, a stream that names one is checked against it whatever the handshake said.
      filter: () => ({
        decoder: options.decoder ?? {},
        ...(options.base ? { base: options.base.chain } : {}),
      }),
    })
  }
  listener.onConnection((transport) => {
    if (registry.closed || pending.size >= maxPending) {
      if (!registry.closed) registry.refusedQuietly('TOO_MANY_PENDING')
      transport.destroy()
      return
    }
    pending.add(transport)
    transport.on('error', () => {})
    const sock = transport as Partial<Socket>
    const peer = sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : 'a transport connection'
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      transport.destroy()
    }, handshakeTimeoutMs)
    serverHandshake(transport, options.token, options.base?.offer).then(
      (hs) => {
        clearTimeout(timer)
        pending.delete(transport)
        if (registry.closed) {
          transport.destroy()
          return
        }
        // The slot is taken only now, after authentication.
        if (registry.busy) {
          registry.refuseBusy(peer)
          hs.refuse(HandshakeStatus.Busy, 'a migration is already running through this proxy (one at a time)')
          return
        }
        hs.accept()
        transport.pause()
        start(transport, hs.peer)
      },
      (e: unknown) => {
        clearTimeout(timer)
        pending.delete(transport)
        transport.destroy()
        if (timedOut)
          registry.dropUnauthenticated(
            peer,
            'HANDSHAKE_TIMEOUT',
            `no proxy handshake within ${handshakeTimeoutMs} ms`,
          )
        else if (e instanceof HandshakeRefused)
          registry.dropUnauthenticated(peer, REFUSAL_OF[e.status] ?? 'HANDSHAKE_ABORTED', e.message)
        else registry.dropUnauthenticated(peer, 'HANDSHAKE_ABORTED', oneLine(e))
      },
    )
  })
  const l = listener
  return {
    address: l.address,
    close: () => {
      for (const c of pending) c.destroy()
      return l.close()
    },
  }
}
