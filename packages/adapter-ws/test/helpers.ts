
import { createHash, type Hash } from 'node:crypto'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { Readable, Writable } from 'node:stream'
import { waitFor } from '@xbzrle/testkit'

export const MiB = 1024 * 1024

/** Deterministic xorshift32 fill. */
function fillPrng(buf: Buffer, seed: number): void {
  let x = seed >>> 0 || 0x9e3779b9
  const u32 = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2)
  for (let i = 0; i < u32.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    u32[i] = x >>> 0
  }
}

const POOL_BYTES = 8 * MiB
const pools = new Map<number, Buffer>()
function pool(seed: number): Buffer {
  let p = pools.get(seed)
  if (!p) {
    p = Buffer.allocUnsafe(POOL_BYTES)
    fillPrng(p, seed)
    pools.set(seed, p)
  }
  return p
}

export interface GeneratedStream {
  readable: Readable
  /** sha256 of everything produced so far (final once the stream ended). */
  digest(): string
  produced(): number
}

/**
 * `total` bytes of pseudo-random data in chunks of varying size (each chunk a fresh Buffer: copied from a seeded
 * pool at a pseudo-random offset, stamped with its index). Never holds more than one chunk.
 */
export function generateStream(total: number, seed = 1, chunkBytes = 256 * 1024): GeneratedStream {
  const src = pool(seed)
  const hash = createHash('sha256')
  let produced = 0
  let i = 0
  const readable = new Readable({
    highWaterMark: chunkBytes,
    read() {
      for (;;) {
        if (produced >= total) {
          this.push(null)
          return
        }
        const varied = chunkBytes - ((i * 7919) % (chunkBytes >> 1))
        const n = Math.min(varied, total - produced)
        const off = (i * 104729 * 64) % (POOL_BYTES - n)
        const chunk = Buffer.allocUnsafe(n)
        src.copy(chunk, 0, off, off + n)
        if (n >= 8) chunk.writeUInt32LE(i, 0)
        i++
        produced += n
        hash.update(chunk)
        if (!this.push(chunk)) return
      }
    },
  })
  let d: string | undefined
  return {
    readable,
    digest: () => {
      d ??= hash.digest('hex')
      return d
    },
    produced: () => produced,
  }
}

export interface HashSink {
  writable: Writable
  bytes(): number
  digest(): string
}

/** A Writable that hashes what it receives; optionally slow (a delay of `delayMs` every `delayEvery` bytes). */
export function hashSink(
  opts: { delayEvery?: number; delayMs?: number; highWaterMark?: number } = {},
): HashSink {
  const hash: Hash = createHash('sha256')
  let bytes = 0
  let sinceDelay = 0
  let d: string | undefined
  const writable = new Writable({
    highWaterMark: opts.highWaterMark ?? MiB,
    write(chunk: Buffer, _enc, cb) {
      hash.update(chunk)
      bytes += chunk.length
      sinceDelay += chunk.length
      if (opts.delayEvery && sinceDelay >= opts.delayEvery) {
        sinceDelay = 0
        setTimeout(cb, opts.delayMs ?? 1)
      } else cb()
    },
  })
  return {
    writable,
    bytes: () => bytes,
    digest: () => {
      d ??= hash.digest('hex')
      return d
    },
  }
}

/** Self-signed certificate for localhost / 127.0.0.1: testkit's, re-exported for this package's tests. */
export { makeCert, type TestCert } from '@xbzrle/testkit'

export interface FaultProxy {
  port: number
  /** Connections cut so far. */
  cuts(): number
  close(): Promise<void>
}

/**
 * TCP proxy on 127.0.0.1 that cuts each connection (both directions, abruptly) after a random number of
 * client→server bytes in [minBytes, maxBytes], up to `maxCuts` times in total; later connections are left alone.
 */
export async function faultProxy(
  targetPort: number,
  opts: { minBytes: number; maxBytes: number; maxCuts: number; seed?: number },
): Promise<FaultProxy> {
  let cuts = 0
  let rnd = opts.seed ?? 12345
  const random = () => {
    rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0
    return rnd / 2 ** 32
  }
  const open = new Set<Socket>()
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort })
    open.add(client)
    open.add(upstream)
    const cutAt = cuts < opts.maxCuts ? opts.minBytes + random() * (opts.maxBytes - opts.minBytes) : Infinity
    let forwarded = 0
    const kill = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('data', (d: Buffer) => {
      forwarded += d.length
      if (forwarded >= cutAt && cuts < opts.maxCuts) {
        cuts++
        kill()
        return
      }
      if (!upstream.write(d)) client.pause()
    })
    upstream.on('drain', () => client.resume())
    upstream.on('data', (d: Buffer) => {
      if (!client.write(d)) upstream.pause()
    })
    client.on('drain', () => upstream.resume())
    client.on('end', () => upstream.end())
    upstream.on('end', () => client.end())
    client.on('error', kill)
    upstream.on('error', kill)
    client.on('close', () => {
      open.delete(client)
      upstream.destroy()
    })
    upstream.on('close', () => {
      open.delete(upstream)
      client.destroy()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as { port: number }).port,
    cuts: () => cuts,
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy()
        server.close(() => r())
      }),
  }
}

/** Resolves when `cond()` is true (polling); testkit's waitFor with this package's argument order. */
export function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  // waitFor resolves with the truthy value; callers here only wait
  return waitFor(cond, what, { timeoutMs, intervalMs: 10 }).then(() => undefined)
}
