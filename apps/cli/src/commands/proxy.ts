/**
 * `xbzrle proxy source|destination`: the unix-socket migration proxy pair (the library is adapter-libvirt's
 * `startProxy`). Flags are parsed by commander like every other command; this file turns them into
 * `startProxy` options, runs the proxy until a signal (or with --once until the first migration ends) and wires
 * the observability options (one RunObserver per migration, see observe/run.ts).
 */
import { readFileSync } from 'node:fs'
import {
  type EncoderBase,
  isLoopbackHost,
  loadProxyToken,
  type MigrationProxy,
  type ProxyOptions,
  type ProxySessionObserver,
  prepareEncoderBase,
  startProxy,
  type TlsClientOptions,
  TOKEN_ENV,
  tcpConnector,
} from '@xbzrle/adapter-libvirt'
import { baseFingerprint } from '@xbzrle/protocol'
import { type Command, InvalidArgumentError } from 'commander'
import { CliError, ExitCode, type ExitCodeValue } from '../errors.js'
import { parseSize } from '../io.js'
import {
  type ObserveCommandOptions,
  proxySessionObservers,
  type SessionObservers,
  startSessionObservers,
} from '../observe/run.js'
import { baseOffer } from './ws.js'

export const PROXY_DESCRIPTION = `Relays one live migration at a time between two unix sockets over TCP: the source half encodes QEMU's stream,
the destination half decodes it; QEMU's return path (destination -> source) is relayed raw in the other
direction. Several migrations one after another are fine; a second one while one is running is refused.
Every transport connection starts with a short handshake (version, token proof); the destination drops a
connection that does not finish it within --handshake-timeout, so idle connections never hold the slot.`

export const PROXY_EXAMPLES = `
Examples:

With libvirt (same socket path on both hosts; destination first, then source, then virsh):
  dst# xbzrle proxy destination --listen 0.0.0.0:49300 --qemu-socket /var/lib/libvirt/qemu/xbz.sock \\
         --token-file /etc/xbzrle/token --tls-cert /etc/xbzrle/cert.pem --tls-key /etc/xbzrle/key.pem
  src# xbzrle proxy source --listen /var/lib/libvirt/qemu/xbz.sock --connect DST:49300 \\
         --token-file /etc/xbzrle/token --ca /etc/xbzrle/ca.pem
  src# virsh migrate --live --p2p --verbose DOM qemu+ssh://DST/system \\
         --migrateuri unix:///var/lib/libvirt/qemu/xbz.sock
  (not with --tunnelled, --tls, --parallel or --compressed; postcopy works as the return path is relayed)

With a base (the destination holds an earlier save of the same VM; both halves must name the same file):
  dst# xbzrle proxy destination ... --base /var/lib/xbz/DOM.1.save
  src# xbzrle proxy source ... --base /var/lib/xbz/DOM.1.save

With plain QEMU:
  dst: qemu-system-x86_64 ... -incoming unix:/run/xbz-dst.sock
  src (QMP): {"execute":"migrate","arguments":{"uri":"unix:/run/xbz-src.sock"}}

Observability, per migration (ids proxy-source-PID-N / proxy-destination-PID-N; with --metrics-id ID: ID-N):
  xbzrle proxy source ... --metrics-listen 127.0.0.1:9464 --progress json=/run/xbz.progress \\
         --stats-json /run/xbz-{id}.stats.json
`

/** Everything `xbzrle proxy` was told, checked. */
export interface ProxyArgs {
  role: 'source' | 'destination'
  listen: string
  connect?: { host: string; port: number }
  qemuSocket?: string
  once: boolean
  quiet: boolean
  digest: boolean
  cacheBytes?: number
  mode?: 'canonical' | 'compact'
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
  /** --base: an earlier image of the VM, then the bases it depends on (used only when both halves hold it). */
  base?: string[]
}

/** The options commander hands the action (before checks). */
export interface ProxyFlags extends ObserveCommandOptions {
  listen?: string
  connect?: string
  qemuSocket?: string
  once?: boolean
  quiet?: boolean
  digest?: boolean
  cache?: number
  mode?: string
  maxCache?: number
  socketMode?: string
  connectTimeout?: number
  idleTimeout?: number
  handshakeTimeout?: number
  tokenFile?: string
  token?: string
  tlsCert?: string
  tlsKey?: string
  ca?: string
  tls?: boolean
  allowInsecureNoToken?: boolean
  stats?: boolean
  base?: string[]
}

const usage = (message: string) =>
  new CliError(`proxy: ${message}`, ExitCode.USAGE, 'run `xbzrle proxy --help` for the options')

