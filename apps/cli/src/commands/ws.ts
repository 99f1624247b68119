import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { constants as osConstants } from 'node:os'
import { dirname, isAbsolute, relative, resolve } from 'node:path'
import { PassThrough, type Readable, Transform, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  ACCEPTED_CRITICAL,
  BaseGate,
  baseBytes,
  DEFAULT_MAX_DECODER_CACHE,
  DecodeStream,
  type EncoderBase,
  EncodeStream,
  prepareDecoderBase,
  prepareEncoderBase,
} from '@xbzrle/adapter-libvirt'
import {
  type BaseOffer,
  createReceiver,
  createSender,
  isSafeMigrationId,
  loadToken,
  type Receiver,
  type SessionInfo,
  SessionRefusal,
  sendStream,
} from '@xbzrle/adapter-ws'
import {
  baseFingerprint,
  type Compression,
  FrameReader,
  headerToJson,
  type StreamHeaderJson,
  SUPPORTED_VERSIONS,
} from '@xbzrle/protocol'
import { createAtomicOutput } from '../atomic-output.js'
import { CliError, ExitCode, type ExitCodeValue } from '../errors.js'
import { bypassMode, formatBytes, openInput } from '../io.js'
import {
  bytesSource,
  decoderSource,
  encoderSource,
  type ObserveCommandOptions,
  type SessionObservers,
  startObservation,
  startSessionObservers,
  writeStatsJson,
} from '../observe/run.js'
import { Progress } from '../progress.js'

/** The token comes from a file or an environment variable, never from the command line (ps shows argv). */
export function tokenFrom(o: { tokenFile?: string; tokenEnv?: string }): string | undefined {
  try {
    return loadToken({
      file: o.tokenFile,
      env: o.tokenFile ? undefined : (o.tokenEnv ?? (process.env.XBZRLE_TOKEN ? 'XBZRLE_TOKEN' : undefined)),
    })
  } catch (e) {
    throw new CliError((e as Error).message, ExitCode.USAGE)
  }
}

export interface SendCommandOptions extends ObserveCommandOptions {
  tokenFile?: string
  tokenEnv?: string
  ca?: string
  maxRate?: number
  migrationId?: string
  encoded?: boolean
  cacheSize?: number
  mode?: 'canonical' | 'compact'
  zeroMask?: boolean
  compression?: Compression | 'auto'
  /** Bypass of the page path (filter/bypass.ts): `auto` (default), `always` or `never`; default XBZRLE_BYPASS. */
  bypass?: 'auto' | 'always' | 'never'
  stats?: boolean
  /** A base image the receiver may hold (then the bases it depends on): used only if the receiver holds it. */
  base?: string[]
}

/** How a base is named in the handshake. */
function offerOf(base: EncoderBase): BaseOffer {
  return { fingerprint: baseFingerprint(base.requirement), bytes: base.requirement.baseBytes }
}

/**
 * The sender's side of the base comparison (issue #15): encode against our base only when the receiver's welcome
 * names the same one (and the format has base images); otherwise say why, once, and send without a base.
 */
function agreedBase(
  ours: EncoderBase | undefined,
  theirs: BaseOffer | undefined,
  version: number,
  stats: boolean | undefined,
): EncoderBase | undefined {
  if (!ours) return undefined
  const fp = offerOf(ours).fingerprint
  let why: string | undefined
  if (version < 3) why = `the receiver speaks format v${version}, which has no base images`
  else if (!theirs) why = 'the receiver holds no base image (or predates them)'
  else if (theirs.fingerprint !== fp) why = `the receiver holds base ${theirs.fingerprint}, not ours (${fp})`
  if (why) {
    process.stderr.write(`xbzrle send: ${why}: sending without a base\n`)
    return undefined
  }
  if (stats) process.stderr.write(`xbzrle send: the receiver holds our base ${fp}: encoding against it\n`)
  return ours
}

/** Bytes between the encoder and the WebSocket sender. */
const FEED_QUEUE = 64 * 1024
/** The WebSocket's own send queue (bufferedAmount) before the sender waits; the kernel socket buffer comes after. */
const SEND_QUEUE = 256 * 1024

