import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { isCompressorAvailable } from '@xbzrle/protocol'
import { describe, expect, it } from 'vitest'
import { loadFixture, randomChunks } from '../test-fixtures.js'
import { XbzrleDecoder } from './decoder.js'
import { XbzrleEncoder } from './encoder.js'
import { EncodeStream } from './streams.js'

const concat = (parts: Uint8Array[]) => Buffer.concat(parts)

/**
 * Encodes `input` in the given chunks with `threads` compression workers (format v2: no random stream id). With
 * `early`, batches start before a worker is up (those are compressed on this thread); else once one is.
 */
async function encode(
  input: Uint8Array,
  threads: number,
  seed: number,
  pages = true,
  early = false,
): Promise<Uint8Array> {
  const out: Uint8Array[] = []
  const enc = new XbzrleEncoder((c) => out.push(c), {
    threads,
    formatVersion: 2,
    batchBytes: 256 * 1024,
    pages,
  })
  if (!early) await enc.startThreads()
  for (const c of randomChunks(input, seed, 3 << 20)) {
    enc.push(c)
    await enc.paced()
    // early: a loop turn per push, so that the workers come up (their 'online' event) in the middle of the stream
    if (early) await new Promise((r) => setImmediate(r))
  }
  enc.finish()
  await enc.settled()
  return concat(out)
}

function decode(stream: Uint8Array): Uint8Array {
  const out: Uint8Array[] = []
  const dec = new XbzrleDecoder((c) => out.push(c.slice()))
  dec.push(stream)
  dec.finish()
  return concat(out)
}

describe.skipIf(!isCompressorAvailable('zstd'))('XbzrleEncoder with compression worker threads', () => {
  it.for(['pc-idle.mig', 'pc-xbzrle-dirty.mig'] as const)(
    '%s: threads 1 and 2 write the bytes of threads 0, which decode to the input',
    async (name) => {
      const input = loadFixture(name)
      const base = await encode(input, 0, 1)
      for (const threads of [1, 2]) {
        const pooled = await encode(input, threads, 7 + threads)
        expect(Buffer.compare(pooled, base)).toBe(0)
        // the first batches on this thread while the workers boot, the rest on them
        const early = await encode(input, threads, 3 + threads, true, true)
        expect(Buffer.compare(early, base)).toBe(0)
      }
      expect(Buffer.compare(decode(base), input)).toBe(0)
    },
  )

  it('pages: false (the libvirt helper on a save) with threads writes the bytes of threads 0', async () => {
    const input = loadFixture('pc-idle.mig')
    const base = await encode(input, 0, 1, false)
    expect(Buffer.compare(await encode(input, 2, 9, false), base)).toBe(0)
    expect(Buffer.compare(decode(base), input)).toBe(0)
  })

  it('starts no worker that no batch could use (a second stage other than zstd)', async () => {
    const enc = new XbzrleEncoder(() => {}, {
      threads: 2,
      formatVersion: 2,
      compression: { codec: 'lz4', level: 1 },
    })
    await enc.startThreads() // resolves at once: there is no pool to wait for
    expect((enc as unknown as { pool: unknown }).pool).toBeUndefined()
    const zstd = new XbzrleEncoder(() => {}, { threads: 1, formatVersion: 2 })
    expect((zstd as unknown as { pool: unknown }).pool).toBeDefined()
    await zstd.close()
  })

  it('EncodeStream ends only after its pooled batches are out', async () => {
    const input = loadFixture('pc-idle.mig')
    const out: Buffer[] = []
    await pipeline(
      Readable.from(randomChunks(input, 3, 1 << 20)),
      new EncodeStream({ threads: 1, formatVersion: 2, batchBytes: 128 * 1024 }),
      new Writable({
        write(c: Buffer, _e, cb) {
          out.push(c)
          cb()
        },
      }),
    )
    // Batch boundaries follow the output's pace here, so compare what it decodes to: everything up to END, which
    // the decoder insists on (a stream that ended before its pooled batches were out would fail here).
    expect(Buffer.compare(decode(concat(out)), input)).toBe(0)
  })
})
