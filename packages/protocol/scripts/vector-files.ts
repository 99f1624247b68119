// Writes golden vectors of one format version (v2 and later) into vectors/vN/. FROZEN once committed: a vector whose
// files exist is skipped, never overwritten.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ProtocolError } from '../src/errors.js'
import { FrameReader, type ProtocolErrorCode } from '../src/index.js'
import { concat } from '../src/test-util.js'

export interface Vector {
  name: string
  description: string
  xbz: Uint8Array
  orig?: Uint8Array
  expect?: ProtocolErrorCode
}

function run(
  xbz: Uint8Array,
  version: number,
): { error?: ProtocolError; batches: number; totalBytes: number } {
  const r = new FrameReader({ maxVersion: version })
  let batches = 0
  let totalBytes = 0
  try {
    r.push(xbz)
    for (let it = r.next(); it; it = r.next())
      if (it.type === 'batch') {
        batches++
        totalBytes += it.batch.outputLength
      }
    r.finish()
  } catch (e) {
    if (e instanceof ProtocolError) return { error: e, batches, totalBytes }
    throw e
  }
  return { batches, totalBytes }
}

/** Writes the vectors that do not exist yet into `out`, read back with a reader of `version`; returns how many. */
export function writeVectorFiles(out: string, version: number, vectors: readonly Vector[]): number {
  mkdirSync(out, { recursive: true })
  let wrote = 0
  for (const v of vectors) {
    const files = [`${v.name}.xbz`, `${v.name}.json`, `${v.name}.orig`].map((f) => join(out, f))
    if (files.some(existsSync)) {
      console.log(`skip v${version}/${v.name}: exists (vectors are frozen)`)
      continue
    }
    const r = run(v.xbz, version)
    let meta: Record<string, unknown>
    if (v.expect) {
      if (r.error?.code !== v.expect)
        throw new Error(
          `${v.name}: expected ${v.expect}, got ${r.error?.code ?? 'success'} ${r.error?.message ?? ''}`,
        )
      meta = {
        name: v.name,
        version,
        valid: false,
        description: v.description,
        error: { code: r.error.code, message: r.error.message },
      }
    } else {
      if (r.error) throw new Error(`${v.name}: ${r.error.message}`)
      if (r.totalBytes !== v.orig!.length)
        throw new Error(`${v.name}: decodes to ${r.totalBytes}, orig is ${v.orig!.length}`)
      meta = {
        name: v.name,
        version,
        valid: true,
        description: v.description,
        batches: r.batches,
        totalBytes: r.totalBytes,
      }
      writeFileSync(files[2]!, v.orig!)
    }
    writeFileSync(files[0]!, v.xbz)
    writeFileSync(files[1]!, `${JSON.stringify(meta, null, 2)}\n`)
    wrote++
    console.log(`wrote v${version}/${v.name}`)
  }
  return wrote
}

// ---- byte helpers of the vector scripts ----

export const cat = (...parts: Uint8Array[]): Uint8Array => concat(parts)

export const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0))
export const hex = (s: string) =>
  Uint8Array.from(s.split(/\s+/).filter(Boolean), (h) => Number.parseInt(h, 16))
/** QEMU page-record header: be64 (offset | flags [| CONTINUE 0x20 when no name]) [u8 len, name]. */
export function qhdr(offset: number, flags: number, name?: string): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(offset) | BigInt(flags | (name === undefined ? 0x20 : 0)))
  return name === undefined ? b : cat(b, Uint8Array.of(name.length), ascii(name))
}
/** Deterministic pseudo-random bytes (xorshift32): incompressible. */
export function noise(n: number, seed: number): Uint8Array {
  let s = seed | 1
  return Uint8Array.from({ length: n }, () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return s & 0xff
  })
}
