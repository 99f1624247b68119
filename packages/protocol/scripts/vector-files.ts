// Writes the golden vectors of one format version into vectors/vN/, after reading each back with a reader of that
// version. FROZEN once committed: a vector whose files exist is skipped, never overwritten.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ProtocolError } from '../src/errors.js'
import { FrameReader } from '../src/index.js'
import type { Vector } from './vector-kit.js'

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