/** `[HOST:]PORT` (HOST may be `[v6]`); the host defaults to 127.0.0.1. */
export function parseHostPort(text: string, defaultHost = '127.0.0.1'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text)
  const port = m ? Number(m[3]) : Number.NaN
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw usage(`expected [HOST:]PORT, got ${JSON.stringify(text)}`)
  return { host: m[1] || m[2] || defaultHost, port }
}

function secondsArg(v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0 || v.trim() === '') throw new InvalidArgumentError('expected seconds')
  return Math.round(n * 1000)
}

function sizeArg(v: string): number {
  try {
    return parseSize(v)
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message)
  }
}

const SOURCE_ONLY = ['connect', 'cache', 'mode', 'socketMode', 'ca', 'tls'] as const
const DESTINATION_ONLY = ['qemuSocket', 'maxCache', 'tlsCert', 'tlsKey', 'handshakeTimeout'] as const

/** Checks the role and the flags that belong to it (the messages name the other role). */
export function proxyArgs(role: string | undefined, f: ProxyFlags): ProxyArgs {
  if (role !== 'source' && role !== 'destination')
    throw usage('first argument must be "source" or "destination"')
  if (f.token !== undefined)
    throw usage(
      `the token is never given on the command line (visible to every user): use --token-file FILE or ${TOKEN_ENV}`,
    )
  if (!f.listen) throw usage('--listen is required')
  const args: ProxyArgs = {
    role,
    listen: f.listen,
    once: f.once === true,
    quiet: f.quiet === true,
    digest: f.digest === true,
    connectTimeoutMs: f.connectTimeout ?? 10_000,
    idleTimeoutMs: f.idleTimeout ?? 0,
    handshakeTimeoutMs: f.handshakeTimeout ?? 10_000,
    tls: f.tls === true,
    allowInsecureNoToken: f.allowInsecureNoToken === true,
  }
  if (f.tokenFile !== undefined) args.tokenFile = f.tokenFile
  if (f.base?.length) args.base = f.base
  if (role === 'source') {
    if (!f.connect) throw usage('proxy source needs --connect HOST:PORT')
    args.connect = parseHostPort(f.connect)
    if (DESTINATION_ONLY.some((k) => f[k] !== undefined))
      throw usage(
        '--qemu-socket, --max-cache, --tls-cert, --tls-key and --handshake-timeout belong to "proxy destination"',
      )
    if (f.cache !== undefined) args.cacheBytes = f.cache
    if (f.mode !== undefined) {
      if (f.mode !== 'canonical' && f.mode !== 'compact') throw usage('--mode is canonical or compact')
      args.mode = f.mode
    }
    if (f.socketMode !== undefined) {
      if (!/^[0-7]{3,4}$/.test(f.socketMode)) throw usage('--socket-mode is octal, e.g. 660')
      args.socketMode = Number.parseInt(f.socketMode, 8)
    }
    if (f.ca !== undefined) args.ca = f.ca
  } else {
    if (!f.qemuSocket) throw usage('proxy destination needs --qemu-socket SOCKET')
    args.qemuSocket = f.qemuSocket
    parseHostPort(f.listen)
    if (SOURCE_ONLY.some((k) => f[k] !== undefined))
      throw usage('--connect, --cache, --mode, --socket-mode, --ca and --tls belong to "proxy source"')
    if ((f.tlsCert === undefined) !== (f.tlsKey === undefined))
      throw usage('--tls-cert and --tls-key go together')
    if (f.tlsCert !== undefined) args.tlsCert = f.tlsCert
    if (f.tlsKey !== undefined) args.tlsKey = f.tlsKey
    if (f.maxCache !== undefined) args.maxCacheBytes = f.maxCache
  }
  return args
}

/**
 * The warning for a token used without TLS beyond loopback (undefined when there is nothing to warn about):
 * the stream travels in clear and a man in the middle can relay the handshake.
 */
