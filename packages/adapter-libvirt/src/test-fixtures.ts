// Test-only helpers: load the real QEMU 7.2 captures committed under fixtures/ (zstd-compressed).
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { decompress } from 'fzstd'

export const FIXTURES = [
  'pc-idle.mig',
  'q35-idle.mig',
  'pc23-idle.mig',
  'pc22-idle.mig',
  'pc-ignshared.mig',
  'pc-xbzrle-dirty.mig',
  'postcopy-c0.s2d',
  'plain-c0.s2d',
  'multifd-c0.s2d',
] as const
export type FixtureName = (typeof FIXTURES)[number] | 'postcopy-c0.d2s'

const cache = new Map<string, Uint8Array>()

export function loadFixture(name: FixtureName): Uint8Array {
  let data = cache.get(name)
  if (!data) {
    const path = fileURLToPath(new URL(`../fixtures/qemu-7.2/${name}.zst`, import.meta.url))
    data = decompress(readFileSync(path))
    cache.set(name, data)
  }
  return data
}

/** Splits data into chunks of pseudo-random sizes in [1, max] (deterministic from seed). */
export function* randomChunks(data: Uint8Array, seed: number, max: number): Generator<Uint8Array> {
  let s = seed >>> 0 || 1
  for (let off = 0; off < data.length; ) {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    const n = 1 + (s % max)
    yield data.subarray(off, off + n)
    off += n
  }
}
