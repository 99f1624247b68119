import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ProtocolError, streamError } from '../errors.js'
import { FrameReader } from '../reader.js'
import { collect, HEADER, readStream } from '../test-util.js'
import * as v1 from '../v1/index.js'
import * as v2 from '../v2/index.js'
import { FrameWriter } from '../writer.js'

const vectors = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'vectors')
const vector = (dir: string, name: string) => new Uint8Array(readFileSync(join(vectors, dir, `${name}.xbz`)))

describe('ProtocolError carries its parts', () => {
  it('streamError fills code, offset, what and hint; the message is built from them', () => {
    const e = streamError('CHECKSUM', 'batch 3 checksum mismatch', 1048612)
    expect(e).toMatchObject({ code: 'CHECKSUM', offset: 1048612, what: 'batch 3 checksum mismatch' })
    expect(e.hint).toBe('corrupted or truncated input')
    expect(e.message).toBe(
      'xbzrle stream: batch 3 checksum mismatch at offset 1048612 (corrupted or truncated input)',
    )
    expect(ProtocolError.stream('TRUNCATED', 'empty input').message).toBe(
      'xbzrle stream: empty input (incomplete input)',
    )
  })

  it('the old constructor keeps working: what = the message, no hint', () => {
    const e = new ProtocolError('LIMIT', 'xbzrle stream: needs a big cache (raise --max-cache)')
    expect(e).toMatchObject({
      code: 'LIMIT',
      offset: -1,
      what: e.message,
      hint: undefined,
      name: 'ProtocolError',
    })
  })

  it('an error inside decompressed frames names the frame position in `what`, the batch offset in `offset`', () => {
    const r = readStream(vector('v2', 'compressed-unknown-frame-kind'), undefined, { maxVersion: 2 })
    expect(r.error).toMatchObject({
      code: 'MALFORMED',
      offset: 48,
      what: 'batch 0: unknown frame kind 0x09 (byte 0 of the decompressed frames)',
      hint: 'corrupted input or not written by a conforming encoder',
    })
  })

  it('a critical extension is refused naming the version of the stream', () => {
    const { w, bytes } = collect(undefined, 2)
    w.header({
      ...HEADER,
      compression: { codec: 'none' },
      extensions: [{ type: 9, critical: true, data: new Uint8Array(0) }],
    })
    w.end()
    expect(readStream(bytes(), undefined, {}).error?.what).toBe(
      'header carries critical extension 9, unknown to this reader (format version 2)',
    )
  })
})

describe('one record layer', () => {
  it('every reader and writer is the same class underneath', () => {
    const proto = (o: object) => Object.getPrototypeOf(Object.getPrototypeOf(o))
    const readers = [new FrameReader(), new v1.FrameReader(), new v2.FrameReader()]
    expect(new Set(readers.map(proto)).size).toBe(1)
    const writers = [
      new FrameWriter({ onChunk: () => {} }),
      new v1.FrameWriter({ onChunk: () => {} }),
      new v2.FrameWriter({ onChunk: () => {} }),
    ]
    expect(new Set(writers.map(proto)).size).toBe(1)
  })

  it('frames are plain Uint8Array views in every version, also when the chunks are Buffers', () => {
    for (const version of [1, 2] as const) {
      const { w, bytes } = collect(undefined, version)
      w.header(version === 2 ? { ...HEADER, compression: { codec: 'none' } } : HEADER)
      w.verbatim(Uint8Array.of(1, 2, 3))
      w.end()
      const r = new FrameReader()
      const buf = Buffer.from(bytes())
      r.push(buf)
      const frames = []
      for (let it = r.next(); it; it = r.next()) if (it.type === 'batch') frames.push(...it.batch.frames())
      const f = frames[0]!
      expect(f.kind === 'verbatim' && Object.getPrototypeOf(f.bytes)).toBe(Uint8Array.prototype)
      expect(f.kind === 'verbatim' && f.bytes.buffer).toBe(buf.buffer)
    }
  })

  it('a v2 writer stores plain batches in place; chunks are exactly their records, owned by the caller', () => {
    const chunks: Uint8Array[] = []
    const w = new FrameWriter({ onChunk: (c) => chunks.push(c), batchBytes: 512 * 1024 })
    w.header({ ...HEADER, compression: { codec: 'none' } })
    w.verbatim(new Uint8Array(512 * 1024))
    w.end()
    expect(w.batchStats).toEqual({
      plain: 1,
      compressed: 0,
      frameBytes: 512 * 1024 + 4,
      payloadBytes: 512 * 1024 + 4,
    })
    // every chunk has its own exactly sized buffer: keeping it pins nothing else, and the writer never touches it
    for (const c of chunks) expect(c.buffer.byteLength).toBe(c.length)
    expect(new Set(chunks.map((c) => c.buffer)).size).toBe(chunks.length)
  })
})