export async function runSend(url: string, input: string | undefined, o: SendCommandOptions): Promise<void> {
  if (!/^wss?:\/\//.test(url))
    throw new CliError(`send: expected a ws:// or wss:// URL, got ${url}`, ExitCode.USAGE)
  if (o.migrationId !== undefined && !isSafeMigrationId(o.migrationId))
    throw new CliError(
      `send: --migration-id ${JSON.stringify(o.migrationId)} is not allowed: use 1-128 of [A-Za-z0-9._-], not starting with a dot`,
      ExitCode.USAGE,
    )
  const token = tokenFrom(o)
  const bypass = bypassMode(o.bypass)
  // stdout carries nothing here: --stats-json - and --progress json=1 may use it.
  const obs = await startObservation('send', { ...o, metricsId: o.metricsId ?? o.migrationId }, 'network')
  const source: Readable = openInput(input)
  // An already-encoded stream offers exactly its own version (and announces its header). Otherwise the
  // encoder starts only once the receiver has chosen a version, so an older receiver gets a stream it reads.
  const header = o.encoded ? await peekHeader(source) : undefined
  const base =
    o.base?.length && !o.encoded
      ? await prepareEncoderBase(o.base, { cacheBytes: o.cacheSize, mode: o.mode })
      : undefined
  const versions = header ? [header.version] : [...SUPPORTED_VERSIONS]
  // Shallow on purpose: what waits here, in the sender's queue or in socket buffers counts as sent for QEMU's
  // downtime estimate. The encoder sees this queue as its backlog (drainsInto) and keeps it to ~30 ms of link.
  const feed = new PassThrough({ highWaterMark: FEED_QUEUE })
  let enc: EncodeStream | undefined
  let inputError: Error | undefined
  let started = false
  let sent = 0
  feed.on('data', (c: Buffer) => {
    sent += c.length
  })
  const start = (version: number, receiverBase: BaseOffer | undefined) => {
    started = true
    enc = o.encoded
      ? undefined
      : new EncodeStream({
          cacheBytes: o.cacheSize,
          mode: o.mode,
          formatVersion: version,
          compression: o.compression,
          bypass,
          passListener: obs.observer.listener,
          base: agreedBase(base, receiverBase, version, o.stats),
        })
    const e = enc?.drainsInto(feed)
    obs.observer.attach(e ? encoderSource(e.encoder) : bytesSource(() => ({ bytesIn: sent, bytesOut: sent })))
    const done = enc ? pipeline(source, enc, feed) : pipeline(source, feed)
    done.catch((e: Error) => {
      inputError = e
      sender.abort(e.message)
    })
  }
  const sender = createSender(feed, url, {
    token,
    header,
    versions,
    ...(base ? { base: offerOf(base) } : {}),
    ca: o.ca ? readFileSync(o.ca) : undefined,
    maxRate: o.maxRate,
    highWaterBytes: SEND_QUEUE,
    migrationId: o.migrationId,
    zeroMask: o.zeroMask,
    onEvent: (e) => {
      if (e.type === 'connected' && !started) start(e.version, e.base)
      else if (e.type === 'connected') obs.observer.resumed()
      else if (e.type === 'warning') process.stderr.write(`xbzrle send: warning: ${e.message}\n`)
    },
  })
  const progress = obs.bar
    ? new Progress('send', () => ({
        bytesIn: enc?.encoder.stats.bytesIn ?? sent,
        bytesOut: sent,
      }))
    : undefined
  await obs.run(() => finishSend(sender.done))
  async function finishSend(result: typeof sender.done): Promise<void> {
    try {
      const r = await result
      if (o.stats) {
        process.stderr.write(
          `xbzrle send: ${formatBytes(enc?.encoder.stats.bytesIn ?? r.bytes)} in, ${formatBytes(r.bytes)} sent to ${url} (migration ${r.migrationId}, format v${r.version}, ${r.reconnects} reconnects)\n`,
        )
      }
    } catch (e) {
      if (inputError) throw inputError // the input was the problem (e.g. a partial save image), not the peer
      const err = e as Error
      throw new CliError(
        err.message.split('\n')[0]!,
        err.name === 'SendError' ? ExitCode.PEER : ExitCode.INTERNAL,
      )
    } finally {
      progress?.stop()
      if (!started) source.destroy()
    }
  }
}

/** Reads the first encoded chunk, parses the stream header from it, and puts the chunk back. */
async function peekHeader(stream: Readable): Promise<StreamHeaderJson | undefined> {
  const first = await new Promise<Buffer | null>((resolve, reject) => {
    const onReadable = () => {
      const c = stream.read() as Buffer | null
      if (c === null && !stream.readableEnded) return
      cleanup()
      resolve(c)
    }
    const onEnd = () => {
      cleanup()
      resolve(null)
    }
    const onError = (e: Error) => {
      cleanup()
      reject(e)
    }
    const cleanup = () => {
      stream.off('readable', onReadable)
      stream.off('end', onEnd)
      stream.off('error', onError)
    }
    stream.on('readable', onReadable)
    stream.once('end', onEnd)
    stream.once('error', onError)
  })
  if (first === null) return undefined
  stream.unshift(first)
  try {
    const r = new FrameReader()
    r.push(first)
    const item = r.next()
    return item?.type === 'header' ? headerToJson(item.header, item.version) : undefined
  } catch {
    return undefined // not ours to judge here: the receiver's decoder reports a bad stream
  }
}

export interface ReceiveCommandOptions extends ObserveCommandOptions {
  listen: string
  /** The base image this destination holds (then the bases it depends on), offered in every welcome. */
  base?: string[]
  tokenFile?: string
  tokenEnv?: string
  tlsCert?: string
  tlsKey?: string
  allowInsecureNoToken?: boolean
  output?: string
  connect?: string
  once?: boolean
  maxMemory?: number
  maxCache?: number
  /** Milliseconds from TCP accept to an authenticated hello (default 3000). */
  preAuthTimeout?: number
  /** Unauthenticated connections held at once (default 64; the oldest idle one is evicted first). */
  maxPreAuth?: number
  stats?: boolean
}

/** Buffers and windows of one WebSocket session besides the page cache. */
const SESSION_OVERHEAD = 64 << 20

function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s)
  if (!m) throw new CliError(`receive: --listen expects HOST:PORT, got ${s}`, ExitCode.USAGE)
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port: Number(m[3]) }
}

