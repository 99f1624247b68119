/**
 * The filter's per-page hot path in process, one thread: XbzrleEncoder (format v1 = the XBZRLE stage alone, and
 * the default format) and XbzrleDecoder over a stream held in memory, pushed in 1 MiB chunks, output discarded.
 * CPU time, best of `runs`. `node --import tsx bench/src/hotpath.ts FILE... [--runs N]` prints MB/s.
 */
import { readFileSync } from 'node:fs'
import { XbzrleDecoder, XbzrleEncoder } from '@xbzrle/adapter-libvirt'

const CHUNK = 1 << 20

export interface HotPathFigures {
  inputBytes: number
  /** MB/s of input (encode) or of output (decode), best of the runs. */
  encodeV1: number
  encodeDefault: number
  decodeV1: number
  decodeDefault: number
  /** Encoded sizes, v1 and default. */
  v1Bytes: number
  defaultBytes: number
}

/**
 * Best of `runs`, in CPU seconds (user + system) of this process: on a machine shared with other work, CPU time
 * of a single-threaded loop is far steadier than wall time (the work is the same; waiting for a core is not
 * counted). Includes the page faults of a fresh cache, as a real run has them.
 */
function bestSeconds(runs: number, f: () => void): number {
  let best = Infinity
  for (let i = 0; i < runs; i++) {
    const t0 = process.cpuUsage()
    f()
    const t = process.cpuUsage(t0)
    best = Math.min(best, (t.user + t.system) / 1e6)
  }
  return best
}

function encodeAll(input: Uint8Array, formatVersion?: number): Uint8Array[] {
  const out: Uint8Array[] = []
  const enc = new XbzrleEncoder((c) => out.push(c), formatVersion ? { formatVersion } : {})
  for (let o = 0; o < input.length; o += CHUNK) enc.push(input.subarray(o, o + CHUNK))
  enc.finish()
  return out
}

function concat(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0)
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

function decodeAll(encoded: Uint8Array): number {
  let n = 0
  const dec = new XbzrleDecoder((c) => {
    n += c.length
  })
  for (let o = 0; o < encoded.length; o += CHUNK) dec.push(encoded.subarray(o, o + CHUNK))
  dec.finish()
  return n
}

export function hotPath(input: Uint8Array, runs = 3): HotPathFigures {
  const mbs = (s: number) => input.length / 1e6 / s
  const v1 = concat(encodeAll(input, 1))
  const def = concat(encodeAll(input))
  for (const e of [v1, def])
    if (decodeAll(e) !== input.length) throw new Error('hot path bench: round trip lost bytes')
  return {
    inputBytes: input.length,
    encodeV1: mbs(bestSeconds(runs, () => encodeAll(input, 1))),
    encodeDefault: mbs(bestSeconds(runs, () => encodeAll(input))),
    decodeV1: mbs(bestSeconds(runs, () => decodeAll(v1))),
    decodeDefault: mbs(bestSeconds(runs, () => decodeAll(def))),
    v1Bytes: v1.length,
    defaultBytes: def.length,
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2)
  const ri = args.indexOf('--runs')
  const runs = ri >= 0 ? Number(args.splice(ri, 2)[1]) : 3
  for (const file of args) {
    const f = hotPath(readFileSync(file), runs)
    console.log(
      `${file}: ${(f.inputBytes / 1e6).toFixed(1)} MB  enc v1 ${f.encodeV1.toFixed(0)} MB/s  enc default ${f.encodeDefault.toFixed(0)} MB/s  dec v1 ${f.decodeV1.toFixed(0)} MB/s  dec default ${f.decodeDefault.toFixed(0)} MB/s  (v1 ${(f.v1Bytes / f.inputBytes).toFixed(3)}, default ${(f.defaultBytes / f.inputBytes).toFixed(3)})`,
    )
  }
}
