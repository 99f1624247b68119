import { crc32 as zlibCrc32 } from 'node:zlib'

/**
 * CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF): the zlib/PNG/gzip
 * CRC. `crc32(b, crc32(a)) === crc32(a ‖ b)`; `crc32(empty) === 0`.
 */
export function crc32(data: Uint8Array, previous = 0): number {
  return zlibCrc32(data, previous) >>> 0
}

const ONE = new Uint8Array(1)

/** CRC-32 continued by one byte, without allocating. */
export function crc32Byte(byte: number, previous = 0): number {
  ONE[0] = byte
  return zlibCrc32(ONE, previous) >>> 0
}

/** `0x1234abcd` style, for messages. */
export function hex32(value: number): string {
  return '0x' + (value >>> 0).toString(16).padStart(8, '0')
}
