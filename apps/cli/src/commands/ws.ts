import { createWriteStream, readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { PassThrough, type Readable, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { DEFAULT_MAX_DECODER_CACHE, DecodeStream, EncodeStream, IO_CHUNK } from '@xbzrle/adapter-libvirt'
import {
  createReceiver,
  createSender,
  loadToken,
  type Receiver,
  type SessionInfo,
  sendStream,
} from '@xbzrle/adapter-ws'
import {
  type Compression,
  FrameReader,
  headerToJson,
  type StreamHeaderJson,
  SUPPORTED_VERSIONS,
} from '@xbzrle/protocol'
import { CliError, ExitCode } from '../errors.js'
import { formatBytes, openInput } from '../io.js'
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

export interface SendCommandOptions {
  tokenFile?: string
  tokenEnv?: string
  ca?: string
  maxRate?: number
  migrationId?: string
  encoded?: boolean
  cacheSize?: number
  mode?: 'canonical' | 'compact'
  zeroMask?: boolean
  compression?: Compression
  stats?: boolean
}

export async function runSend(url: string, input: string | undefined, o: SendCommandOptions): Promise<void> {
  if (!/^wss?:\/\//.test(url))
    throw new CliError(`send: expected a ws:// or wss:// URL, got ${url}`, ExitCode.USAGE)
  const token = tokenFrom(o)
  const source: Readable = openInput(input)
  // An already-encoded stream offers exactly its own version (and announces its header). Otherwise the
  // encoder starts only once the receiver has chosen a version, so an older receiver gets a stream it reads.
  const header = o.encoded ? await peekHeader(source) : undefined
  const versions = header ? [header.version] : [...SUPPORTED_VERSIONS]
  const feed = new PassThrough({ highWaterMark: IO_CHUNK })
  let enc: EncodeStream | undefined
  let inputError: Error | undefined
  let started = false
  let sent = 0
  feed.on('data', (c: Buffer) => {
    sent += c.length
  })
  const start = (version: number) => {
    started = true
    enc = o.encoded
      ? undefined
      : new EncodeStream({
          cacheBytes: o.cacheSize,
          mode: o.mode,
          formatVersion: version,
          compression: o.compression,
        })
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
    ca: o.ca ? readFileSync(o.ca) : undefined,
    maxRate: o.maxRate,
    migrationId: o.migrationId,
    zeroMask: o.zeroMask,
    onEvent: (e) => {
      if (e.type === 'connected' && !started) start(e.version)
    },
  })
  const progress = new Progress('send', () => ({
    bytesIn: enc?.encoder.stats.bytesIn ?? sent,
    bytesOut: sent,
  }))
  try {
    const r = await sender.done
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
    progress.stop()
    if (!started) source.destroy()
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

export interface ReceiveCommandOptions {
  listen: string
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
 * Decoded stream → the unix socket of a destination QEMU (`-incoming unix:PATH`); QEMU's return path goes back over
 * the WebSocket session untouched. QEMU closes its end once it has loaded the device state, possibly before it has
 * read the trailing VMDESCRIPTION: a close by QEMU is therefore not an error as long as the xbzrle stream itself
 * was complete and verified (QEMU reports its own load status); the rest is drained and still checked.
 */
function qemuSocketSink(
  path: string,
  decode: DecodeStream,
  session: SessionInfo,
): { writable: Writable; done: Promise<void> } {
  const sock = connect(path)
  sock.on('data', (b: Buffer) => session.returnPath.write(b))
  let written = 0
  let qemuGone = false
  const done = new Promise<void>((resolve, reject) => {
    const qemuClosed = () => {
      if (qemuGone) return
      qemuGone = true
      decode.unpipe(sock)
      decode.resume() // keep decoding (and verifying) what is left, without a place to write it
    }
    decode.on('data', (c: Buffer) => {
      if (!qemuGone) written += c.length
    })
    decode.once('error', (e) => {
      sock.destroy()
      reject(e)
    })
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET') qemuClosed()
      else {
        decode.destroy(e)
        reject(e)
      }
    })
    sock.once('close', qemuClosed)
    decode.once('end', () => {
      session.returnPath.end()
      if (qemuGone) {
        process.stderr.write(
          `xbzrle receive: the destination QEMU closed its socket after ${formatBytes(written)}; the stream was complete and verified\n`,
        )
        resolve()
      } else sock.once('finish', resolve)
    })
    decode.pipe(sock)
  })
  return { writable: decode, done }
}

/** Where one decoded migration goes: stdout, a file, or the unix socket of a destination QEMU. */
function sink(o: ReceiveCommandOptions, session: SessionInfo): { writable: Writable; done: Promise<void> } {
  const decode = new DecodeStream({ maxCacheBytes: o.maxCache })
  if (o.connect) return qemuSocketSink(o.connect.replace(/^unix:/, ''), decode, session)
  const out = o.output ? createWriteStream(o.output.replaceAll('{id}', session.migrationId)) : process.stdout
  return { writable: decode, done: pipeline(decode, out) }
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
  const receiver = createReceiver({
    token,
    allowInsecureNoToken: o.allowInsecureNoToken,
    tls: o.tlsCert && o.tlsKey ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) } : undefined,
    // A session needs its cache (from the announced header) plus buffers; the global cap bounds them all.
    memoryCapBytes: o.maxMemory ?? 4 * 2 ** 30,
    maxSessionBytes: (o.maxCache ?? DEFAULT_MAX_DECODER_CACHE) + SESSION_OVERHEAD,
    estimateSessionBytes: (h) => (h.header?.cache.cacheBytes ?? o.maxCache ?? 1 << 30) + SESSION_OVERHEAD,
    // A migration is over for us once the sender has its final ack (session-end), not when our sink finishes.
    onEvent: (e) => {
      if (e.type === 'session-end') {
        if (o.stats)
          process.stderr.write(
            `xbzrle receive: migration ${e.migrationId} done, ${formatBytes(e.bytes)} received\n`,
          )
        if (once) finished()
      } else if (e.type === 'session-error') {
        failures++
        process.stderr.write(`xbzrle receive: migration ${e.migrationId} failed: ${e.message}\n`)
        if (once)
          finished(
            new CliError(`receive: migration ${e.migrationId} failed: ${e.message}`, ExitCode.BAD_INPUT),
          )
      }
    },
    createPipeline: (session) => sink(o, session),
  })
  try {
    const addr = await receiver.listen(host, port)
    if (!toStdout || o.stats)
      process.stderr.write(`xbzrle receive: listening on ${addr.address}:${addr.port}\n`)
    const stop = () => finished()
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    await allDone
  } catch (e) {
    const err = e as Error & { code?: string }
    if (err.code === 'EADDRINUSE') throw new CliError(`receive: ${o.listen} is already in use`, ExitCode.IO)
    throw e
  } finally {
    await closeWhenIdle(receiver)
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