/**
 * The file a migration goes to: `{id}` in the template is replaced by the migration id, and the result must stay
 * inside the directory of the template's part before `{id}` (ids are restricted to a safe charset by the
 * receiver already; this is the second line of defence).
 */
export function outputPath(template: string, migrationId: string): string {
  if (!isSafeMigrationId(migrationId))
    throw new SessionRefusal('BAD_MIGRATION_ID', `migration id ${JSON.stringify(migrationId)} is not allowed`)
  const at = template.indexOf('{id}')
  const path = resolve(template.replaceAll('{id}', migrationId))
  if (at < 0) return path
  const base = resolve(dirname(`${template.slice(0, at)}x`))
  const rel = relative(base, path)
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
    throw new SessionRefusal(
      'BAD_MIGRATION_ID',
      `migration id ${JSON.stringify(migrationId)} would write outside ${base}`,
    )
  return path
}

/**
 * Passes the stream through once its xbzrle header has been read and checked against what the session was
 * admitted with: the page cache it asks for must fit the cache part of the memory budget reserved from the hello
 * (and equal the hello's declared cache, when there was one). Nothing reaches the decoder, and so nothing is
 * allocated, before that check.
 */
export function headerGate(admittedCacheBytes: number, declared: StreamHeaderJson | undefined): Transform {
  const reader = new FrameReader({ acceptCritical: ACCEPTED_CRITICAL })
  const held: Buffer[] = []
  let heldBytes = 0
  let open = false
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (open) return cb(null, chunk)
      held.push(chunk)
      heldBytes += chunk.length
      let item: ReturnType<FrameReader['next']>
      try {
        reader.push(chunk)
        item = reader.next()
      } catch {
        // not ours to judge: the decoder reports a bad stream with its own message
        open = true
        for (const c of held.splice(0)) this.push(c)
        return cb()
      }
      if (item === undefined || item === null) {
        if (heldBytes <= HEADER_LIMIT) return cb()
        return cb(
          new SessionRefusal(
            'STREAM_HEADER_MISMATCH',
            `no xbzrle stream header in the first ${HEADER_LIMIT} bytes`,
          ),
        )
      }
      if (item.type === 'header') {
        const want = item.header.cache.cacheBytes
        const said = declared?.cache.cacheBytes
        if (want > admittedCacheBytes || (said !== undefined && want !== said))
          return cb(
            new SessionRefusal(
              'STREAM_HEADER_MISMATCH',
              `the stream header asks for a ${formatBytes(want)} page cache, but the session was admitted for ${formatBytes(admittedCacheBytes)}${said !== undefined ? ` (the hello declared ${formatBytes(said)})` : ''}`,
            ),
          )
      }
      open = true
      for (const c of held.splice(0)) this.push(c)
      cb()
    },
    flush(cb) {
      for (const c of held.splice(0)) this.push(c)
      cb()
    },
  })
}
const HEADER_LIMIT = 1 << 20

