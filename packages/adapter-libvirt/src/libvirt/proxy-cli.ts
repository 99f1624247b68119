/**
 * Runnable entry for the migration proxy pair: `proxyMain(argv)` is what `xbzrle proxy source|destination …`
 * calls. No dependency on a CLI framework; the CLI may parse its own flags and call `runProxy` instead.
 */
import { readFileSync } from 'node:fs'
import type { Mode } from '@xbzrle/protocol'
import {
  type MigrationProxy,
  type ProxySessionResult,
  startDestinationProxy,
  startSourceProxy,
  type TlsClientOptions,
  tcpConnector,
} from './proxy.js'
import { isLoopbackHost, loadProxyToken, TOKEN_ENV } from './proxy-auth.js'

export const PROXY_USAGE = `Usage:
  xbzrle proxy source --listen SOCKET --connect HOST:PORT [options]
  xbzrle proxy destination --listen [HOST:]PORT --qemu-socket SOCKET [--token-file FILE] [options]

Relays one live migration at a time between two unix sockets over TCP: the source half encodes QEMU's stream,
the destination half decodes it; QEMU's return path (destination -> source) is relayed raw in the other
direction. Several migrations one after another are fine; a second one while one is running is refused.
Every transport connection starts with a short handshake (version, token proof); the destination drops a
connection that does not finish it within --handshake-timeout, so idle connections never hold the slot.

Options:
  --listen SOCKET|[HOST:]PORT  source: unix socket the source QEMU/libvirtd connects to;
                               destination: TCP address to accept the source half on (default host 127.0.0.1)
  --connect HOST:PORT          source: where the destination half listens
  --qemu-socket SOCKET         destination: unix socket the destination QEMU listens on (-incoming unix:SOCKET)
  --once                       exit after the first migration (status 0 if it succeeded, 1 if not)
  --cache SIZE                 source: encoder cache (default: guest RAM rounded up, at most 1G)
  --mode canonical|compact     source: XBZRLE encoding mode (default canonical)
  --max-cache SIZE             destination: refuse streams asking for a bigger cache (default 4G)
  --socket-mode OCTAL          source: mode of the listening socket (default 660)
  --connect-timeout SECONDS    opening the TCP connection / QEMU socket (default 10)
  --idle-timeout SECONDS       abort a migration when nothing moved for this long (default 0 = never)
  --token-file FILE            shared secret of the pair (else the XBZRLE_TOKEN environment variable; never
                               on the command line). Required by a destination listening beyond loopback.
                               The token is never sent: the source proves it knows it (HMAC over a nonce).
  --tls-cert FILE --tls-key FILE
                               destination: TLS for the transport (PEM certificate chain and key)
  --ca FILE                    source: TLS, trusting this CA (PEM) for the destination's certificate
  --tls                        source: TLS, verified against the system CAs
  --allow-insecure-no-token   destination: listen beyond loopback without a token (not recommended)
  --handshake-timeout SECONDS  destination: drop a connection that has not authenticated by then (default 10)
  --digest                     log a SHA-256 of the QEMU stream per migration (equal on both halves =
                               byte-exact end to end; costs CPU)
  --quiet                      only errors

With libvirt (same socket path on both hosts; destination first, then source, then virsh):
  dst# xbzrle proxy destination --listen 0.0.0.0:49300 --qemu-socket /var/lib/libvirt/qemu/xbz.sock \\
         --token-file /etc/xbzrle/token --tls-cert /etc/xbzrle/cert.pem --tls-key /etc/xbzrle/key.pem
  src# xbzrle proxy source --listen /var/lib/libvirt/qemu/xbz.sock --connect DST:49300 \\
         --token-file /etc/xbzrle/token --ca /etc/xbzrle/ca.pem
  src# virsh migrate --live --p2p --verbose DOM qemu+ssh://DST/system \\
         --migrateuri unix:///var/lib/libvirt/qemu/xbz.sock
  (not with --tunnelled, --tls, --parallel or --compressed; postcopy works as the return path is relayed)

With plain QEMU:
  dst: qemu-system-x86_64 ... -incoming unix:/run/xbz-dst.sock
  src (QMP): {"execute":"migrate","arguments":{"uri":"unix:/run/xbz-src.sock"}}
`

