import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ModelDecoder, readStream, sameBytes } from './test-util.js'
import { crc32 } from './wire/crc32.js'

// Every committed golden vector of every format version directory (vectors/v1, vectors/v2, …).
const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'vectors')
const dirs = readdirSync(root).filter((d) => /^v\d+$/.test(d))

interface Meta {
  name: string
  valid: boolean
  description: string
  error?: { code: string; message: string }
  batches?: number
  totalBytes?: number
}

describe.each(dirs)('golden vectors %s', (dir) => {
  const maxVersion = Number(dir.slice(1))
  const names = readdirSync(join(root, dir))
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort()

  it('has vectors', () => expect(names.length).toBeGreaterThan(0))

  it.each(names)('%s', (name) => {
    const base = join(root, dir, name)
    const meta = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as Meta
    const xbz = new Uint8Array(readFileSync(`${base}.xbz`))
    const opts = { maxVersion }
    if (!meta.valid) {
      expect(existsSync(`${base}.orig`)).toBe(false)
      for (const chunk of [xbz.length || 1, 1, 7]) {
        const r = readStream(xbz, chunk, opts)
        expect(r.error?.code, `chunk ${chunk}`).toBe(meta.error!.code)
        expect(r.error?.message, `chunk ${chunk}`).toBe(meta.error!.message)
      }
      return
    }
    const orig = new Uint8Array(readFileSync(`${base}.orig`))
    for (const chunk of [xbz.length || 1, 1, 4096]) {
      const r = readStream(xbz, chunk, opts)
      expect(r.error, `chunk ${chunk}`).toBeUndefined()
      // Integrity data matches consecutive slices of the original bytes (no codec needed).
      let at = 0
      let batches = 0
      for (const it of r.items) {
        if (it.type === 'batch') {
          const slice = orig.subarray(at, at + it.batch.outputLength)
          expect(slice.length).toBe(it.batch.outputLength)
          expect(crc32(slice)).toBe(it.batch.outputCrc)
          at += it.batch.outputLength
          batches++
        } else if (it.type === 'end') {
          expect(it.end.totalBytes).toBe(orig.length)
          expect(it.end.batches).toBe(batches)
        }
      }
      expect(at).toBe(orig.length)
      expect(batches).toBe(meta.batches)
      // And the test model decoder (unbounded cache, reference XBZRLE) reproduces the original exactly.
      const m = new ModelDecoder()
      for (const it of r.items) m.feed(it)
      expect(sameBytes(m.output(), orig)).toBe(true)
    }
  })
})