/** Why a migration failed, when the sink knows better than "bad input" (e.g. the destination went away). */
class SinkError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
  ) {
    super(message)
  }
}

/**
 * Decoded stream → the unix socket of a destination QEMU (`-incoming unix:PATH`); QEMU's return path goes back over
 * the WebSocket session untouched. The migration is complete only when the xbzrle stream ended verified (END frame)
 * AND every decoded byte was accepted by the socket. QEMU may close its end once it has loaded the device state,
 * before reading the trailing VMDESCRIPTION: that is fine when everything had been written to the socket by then,
 * and a failure when decoded bytes were still to be written (the destination died or gave up early).
 */
export function qemuSocketSink(
  path: string,
  decode: Readable,
  session: Pick<SessionInfo, 'returnPath'>,
): Promise<void> {
  const sock = connect(path)
  sock.on('data', (b: Buffer) => session.returnPath.write(b))
  let decoded = 0
  let accepted = 0
  let qemuGone = false
  let decodeEnded = false
  let sockFinished = false
  const done = new Promise<void>((resolve, reject) => {
    let settled = false
    const settle = () => {
      if (settled || !decodeEnded || !(qemuGone || sockFinished)) return
      settled = true
      if (accepted === decoded) {
        if (qemuGone && !sockFinished)
          process.stderr.write(
            `xbzrle receive: the destination QEMU closed its socket after ${formatBytes(accepted)}, all of the stream written; the stream was complete and verified\n`,
          )
        resolve()
      } else
        reject(
          new SinkError(
            `the destination closed its socket after taking ${formatBytes(accepted)} of ${formatBytes(decoded)}: the migration is incomplete`,
            ExitCode.IO,
          ),
        )
    }
    const qemuClosed = () => {
      if (qemuGone) return
      qemuGone = true
      decode.resume() // keep decoding (and verifying) what is left, without a place to write it
      settle()
    }
    decode.on('data', (c: Buffer) => {
      decoded += c.length
      if (qemuGone) return
      const ok = sock.write(c, (err) => {
        if (!err) accepted += c.length
      })
      if (!ok) {
        decode.pause()
        sock.once('drain', () => decode.resume())
      }
    })
    decode.once('error', (e) => {
      settled = true
      sock.destroy()
      reject(e)
    })
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET') qemuClosed()
      else if (!settled) {
        settled = true
        decode.destroy(e)
        reject(e)
      }
    })
    sock.once('close', qemuClosed)
    sock.once('finish', () => {
      sockFinished = true
      settle()
    })
    decode.once('end', () => {
      decodeEnded = true
      session.returnPath.end()
      if (qemuGone) settle()
      else sock.end()
    })
  })
  return done
}

interface SinkContext {
  observers: SessionObservers
  /** The base this receiver holds, as named in the welcome. */
  base: BaseOffer | undefined
  o: ReceiveCommandOptions
  /** Destination (resolved file, '-' for stdout, unix:path) → the migration writing it. */
  busy: Map<string, string>
  /** Exit code for a failed migration, when the sink knows it. */
  failureCodes: Map<string, ExitCodeValue>
}

/**
 * The stage before the decoder that gives it this receiver's base once the stream's header names one (BaseGate;
 * the base is verified before the first batch). Logs when the sender offered another base than ours.
 */
function baseStage(
  ctx: SinkContext,
  session: SessionInfo,
  decode: DecodeStream,
  admitted: number,
): Transform {
  const chain = ctx.o.base ?? []
  const theirs = session.base?.fingerprint
  if (theirs && theirs !== ctx.base?.fingerprint)
    process.stderr.write(
      `xbzrle receive: migration ${session.migrationId}: the sender's base ${theirs} is not ours (${ctx.base?.fingerprint ?? 'none'}): it sends without a base\n`,
    )
  return new BaseGate(decode.decoder, (h) => prepareDecoderBase(chain, h, { maxCacheBytes: admitted }))
}

/** The fingerprint of the base a receiver holds: SHA-256 of its original bytes (read once, at start). */
export async function baseOffer(chain: string[]): Promise<BaseOffer> {
  const h = createHash('sha256')
  let bytes = 0
  for await (const b of baseBytes(chain)) {
    h.update(b)
    bytes += b.length
  }
  return { fingerprint: `sha256:${h.digest('hex')}`, bytes }
}

