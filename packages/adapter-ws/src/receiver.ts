/**
 * Receiver: an http(s) + ws server that accepts migrations. Each migration (told apart by its migration id) gets its
 * own pipeline from the injected factory, its own memory budget and its own ReliableChannel, which survives
 * reconnects for `resumeGraceMs`. This file wires the server; the parts live in receiver/: admission (a pure
 * decision per hello), session (one migration's state machine), connection (one WebSocket), preauth (limits on
 * connections that have not authenticated yet), registry (sessions and recent outcomes).
 */
import { createServer as createHttpServer, type Server as HttpServer, type IncomingMessage } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type WebSocket from 'ws'
import { WebSocketServer } from 'ws'
import { HEADER_BYTES } from './frame.js'
import { resolveConfig } from './receiver/config.js'
import { Connection } from './receiver/connection.js'
import { acceptConnection, PreAuthTracker } from './receiver/preauth.js'
import { sendRefusal } from './receiver/refuse.js'
import { SessionRegistry } from './receiver/registry.js'
import type { Session, SessionDeps } from './receiver/session.js'
import type { Receiver, ReceiverEvent, ReceiverOptions } from './receiver/types.js'
import { bearerToken } from './token.js'
import { isLoopbackHost } from './util.js'

export function createReceiver(options: ReceiverOptions): Receiver {
  const config = resolveConfig(options)
  const emit = (e: ReceiverEvent) => {
    try {
      options.onEvent?.(e)
    } catch {
      // a logging hook must not break the server
    }
  }

  const server: HttpServer | HttpsServer =
    options.server ??
    (options.tls
      ? createHttpsServer({
          cert: options.tls.cert,
          key: options.tls.key,
          handshakeTimeout: config.preAuthTimeoutMs,
        })
      : createHttpServer())
  const ownServer = options.server === undefined
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: config.maxMsg + HEADER_BYTES,
    clientTracking: false,
  })
  const sockets = new Set<Socket>()
  const clients = new Set<WebSocket>()
  const registry = new SessionRegistry<Session>(config.graceMs)
  const preAuth = new PreAuthTracker(config.preAuthTimeoutMs)
  const sessionDeps: SessionDeps = {
    config,
    emit,
    refuse: sendRefusal,
    release: (session, outcome) => registry.release(session, outcome),
  }
  const connectionContext = {
    config,
    registry,
    preAuth,
    sessionDeps,
    createPipeline: options.createPipeline,
    emit,
  }

  // ---- raw connections: limits and the pre-auth deadline ----
  const isTls = 'setSecureContext' in server
  const onConnection = (socket: Socket) => {
    const { evict, accept } = acceptConnection(
      { closing: registry.closing, preAuth: preAuth.size, connections: sockets.size },
      config,
    )
    if (evict) preAuth.evictOne()
    if (!accept) {
      socket.destroy()
      return
    }
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
    preAuth.track(socket)
  }
  const onSecureConnection = (tlsSocket: Socket) => {
    preAuth.link(tlsSocket, (tlsSocket as Socket & { _parent?: Socket })._parent)
    tlsSocket.on('error', () => {})
  }
  const onRequest = (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
    res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' })
    res.end('xbzrle receiver: WebSocket upgrade required\n')
  }
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {})
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    if (registry.closing || !path.startsWith(config.pathPrefix)) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      socket.destroy()
      return
    }
    const rec = preAuth.get(socket as Socket)
    if (rec) rec.upgraded = true
    try {
      wss.handleUpgrade(req, socket, head, (ws) => {
        clients.add(ws)
        ws.once('close', () => clients.delete(ws))
        const token = bearerToken(req.headers.authorization)
        new Connection(ws, connectionContext, path, req.socket.remoteAddress, token, socket as Socket)
      })
    } catch {
      socket.destroy()
    }
  }
  server.on('connection', onConnection)
  if (isTls) server.on('secureConnection', onSecureConnection)
  server.on('request', onRequest)
  server.on('upgrade', onUpgrade)
  server.on('clientError', (_err, socket) => socket.destroy())
  const onWssError = () => {}
  wss.on('error', onWssError)

  let address: AddressInfo | null = null
  return {
    async listen(host = '127.0.0.1', port = 0) {
      if (!ownServer) throw new Error('listen() is not available when attached to an existing server')
      if (options.token === undefined && !options.allowInsecureNoToken && !isLoopbackHost(host))
        throw new Error(
          `refusing to listen on ${host} without a token (set a token, or allowInsecureNoToken to accept anyone)`,
        )
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      address = server.address() as AddressInfo
      if (options.token !== undefined && !options.tls && !isLoopbackHost(host))
        emit({
          type: 'warning',
          message: `the token is accepted over ws:// without TLS on ${host}: anyone on the network path can read it (and the session secrets); set tls`,
        })
      return address
    },
    async close() {
      registry.closing = true
      for (const s of [...registry.sessions.values()]) s.shutdown()
      registry.clearEnded()
      for (const ws of clients) ws.terminate()
      preAuth.clear()
      server.off('connection', onConnection)
      server.off('secureConnection', onSecureConnection)
      server.off('request', onRequest)
      server.off('upgrade', onUpgrade)
      wss.close()
      wss.off('error', onWssError)
      if (ownServer) {
        for (const s of sockets) s.destroy()
        if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()))
      }
    },
    get address() {
      return address
    },
    get sessions() {
      return [...registry.sessions.values()].map((s) => s.snapshot())
    },
    get memoryInUse() {
      return registry.memoryInUse
    },
    get connections() {
      return sockets.size
    },
    server,
  }
}