export class ProxyUsageError extends Error {
  override readonly name = 'ProxyUsageError'
}

export interface ProxyArgs {
  role: 'source' | 'destination'
  listen: string
  connect?: { host: string; port: number }
  qemuSocket?: string
  once: boolean
  quiet: boolean
  digest: boolean
  cacheBytes?: number
  mode?: Mode
  maxCacheBytes?: number
  socketMode?: number
  connectTimeoutMs: number
  idleTimeoutMs: number
  handshakeTimeoutMs: number
  /** Path of the token file (else the token comes from XBZRLE_TOKEN, if set). */
  tokenFile?: string
  /** Destination: TLS certificate and key files. */
  tlsCert?: string
  tlsKey?: string
  /** Source: TLS with this CA file, or (`tls: true`) with the system CAs. */
  ca?: string
  tls: boolean
  /** Destination: allow a non-loopback --listen without a token. */
  allowInsecureNoToken: boolean
}

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(text.trim())
  if (!m) throw new ProxyUsageError(`not a size: ${JSON.stringify(text)} (examples: 64M, 1G)`)
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '']
  const v = Math.round(Number(m[1]) * unit)
  if (!Number.isSafeInteger(v) || v <= 0) throw new ProxyUsageError(`size out of range: ${text}`)
  return v
}

export function parseHostPort(text: string, defaultHost = '127.0.0.1'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text)
  const port = m ? Number(m[3]) : Number.NaN
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ProxyUsageError(`expected [HOST:]PORT, got ${JSON.stringify(text)}`)
  }
  return { host: m[1] || m[2] || defaultHost, port }
}

function seconds(text: string): number {
  const n = Number(text)
  if (!Number.isFinite(n) || n < 0) throw new ProxyUsageError(`expected seconds, got ${JSON.stringify(text)}`)
  return Math.round(n * 1000)
}