/** Where one decoded migration goes: stdout, a file (atomically), or the unix socket of a destination QEMU. */
async function sink(
  ctx: SinkContext,
  session: SessionInfo,
): Promise<{ writable: Writable; done: Promise<void> }> {
  const { o, busy } = ctx
  const id = session.migrationId
  const dest = o.connect ? o.connect : o.output ? outputPath(o.output, id) : '-'
  const holder = busy.get(dest)
  if (holder !== undefined)
    throw new SessionRefusal(
      'OUTPUT_BUSY',
      `${dest === '-' ? 'stdout' : dest} is in use by migration ${holder}${o.output && !o.output.includes('{id}') ? '; put {id} in -o to receive migrations concurrently' : ''}`,
    )
  busy.set(dest, id)
  const release = () => {
    if (busy.get(dest) === id) busy.delete(dest)
  }
  try {
    const admitted = Math.max(0, session.memoryBytes - SESSION_OVERHEAD)
    const gate = headerGate(admitted, session.header)
    const observer = ctx.observers.begin('receive', id)
    const decode = new DecodeStream({ maxCacheBytes: admitted, passListener: observer.listener })
    observer.attach(decoderSource(decode.decoder))
    const based = baseStage(ctx, session, decode, admitted)
    const track = (p: Promise<void>) => {
      p.then(
        () => {
          release()
          observer.end({ exitCode: ExitCode.OK })
          if (o.statsJson !== undefined) writeStatsJson(o.statsJson.replaceAll('{id}', id), observer)
        },
        (e: unknown) => {
          release()
          if (e instanceof SinkError) ctx.failureCodes.set(id, e.exitCode)
          observer.end({
            exitCode: e instanceof SinkError ? e.exitCode : ExitCode.BAD_INPUT,
            error: (e instanceof Error ? e.message : String(e)).split('\n')[0]!,
          })
        },
      )
      return p
    }
    if (o.connect) {
      gate.on('error', (e) => based.destroy(e))
      based.on('error', (e) => decode.destroy(e))
      gate.pipe(based).pipe(decode)
      const done = qemuSocketSink(o.connect.replace(/^unix:/, ''), decode, session)
      return { writable: gate, done: track(done) }
    }
    if (!o.output) return { writable: gate, done: track(pipeline(gate, based, decode, process.stdout)) }
    const out = await createAtomicOutput(dest)
    const done = (async () => {
      try {
        await pipeline(gate, based, decode, out.stream)
        await out.commit() // the END frame was verified: only now does the file appear under its name
      } catch (e) {
        await out.abort()
        throw e
      }
    })()
    return { writable: gate, done: track(done) }
  } catch (e) {
    release()
    throw e
  }
}