export function proxySecurityWarning(args: ProxyArgs, token: string | undefined): string | undefined {
  if (args.role === 'source') {
    const host = args.connect!.host
    if (token && !args.tls && args.ca === undefined && !isLoopbackHost(host))
      return `xbzrle proxy source: warning: token authentication to ${host} without TLS: the migration stream is not encrypted and the destination is not authenticated (add --ca FILE or --tls)`
    return undefined
  }
  const host = parseHostPort(args.listen).host
  if (token && args.tlsCert === undefined && !isLoopbackHost(host))
    return `xbzrle proxy destination: warning: token authentication on ${host} without TLS: the migration stream is not encrypted (add --tls-cert FILE --tls-key FILE)`
  return undefined
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (e) {
    throw new Error(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
  }
}

/**
 * The base of a source proxy: seeded once at start (so that the first migration starts at once and the base's
 * fingerprint is known for the handshake), seeded again for each further migration that uses it.
 */
async function sourceBase(args: ProxyArgs): Promise<SourceBase> {
  const seed = () => prepareEncoderBase(args.base!, { cacheBytes: args.cacheBytes, mode: args.mode })
  let ready: EncoderBase | undefined = await seed()
  const r = ready.requirement
  return {
    offer: { fingerprint: baseFingerprint(r), bytes: r.baseBytes },
    prepare: async () => {
      const b = ready ?? (await seed())
      ready = undefined
      return b
    },
  }
}

type SourceBase = NonNullable<Extract<ProxyOptions, { role: 'source' }>['base']>
type DestinationBase = NonNullable<Extract<ProxyOptions, { role: 'destination' }>['base']>

/** What --base gives the proxy: the source's seeded base, or the destination's chain and its fingerprint. */
export async function proxyBase(args: ProxyArgs): Promise<SourceBase | DestinationBase | undefined> {
  if (!args.base?.length) return undefined
  if (args.role === 'source') return sourceBase(args)
  return { offer: await baseOffer(args.base), chain: args.base }
}

/** The `startProxy` options for `args` (reads the TLS files; throws a one-line error when one is unreadable). */
export function proxyOptions(
  args: ProxyArgs,
  token: string | undefined,
  hooks: Pick<ProxyOptions, 'log' | 'observeSession' | 'onRefused'>,
  base?: SourceBase | DestinationBase,
): ProxyOptions {
  const common = {
    ...hooks,
    connectTimeoutMs: args.connectTimeoutMs,
    idleTimeoutMs: args.idleTimeoutMs,
    digest: args.digest,
    token,
  }
  if (args.role === 'source') {
    const tls: TlsClientOptions | undefined =
      args.ca !== undefined ? { ca: readPem(args.ca, 'CA file') } : args.tls ? true : undefined
    return {
      ...common,
      role: 'source',
      listen: args.listen,
      connect: tcpConnector({ ...args.connect!, timeoutMs: args.connectTimeoutMs, tls }),
      encoder: {
        ...(args.cacheBytes !== undefined ? { cacheBytes: args.cacheBytes } : {}),
        ...(args.mode !== undefined ? { mode: args.mode } : {}),
      },
      socketMode: args.socketMode,
      ...(base && 'prepare' in base ? { base } : {}),
    }
  }
  return {
    ...common,
    role: 'destination',
    listen: parseHostPort(args.listen),
    qemuSocket: args.qemuSocket!,
    decoder: args.maxCacheBytes !== undefined ? { maxCacheBytes: args.maxCacheBytes } : {},
    tls:
      args.tlsCert !== undefined && args.tlsKey !== undefined
        ? { cert: readPem(args.tlsCert, 'TLS certificate'), key: readPem(args.tlsKey, 'TLS key') }
        : undefined,
    handshakeTimeoutMs: args.handshakeTimeoutMs,
    allowRemoteWithoutToken: args.allowInsecureNoToken,
    ...(base && 'chain' in base ? { base } : {}),
  }
}

/** A command that already reported its failure on stderr and only needs an exit code. */
export class SilentExit extends Error {
  constructor(readonly exitCode: ExitCodeValue) {
    super('exit')
  }
}

/**
 * Runs the proxy until SIGINT/SIGTERM (exit 0), or with --once until the first migration ends (0 if it
 * succeeded, else 5: the failure line is already on stderr). Setup errors: `proxy ROLE: …` (exit 2 for an
 * unauthenticated public listener, else 4).
 */
export async function runProxyCommand(args: ProxyArgs, o: ProxyFlags = {}): Promise<void> {
  const err = (l: string) => process.stderr.write(`${l}\n`)
  const role = args.role
  const observerRole = role === 'source' ? 'proxy-source' : 'proxy-destination'
  // stdout carries no data here: --stats-json - and --progress json=1 may use it.
  const observers: SessionObservers = await startSessionObservers(o, 'network')
  let proxy: MigrationProxy
  try {
    const token = loadProxyToken({ file: args.tokenFile, env: TOKEN_ENV })
    const warning = proxySecurityWarning(args, token)
    if (warning) err(warning)
    const observe = proxySessionObservers(observers, observerRole, o)
    const base = await proxyBase(args)
    proxy = await startProxy(
      proxyOptions(
        args,
        token,
        {
          log: (l) => {
            if (!args.quiet || l.includes(' failed: ')) err(l)
          },
          observeSession: (id): ProxySessionObserver => observe(id),
          onRefused: (reason) => observers.refused(observerRole, reason),
        },
        base,
      ),
    )
  } catch (e) {
    await observers.close()
    const m = e instanceof Error ? e.message : String(e)
    // Refusing an unauthenticated public listener is a usage error; the rest are file / socket errors.
    throw new CliError(
      `proxy ${role}: ${m}`,
      m.startsWith('refusing to listen') ? ExitCode.USAGE : ExitCode.IO,
    )
  }
  const code = await new Promise<ExitCodeValue>((resolve) => {
    const stop = (c: ExitCodeValue) => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      void proxy.close().then(() => resolve(c))
    }
    const onSignal = () => stop(ExitCode.OK)
    // The handlers go in before "listening on" is printed: whoever reads that line may signal at once.
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    if (!args.quiet) {
      const to =
        role === 'source' ? `tcp:${args.connect!.host}:${args.connect!.port}` : `unix:${args.qemuSocket}`
      err(`xbzrle proxy ${role}: listening on ${proxy.address}, relaying to ${to}`)
    }
    if (args.once) void proxy.nextSession().then((r) => stop(r.ok ? ExitCode.OK : ExitCode.PEER))
  })
  await observers.close()
  if (code !== ExitCode.OK) throw new SilentExit(code)
}