/** Parses `source|destination` and the flags of PROXY_USAGE. Throws ProxyUsageError. */
export function parseProxyArgs(argv: readonly string[]): ProxyArgs {
  const [role, ...rest] = argv
  if (role !== 'source' && role !== 'destination') {
    throw new ProxyUsageError('first argument must be "source" or "destination"')
  }
  const flags = new Map<string, string>()
  const bools = new Set<string>()
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!
    if (
      a === '--once' ||
      a === '--quiet' ||
      a === '--digest' ||
      a === '--tls' ||
      a === '--allow-insecure-no-token'
    ) {
      bools.add(a)
      continue
    }
    const eq = a.indexOf('=')
    const name = eq > 0 ? a.slice(0, eq) : a
    const known = [
      '--listen',
      '--connect',
      '--qemu-socket',
      '--cache',
      '--mode',
      '--max-cache',
      '--socket-mode',
      '--connect-timeout',
      '--idle-timeout',
      '--handshake-timeout',
      '--token-file',
      '--tls-cert',
      '--tls-key',
      '--ca',
      '--token',
    ]
    if (!known.includes(name)) throw new ProxyUsageError(`unknown option ${a}`)
    if (name === '--token') {
      throw new ProxyUsageError(
        `the token is never given on the command line (visible to every user): use --token-file FILE or ${TOKEN_ENV}`,
      )
    }
    const value = eq > 0 ? a.slice(eq + 1) : rest[++i]
    if (value === undefined) throw new ProxyUsageError(`${name} needs a value`)
    flags.set(name, value)
  }
  const listen = flags.get('--listen')
  if (!listen) throw new ProxyUsageError('--listen is required')
  const args: ProxyArgs = {
    role,
    listen,
    once: bools.has('--once'),
    quiet: bools.has('--quiet'),
    digest: bools.has('--digest'),
    connectTimeoutMs: seconds(flags.get('--connect-timeout') ?? '10'),
    idleTimeoutMs: seconds(flags.get('--idle-timeout') ?? '0'),
    handshakeTimeoutMs: seconds(flags.get('--handshake-timeout') ?? '10'),
    tls: bools.has('--tls'),
    allowInsecureNoToken: bools.has('--allow-insecure-no-token'),
  }
  for (const [flag, key] of [
    ['--token-file', 'tokenFile'],
    ['--tls-cert', 'tlsCert'],
    ['--tls-key', 'tlsKey'],
    ['--ca', 'ca'],
  ] as const) {
    const v = flags.get(flag)
    if (v !== undefined) args[key] = v
  }
  if (role === 'source') {
    const c = flags.get('--connect')
    if (!c) throw new ProxyUsageError('proxy source needs --connect HOST:PORT')
    args.connect = parseHostPort(c)
    if (
      flags.has('--qemu-socket') ||
      flags.has('--max-cache') ||
      flags.has('--tls-cert') ||
      flags.has('--tls-key') ||
      flags.has('--handshake-timeout')
    ) {
      throw new ProxyUsageError(
        '--qemu-socket, --max-cache, --tls-cert, --tls-key and --handshake-timeout belong to "proxy destination"',
      )
    }
  } else {
    const q = flags.get('--qemu-socket')
    if (!q) throw new ProxyUsageError('proxy destination needs --qemu-socket SOCKET')
    args.qemuSocket = q
    parseHostPort(listen)
    if (
      flags.has('--connect') ||
      flags.has('--cache') ||
      flags.has('--mode') ||
      flags.has('--socket-mode') ||
      flags.has('--ca') ||
      bools.has('--tls')
    ) {
      throw new ProxyUsageError(
        '--connect, --cache, --mode, --socket-mode, --ca and --tls belong to "proxy source"',
      )
    }
    if ((args.tlsCert === undefined) !== (args.tlsKey === undefined)) {
      throw new ProxyUsageError('--tls-cert and --tls-key go together')
    }
  }
  const cache = flags.get('--cache')
  if (cache) args.cacheBytes = parseSize(cache)
  const maxCache = flags.get('--max-cache')
  if (maxCache) args.maxCacheBytes = parseSize(maxCache)
  const mode = flags.get('--mode')
  if (mode) {
    if (mode !== 'canonical' && mode !== 'compact')
      throw new ProxyUsageError('--mode is canonical or compact')
    args.mode = mode
  }
  const sm = flags.get('--socket-mode')
  if (sm) {
    if (!/^[0-7]{3,4}$/.test(sm)) throw new ProxyUsageError('--socket-mode is octal, e.g. 660')
    args.socketMode = Number.parseInt(sm, 8)
  }
  return args
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (e) {
    throw new Error(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
  }
}

/**
 * The warning for a token used without TLS beyond loopback (undefined when there is nothing to warn about):
 * the stream travels in clear and a man in the middle can relay the handshake.
 */
export function proxySecurityWarning(args: ProxyArgs, token: string | undefined): string | undefined {
  if (args.role === 'source') {
    const host = args.connect!.host
    if (token && !args.tls && args.ca === undefined && !isLoopbackHost(host)) {
      return `xbzrle proxy source: warning: token authentication to ${host} without TLS: the migration stream is not encrypted and the destination is not authenticated (add --ca FILE or --tls)`
    }
    return undefined
  }
  const host = parseHostPort(args.listen).host
  if (token && args.tlsCert === undefined && !isLoopbackHost(host)) {
    return `xbzrle proxy destination: warning: token authentication on ${host} without TLS: the migration stream is not encrypted (add --tls-cert FILE --tls-key FILE)`
  }
  return undefined
}

/**
 * Starts the proxy described by `args`; log lines go to `log`. The token comes from `args.tokenFile`, else
 * `hooks.environment.XBZRLE_TOKEN` (default process.env); a warning line (see proxySecurityWarning) goes to
 * `hooks.warn` (default: `log`).
 */