export async function runReceive(o: ReceiveCommandOptions): Promise<void> {
  const { host, port } = parseListen(o.listen)
  const token = tokenFrom(o)
  const toStdout = !o.output && !o.connect
  const once = o.once || toStdout
  let finished: (err?: Error) => void = () => {}
  const allDone = new Promise<void>((resolve, reject) => {
    finished = (err) => (err ? reject(err) : resolve())
  })
  let failures = 0
  let completed = 0
  const observers = await startSessionObservers(o, toStdout ? undefined : 'network')
  const base = o.base?.length ? await baseOffer(o.base) : undefined
  const ctx: SinkContext = { o, observers, base, busy: new Map(), failureCodes: new Map() }
  const pipelines = new Set<Promise<unknown>>()
  const receiver = createReceiver({
    token,
    ...(base ? { base } : {}),
    allowInsecureNoToken: o.allowInsecureNoToken,
    tls: o.tlsCert && o.tlsKey ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) } : undefined,
    // A session needs its cache (from the announced header) plus buffers; the global cap bounds them all. The
    // stream's real header is checked against this budget before the decoder sees it (headerGate).
    memoryCapBytes: o.maxMemory ?? 4 * 2 ** 30,
    maxSessionBytes: (o.maxCache ?? DEFAULT_MAX_DECODER_CACHE) + SESSION_OVERHEAD,
    estimateSessionBytes: (h) => (h.header?.cache.cacheBytes ?? o.maxCache ?? 1 << 30) + SESSION_OVERHEAD,
    ...(o.preAuthTimeout !== undefined ? { preAuthTimeoutMs: o.preAuthTimeout } : {}),
    ...(o.maxPreAuth !== undefined ? { maxPreAuthConnections: o.maxPreAuth } : {}),
    // A migration is over for us once the sender has its final ack (session-end), not when our sink finishes.
    onEvent: (e) => {
      if (e.type === 'session-end') {
        completed++
        if (o.stats)
          process.stderr.write(
            `xbzrle receive: migration ${e.migrationId} done, ${formatBytes(e.bytes)} received\n`,
          )
        if (once) finished()
      } else if (e.type === 'session-error') {
        failures++
        const code = ctx.failureCodes.get(e.migrationId) ?? ExitCode.BAD_INPUT
        ctx.failureCodes.delete(e.migrationId)
        if (once) finished(new CliError(`receive: migration ${e.migrationId} failed: ${e.message}`, code))
        else process.stderr.write(`xbzrle receive: migration ${e.migrationId} failed: ${e.message}\n`)
      } else if (e.type === 'session-resume') {
        observers.resumed('receive', e.migrationId)
      } else if (e.type === 'refused') {
        observers.refused('receive', e.name)
        if (e.name !== 'HANDSHAKE_TIMEOUT')
          process.stderr.write(
            `xbzrle receive: refused ${e.remoteAddress ?? 'a peer'}: ${e.code} ${e.name}: ${e.message}\n`,
          )
      } else if (e.type === 'warning') process.stderr.write(`xbzrle receive: warning: ${e.message}\n`)
    },
    createPipeline: (session) => {
      const p = sink(ctx, session)
      pipelines.add(p.then((s) => s.done).catch(() => {}))
      return p
    },
  })
  let interrupted: NodeJS.Signals | undefined
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(128 + (osConstants.signals[sig] ?? 0)) // a second signal: no more waiting
    interrupted = sig
    const live = receiver.sessions
    const code = (128 + (osConstants.signals[sig] ?? 0)) as ExitCodeValue // the shell's status for a signal
    if (live.length > 0) {
      const m = live[0]!
      const more = live.length > 1 ? ` (and ${live.length - 1} more)` : ''
      finished(
        new CliError(
          `receive: interrupted by ${sig} during migration ${m.migrationId}${more} after ${formatBytes(m.bytes)}; nothing was written under the output name`,
          code,
        ),
      )
    } else if (once && completed === 0)
      finished(new CliError(`receive: interrupted by ${sig} before any migration completed`, code))
    else finished()
  }
  // The handlers go in before "listening on" is printed: whoever reads that line may signal at once, and a signal
  // before them would kill the process with no exit status of ours.
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    const addr = await receiver.listen(host, port)
    if (!toStdout || o.stats)
      process.stderr.write(`xbzrle receive: listening on ${addr.address}:${addr.port}\n`)
    await allDone
  } catch (e) {
    const err = e as Error & { code?: string }
    if (err.code === 'EADDRINUSE') throw new CliError(`receive: ${o.listen} is already in use`, ExitCode.IO)
    throw e
  } finally {
    if (interrupted) await receiver.close()
    else await closeWhenIdle(receiver)
    // every sink has committed or removed its temporary file before we exit
    await Promise.allSettled([...pipelines])
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await observers.close()
  }
  if (failures > 0 && !once)
    throw new CliError(`receive: ${failures} migration(s) failed`, ExitCode.BAD_INPUT)
}

/** Lets the last close handshake finish (the final ack must reach the sender) before closing the server. */
async function closeWhenIdle(receiver: Receiver): Promise<void> {
  const deadline = Date.now() + 2000
  while (receiver.connections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  await receiver.close()
}

/** In-process loopback WebSocket hop for the demo. */
export async function loopbackWebSocket(deliver: (c: Uint8Array) => void) {
  const token = Math.random().toString(36).slice(2) + Date.now().toString(36)
  let resolveDone: () => void = () => {}
  const received = new Promise<void>((r) => {
    resolveDone = r
  })
  const receiver = createReceiver({
    token,
    createPipeline: () => {
      const w = new PassThrough()
      w.on('data', (c: Buffer) => deliver(c))
      w.on('end', () => resolveDone())
      return w
    },
  })
  const addr = await receiver.listen('127.0.0.1', 0)
  const feed = new PassThrough({ highWaterMark: 4 << 20 })
  const sent = sendStream(feed, `ws://127.0.0.1:${addr.port}/demo`, { token, zeroMask: true })
  return {
    async send(c: Uint8Array) {
      if (!feed.write(c)) await new Promise((r) => feed.once('drain', r))
    },
    async end() {
      feed.end()
      await sent
      await received
      await receiver.close()
    },
  }
}