/**
 * Adds `xbzrle proxy [source|destination]` to `program`; `addObserveOptions` adds the shared observability
 * flags. `run` is what the action calls with the checked arguments (tests give their own).
 */
export function registerProxyCommand(
  program: Command,
  addObserveOptions: (cmd: Command) => Command,
  run: (args: ProxyArgs, o: ProxyFlags) => Promise<void> = runProxyCommand,
): Command {
  const cmd = program
    .command('proxy')
    .summary('unix-socket migration proxy for `virsh migrate --migrateuri unix://` (source | destination)')
    .description(PROXY_DESCRIPTION)
    .usage('source|destination [options]')
    .argument('[role]', 'source or destination')
    .option(
      '--listen <address>',
      'source: unix socket the source QEMU/libvirtd connects to; destination: [HOST:]PORT to accept the source half on (default host 127.0.0.1)',
    )
    .option('--connect <host:port>', 'source: where the destination half listens')
    .option(
      '--qemu-socket <socket>',
      'destination: unix socket the destination QEMU listens on (-incoming unix:SOCKET)',
    )
    .option('--once', 'exit after the first migration (status 0 if it succeeded, 5 if not)')
    .option('--cache <size>', 'source: encoder cache (default: guest RAM rounded up, at most 1G)', sizeArg)
    .option('--mode <mode>', 'source: XBZRLE encoding mode, canonical or compact (default canonical)')
    .option(
      '--max-cache <size>',
      'destination: refuse streams asking for a bigger cache (default 4G)',
      sizeArg,
    )
    .option('--socket-mode <octal>', 'source: mode of the listening socket (default 660)')
    .option(
      '--connect-timeout <seconds>',
      'opening the TCP connection / QEMU socket (default 10)',
      secondsArg,
    )
    .option(
      '--idle-timeout <seconds>',
      'abort a migration when nothing moved for this long (default 0 = never)',
      secondsArg,
    )
    .option(
      '--token-file <file>',
      `shared secret of the pair (else ${TOKEN_ENV}; never on the command line); required by a destination listening beyond loopback; never sent (the source proves it knows it: HMAC over a nonce)`,
    )
    .option('--tls-cert <file>', 'destination: TLS for the transport, PEM certificate chain (with --tls-key)')
    .option('--tls-key <file>', 'destination: TLS private key (PEM)')
    .option('--ca <file>', "source: TLS, trusting this CA (PEM) for the destination's certificate")
    .option('--tls', 'source: TLS, verified against the system CAs')
    .option(
      '--allow-insecure-no-token',
      'destination: listen beyond loopback without a token (not recommended)',
    )
    .option(
      '--handshake-timeout <seconds>',
      'destination: drop a connection that has not authenticated by then (default 10)',
      secondsArg,
    )
    .option(
      '--digest',
      'log a SHA-256 of the QEMU stream per migration (equal on both halves = byte-exact end to end; costs CPU)',
    )
    .option(
      '--base <file>',
      'an earlier image of this VM (QEMU stream, save image or xbzrle stream; repeat for the bases it depends on): named in the handshake, used only when the other half holds the same (else one log line and no base)',
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option('--quiet', 'only errors')
    .option('--stats', 'print the per-pass table of each migration on stderr')
    // Only to say why it is refused (the token would be visible to every user in `ps`).
    .option('--token <token>', 'not accepted: use --token-file FILE or XBZRLE_TOKEN')
  addObserveOptions(cmd)
  cmd.addHelpText('after', PROXY_EXAMPLES)
  cmd.action(async (role: string | undefined, o: ProxyFlags) => {
    if (role === undefined && Object.keys(o).every((k) => k === 'progress')) {
      cmd.help() // `xbzrle proxy` alone: the usage, as --help
    }
    await run(proxyArgs(role, o), o)
  })
  return cmd
}