export function runProxy(
  args: ProxyArgs,
  hooks: {
    log?: (line: string) => void
    warn?: (line: string) => void
    onSession?: (r: ProxySessionResult) => void
    environment?: NodeJS.ProcessEnv
  } = {},
): Promise<MigrationProxy> {
  let token: string | undefined
  try {
    token = loadProxyToken({ file: args.tokenFile, env: TOKEN_ENV, environment: hooks.environment })
  } catch (e) {
    return Promise.reject(e)
  }
  const warning = proxySecurityWarning(args, token)
  if (warning) (hooks.warn ?? hooks.log)?.(warning)
  const common = {
    connectTimeoutMs: args.connectTimeoutMs,
    idleTimeoutMs: args.idleTimeoutMs,
    digest: args.digest,
    log: hooks.log,
    onSession: hooks.onSession,
    token,
  }
  if (args.role === 'source') {
    const encoder: { cacheBytes?: number; mode?: Mode } = {}
    if (args.cacheBytes !== undefined) encoder.cacheBytes = args.cacheBytes
    if (args.mode !== undefined) encoder.mode = args.mode
    let tls: TlsClientOptions | undefined
    try {
      tls = args.ca !== undefined ? { ca: readPem(args.ca, 'CA file') } : args.tls ? true : undefined
    } catch (e) {
      return Promise.reject(e)
    }
    return startSourceProxy({
      ...common,
      listen: args.listen,
      connect: tcpConnector({ ...args.connect!, timeoutMs: args.connectTimeoutMs, tls }),
      encoder,
      socketMode: args.socketMode,
    })
  }
  const decoder: { maxCacheBytes?: number } = {}
  if (args.maxCacheBytes !== undefined) decoder.maxCacheBytes = args.maxCacheBytes
  let tls: { cert: Buffer; key: Buffer } | undefined
  try {
    if (args.tlsCert !== undefined && args.tlsKey !== undefined) {
      tls = { cert: readPem(args.tlsCert, 'TLS certificate'), key: readPem(args.tlsKey, 'TLS key') }
    }
  } catch (e) {
    return Promise.reject(e)
  }
  return startDestinationProxy({
    ...common,
    listen: parseHostPort(args.listen),
    qemuSocket: args.qemuSocket!,
    decoder,
    tls,
    handshakeTimeoutMs: args.handshakeTimeoutMs,
    allowRemoteWithoutToken: args.allowInsecureNoToken,
  })
}

/**
 * `xbzrle proxy …`: runs until SIGINT/SIGTERM (exit 0), or with --once until the first migration ends (0 if it
 * succeeded, 1 if not). Usage errors: message + usage on stderr, exit 2. Resolves with the exit status.
 */
export async function proxyMain(
  argv: readonly string[],
  io: { stderr?: (line: string) => void } = {},
): Promise<number> {
  const err = io.stderr ?? ((l: string) => process.stderr.write(`${l}\n`))
  if (argv.includes('-h') || argv.includes('--help')) {
    err(PROXY_USAGE)
    return 0
  }
  let args: ProxyArgs
  try {
    args = parseProxyArgs(argv)
  } catch (e) {
    if (!(e instanceof ProxyUsageError)) throw e
    err(`xbzrle proxy: ${e.message}\n\n${PROXY_USAGE}`)
    return 2
  }
  let proxy: MigrationProxy
  try {
    proxy = await runProxy(args, {
      log: (l) => {
        if (!args.quiet || l.includes(' failed: ')) err(l)
      },
      warn: err,
    })
  } catch (e) {
    const m = e instanceof Error ? e.message : String(e)
    err(`xbzrle proxy ${args.role}: ${m}`)
    // Refusing an unauthenticated public listener is a usage error; the rest are file / socket errors.
    return m.startsWith('refusing to listen') ? 2 : 4
  }
  if (!args.quiet) {
    const to =
      args.role === 'source' ? `tcp:${args.connect!.host}:${args.connect!.port}` : `unix:${args.qemuSocket}`
    err(`xbzrle proxy ${args.role}: listening on ${proxy.address}, relaying to ${to}`)
  }
  return new Promise<number>((resolve) => {
    const stop = (code: number) => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      void proxy.close().then(() => resolve(code))
    }
    const onSignal = () => stop(0)
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    if (args.once) void proxy.nextSession().then((r) => stop(r.ok ? 0 : 1))
  })
}
