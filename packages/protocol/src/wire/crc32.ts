import { createRequire } from 'node:module'
import { crc32 as zlibCrc32 } from 'node:zlib'

type Crc32Fn = (data: Uint8Array, previous?: number) => number

/**
 * The same function twice as fast: @node-rs/crc32 (an optional dependency shipping a prebuilt binary in its npm
 * package) when it loads, else zlib's built-in one. Both compute the zlib CRC-32, so streams are identical.
 */
function loadFastCrc32(): Crc32Fn | undefined {
  try {
    const mod = createRequire(import.meta.url)('@node-rs/crc32') as { crc32: Crc32Fn }
    return mod.crc32(new Uint8Array([1, 2, 3])) === zlibCrc32(new Uint8Array([1, 2, 3]))
      ? mod.crc32
      : undefined
  } catch {
    return undefined
  }
}

/**
 * Loading the addon (a dlopen and its JS glue) takes 8-15 ms, which `xbzrle -c` would pay before its first output
 * byte, where zlib's CRC costs ~0.5 ms a MiB more. So the first NATIVE_AFTER bytes go through zlib and the addon is
 * loaded only once a stream proved long enough to gain from it.
 */
const NATIVE_AFTER = 16 << 20
let impl: Crc32Fn = zlibCrc32
let untilNative = process.env.XBZRLE_CRC32 === 'zlib' ? Number.POSITIVE_INFINITY : NATIVE_AFTER

function implFor(bytes: number): Crc32Fn {
  untilNative -= bytes
  if (untilNative < 0) {
    untilNative = Number.POSITIVE_INFINITY
    impl = loadFastCrc32() ?? zlibCrc32
  }
  return impl
}

/** Which CRC-32 runs large inputs now: zlib's until NATIVE_AFTER bytes went through, then the addon if it loads. */
export function crc32Implementation(): 'node-rs' | 'zlib' {
  return impl === zlibCrc32 ? 'zlib' : 'node-rs'
}

/**
 * CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF): the zlib/PNG/gzip
 * CRC. `crc32(b, crc32(a)) === crc32(a ‖ b)`; `crc32(empty) === 0`.
 */
export function crc32(data: Uint8Array, previous = 0): number {
  // A native call costs ~0.3 µs even for a few bytes: short inputs go through the table loop (same CRC).
  if (data.length < SMALL) return crc32Range(data, 0, data.length, previous)
  return implFor(data.length)(data, previous) >>> 0
}

/** CRC-32 continued by one byte, without allocating (a table step, no native call). */
export function crc32Byte(byte: number, previous = 0): number {
  return crc32ByteSmall(byte, previous)
}

/** `0x1234abcd` style, for messages. */
export function hex32(value: number): string {
  return '0x' + (value >>> 0).toString(16).padStart(8, '0')
}

// ---- combining CRCs (zlib's crc32_combine) and a table CRC for a few bytes ----

const POLY = 0xedb88320

/** a·b modulo the CRC polynomial (bit-reflected), as zlib's multmodp. */
function multmodp(a: number, b: number): number {
  let m = 0x80000000
  let p = 0
  let bb = b >>> 0
  for (;;) {
    if ((a & m) !== 0) {
      p ^= bb
      if ((a & (m - 1)) === 0) break
    }
    m >>>= 1
    bb = bb & 1 ? (bb >>> 1) ^ POLY : bb >>> 1
  }
  return p >>> 0
}

/** x^(2^k) modulo the polynomial, k = 0..31. */
const X2N: number[] = []
{
  let p = 0x40000000 // x^1
  for (let k = 0; k < 32; k++) {
    X2N.push(p)
    p = multmodp(p, p)
  }
}

/** The operator that appends `len` bytes: x^(8·len) modulo the polynomial (zlib's x2nmodp(len, 3)). */
export function crc32Shift(len: number): number {
  let p = 0x80000000 // x^0
  let n = len
  let k = 3
  while (n > 0) {
    if (n % 2 === 1) p = multmodp(X2N[k & 31]!, p)
    n = Math.floor(n / 2)
    k++
  }
  return p
}

/** CRC of `a ‖ b` from `crcA`, `crcB` and a shift operator `crc32Shift(b.length)` (precomputed for a fixed size). */
export function crc32CombineShift(crcA: number, crcB: number, shift: number): number {
  return (multmodp(shift, crcA) ^ crcB) >>> 0
}

/**
 * `crc32Shift(len)` as four byte tables (multiplying by a fixed polynomial is linear): combining with it costs four
 * lookups instead of a 32-step loop. For a length used over and over (the page size).
 */
export function crc32ShiftTable(len: number): Int32Array {
  const shift = crc32Shift(len)
  const t = new Int32Array(1024)
  // Linear over GF(2): the entry of b is the XOR of the entries of its bits, so only the 32 single-bit entries need
  // the 32-step multiply (1,024 of them took ~4 ms of a CLI start, still interpreted by then).
  for (let k = 0; k < 4; k++) {
    const row = k * 256
    for (let b = 1; b < 256; b++) {
      const low = b & -b
      t[row + b] = low === b ? multmodp(shift, (b << (8 * k)) >>> 0) : t[row + low]! ^ t[row + (b ^ low)]!
    }
  }
  return t
}

/** CRC of `a ‖ b` from `crcA`, `crcB` and `crc32ShiftTable(b.length)`. */
export function crc32CombineTable(crcA: number, crcB: number, table: Int32Array): number {
  return (
    (table[crcA & 0xff]! ^
      table[256 + ((crcA >>> 8) & 0xff)]! ^
      table[512 + ((crcA >>> 16) & 0xff)]! ^
      table[768 + (crcA >>> 24)]! ^
      crcB) >>>
    0
  )
}

/** CRC of `a ‖ b` from `crcA`, `crcB` and `b.length`, without touching the bytes (zlib's crc32_combine). */
export function crc32Combine(crcA: number, crcB: number, lenB: number): number {
  return (multmodp(crc32Shift(lenB), crcA) ^ crcB) >>> 0
}

const TABLE = new Int32Array(256)
for (let n = 0; n < 256; n++) {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1
  TABLE[n] = c
}

/** Bytes below which the table loop beats a native call. */
const SMALL = 48

/** `crc32(data.subarray(start, end), previous)`: a table loop for a few bytes (no native call, no view), else native. */
export function crc32Range(data: Uint8Array, start: number, end: number, previous = 0): number {
  if (end - start >= SMALL) return implFor(end - start)(data.subarray(start, end), previous) >>> 0
  let c = ~previous
  for (let i = start; i < end; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

/** `crc32Byte` without a native call. */
export function crc32ByteSmall(byte: number, previous = 0): number {
  const c = ~previous
  return ~(TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8)) >>> 0
}
