// The vector definitions (scripts/vectors-vN.ts) still produce, byte for byte, every committed golden vector: the
// generator can be refactored, but a change that would write a frozen vector differently fails here.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { Vector } from '../scripts/vector-kit.js'
import { v1Vectors } from '../scripts/vectors-v1.js'
import { v2Vectors } from '../scripts/vectors-v2.js'
import { v3Vectors } from '../scripts/vectors-v3.js'
import { sameBytes } from './test-util.js'
import { isCompressorAvailable } from './v2/codecs.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'vectors')
const needsAllCodecs = !isCompressorAvailable('lz4') || !isCompressorAvailable('zstd')

describe.each([
  [1, v1Vectors, false],
  [2, v2Vectors, needsAllCodecs],
  [3, v3Vectors, false],
] as const)('vector definitions v%i', (version, define, skip) => {
  it.skipIf(skip)('reproduce the committed files', () => {
    const vectors: Vector[] = define()
    expect(vectors.length).toBeGreaterThan(0)
    for (const v of vectors) {
      const base = join(root, `v${version}`, v.name)
      const meta = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as { description: string; valid: boolean }
      expect(meta.description, v.name).toBe(v.description)
      expect(meta.valid, v.name).toBe(v.expect === undefined)
      expect(sameBytes(v.xbz, readFileSync(`${base}.xbz`)), `${v.name}.xbz`).toBe(true)
      if (v.orig) expect(sameBytes(v.orig, readFileSync(`${base}.orig`)), `${v.name}.orig`).toBe(true)
    }
  })
})
