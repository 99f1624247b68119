/**
 * The transport between the two proxy halves: any full-duplex byte stream with half-close. Forward direction =
 * the xbzrle stream, reverse direction = QEMU's return path verbatim. TCP (optionally TLS) is built in; a caller
 * may give its own connector / listener (tests wrap the TCP one to inject faults).
 */
import { createServer, isIP, type Server, type Socket, connect as socketConnect } from 'node:net'
import type { Duplex } from 'node:stream'
import { type ConnectionOptions, createServer as createTlsServer, connect as tlsConnect } from 'node:tls'

/** Opens one transport connection (source side), e.g. TCP to the destination proxy. */
export type TransportConnector = () => Promise<Duplex>

/**
 * Yields transport connections (destination side). The Duplex must support half-close: `end()` on one side is
 * seen as `'end'` on the other while the opposite direction stays open.
 */
export interface TransportListener {
  /** Human-readable address for messages, e.g. `tcp:127.0.0.1:4444`. */
  readonly address: string
  /** Registers the handler for new connections (called once, by the proxy). */
  onConnection(handler: (connection: Duplex) => void): void
  close(): Promise<void>
}

export interface TcpEndpoint {
  host?: string
  port: number
}

/** TLS on the source side: `true` = verify against the system CAs; `ca` = trust these (PEM). */
export type TlsClientOptions = boolean | { ca?: string | Buffer; servername?: string }

/** TLS on the destination side: certificate chain and private key (PEM). */
export interface TlsServerOptions {
  cert: string | Buffer
  key: string | Buffer
}

function tuneTcp(s: Socket): void {
  s.setNoDelay(true) // the return path carries tiny messages QEMU waits for
  s.setKeepAlive(true, 10_000)
}

/**
 * A TransportConnector that opens a TCP connection (half-close enabled, no Nagle, keep-alive), with TLS when
 * `tls` is given (the server certificate is verified; the host name is checked unless it is an IP address).
 */
export function tcpConnector(
  endpoint: TcpEndpoint & { timeoutMs?: number; tls?: TlsClientOptions },
): TransportConnector {
  const host = endpoint.host ?? '127.0.0.1'
  const timeoutMs = endpoint.timeoutMs ?? 10_000
  const tls = endpoint.tls === true ? {} : endpoint.tls || undefined
  const scheme = tls ? 'tls' : 'tcp'
  return () =>
    new Promise<Duplex>((resolve, reject) => {
      const s: Socket = tls
        ? tlsConnect({
            host,
            port: endpoint.port,
            // passed on to the TLSSocket (half-close: the return path stays open after the stream's end)
            allowHalfOpen: true,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
            servername: tls.servername ?? (isIP(host) ? undefined : host),
          } as ConnectionOptions)
        : socketConnect({ host, port: endpoint.port, allowHalfOpen: true })
      const timer = setTimeout(() => {
        s.destroy()
        reject(new Error(`connecting to ${scheme}:${host}:${endpoint.port} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      s.once(tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer)
        s.removeAllListeners('error')
        tuneTcp(s)
        resolve(s)
      })
      s.once('error', (e) => {
        clearTimeout(timer)
        reject(new Error(`cannot connect to ${scheme}:${host}:${endpoint.port}: ${e.message}`))
      })
    })
}

/**
 * A TransportListener on a TCP port (port 0 picks a free one; see `port`), with TLS when `tls` is given
 * (`handshakeTimeoutMs` then bounds the TLS handshake too; default 10000 ms).
 */
export async function listenTcp(
  endpoint: TcpEndpoint & { tls?: TlsServerOptions; handshakeTimeoutMs?: number },
): Promise<TransportListener & { port: number }> {
  const host = endpoint.host ?? '127.0.0.1'
  let handler: ((c: Duplex) => void) | undefined
  const onSocket = (s: Socket) => {
    tuneTcp(s)
    if (handler) handler(s)
    else s.destroy()
  }
  const server: Server = endpoint.tls
    ? createTlsServer(
        {
          cert: endpoint.tls.cert,
          key: endpoint.tls.key,
          allowHalfOpen: true,
          handshakeTimeout: endpoint.handshakeTimeoutMs ?? 10_000,
        },
        onSocket,
      )
    : createServer({ allowHalfOpen: true }, onSocket)
  if (endpoint.tls) server.on('tlsClientError', () => {}) // a failed TLS handshake only loses that connection
  await listen(server, { host, port: endpoint.port })
  const addr = server.address()
  const port = typeof addr === 'object' && addr ? addr.port : endpoint.port
  return {
    address: `${endpoint.tls ? 'tls' : 'tcp'}:${host}:${port}`,
    port,
    onConnection(h) {
      handler = h
    },
    close: () => closeServer(server),
  }
}

/** `server.listen` as a promise (rejects on EADDRINUSE and the like). */
export function listen(
  server: Server,
  where: { host: string; port: number } | { path: string },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e)
    server.once('error', onError)
    server.listen(where, () => {
      server.off('error', onError)
      resolve()
    })
  })
}

/** `server.close` as a promise; at once when it is not listening. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve()
      return
    }
    server.close(() => resolve())
  })
}
