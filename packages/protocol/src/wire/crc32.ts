import { createRequire } from 'node:module'
import { crc32 as zlibCrc32 } from 'node:zlib'

type Crc32Fn = (data: Uint8Array, previous?: number) => number

/**
 * The same function twice as fast: @node-rs/crc32 (an optional dependency shipping a prebuilt binary in its npm
 * package) when it loads, else zlib's built-in one. Both compute the zlib CRC-32, so streams are identical.
 */
function loadFastCrc32(): Crc32Fn | undefined {
  if (process.env.XBZRLE_CRC32 === 'zlib') return undefined
  try {
    const mod = createRequire(import.meta.url)('@node-rs/crc32') as { crc32: Crc32Fn }
    return mod.crc32(new Uint8Array([1, 2, 3])) === zlibCrc32(new Uint8Array([1, 2, 3]))
      ? mod.crc32
      : undefined
  } catch {
    return undefined
  }
}

const impl: Crc32Fn = loadFastCrc32() ?? zlibCrc32
export const crc32Implementation: 'node-rs' | 'zlib' = impl === zlibCrc32 ? 'zlib' : 'node-rs'

/**
 * CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF): the zlib/PNG/gzip
 * CRC. `crc32(b, crc32(a)) === crc32(a ‖ b)`; `crc32(empty) === 0`.
 */
export function crc32(data: Uint8Array, previous = 0): number {
  return impl(data, previous) >>> 0
}

const ONE = new Uint8Array(1)

/** CRC-32 continued by one byte, without allocating. */
export function crc32Byte(byte: number, previous = 0): number {
  ONE[0] = byte
  return impl(ONE, previous) >>> 0
}

/** `0x1234abcd` style, for messages. */
export function hex32(value: number): string {
  return '0x' + (value >>> 0).toString(16).padStart(8, '0')
}
