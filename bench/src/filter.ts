/**
 * Stage `filter`: every stream of the corpus through xbzrle encode/decode and through the Debian compressors the
 * way libvirt runs them (`prog -c < in > out`, `prog -dc < out > back`), each child measured with GNU time
 * (wall, user+sys CPU, peak RSS). Every round trip is verified by SHA-256 against the original stream.
 */
import { rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { type Breakdown, breakdown } from './breakdown.js'
import type { StreamInfo } from './corpus.js'
import { type IdealResult, idealXbzrle } from './ideal.js'
import { CACHE, CLI, ensureDir, fileHash, log, shq, type Timed, timed } from './util.js'

export interface Tool {
  name: string
  /** Shell command reading the input on stdin, writing to stdout. */
  enc: string
  dec: string
}

const xb = `node ${shq(CLI)}`

export const TOOLS: Tool[] = [
  { name: 'xbzrle', enc: `${xb} -c`, dec: `${xb} -dc` },
  // The XBZRLE stage alone: format v1 has no second-stage compressor (v2 adds one per batch). This is the row
  // that is compared with the ideal unbounded-cache XBZRLE model.
  { name: 'xbzrle v1', enc: `${xb} encode --format-version 1`, dec: `${xb} -dc` },
  { name: 'lzop -1', enc: 'lzop -1 -c', dec: 'lzop -dc' },
  { name: 'lz4 -1', enc: 'lz4 -1 -c -q', dec: 'lz4 -dc -q' },
  { name: 'zstd -1', enc: 'zstd -1 -c -q', dec: 'zstd -dc -q' },
  { name: 'gzip -1', enc: 'gzip -1 -c', dec: 'gzip -dc' },
  { name: 'xbzrle + zstd -1', enc: `${xb} -c | zstd -1 -c -q`, dec: `zstd -dc -q | ${xb} -dc` },
]

export interface ToolRun {
  tool: string
  /** Set when the tool failed (non-zero exit or a round trip that is not byte-exact); the numbers are then 0. */
  error?: string
  outBytes: number
  ratio: number
  enc: Timed
  dec: Timed
  verified: boolean
}

export interface FilterStreamResult {
  stream: string
  bytes: number
  resentShare: number
  runs: ToolRun[]
  ideal: IdealResult
  /** In-process CPU seconds of the filter's parts on this stream (see breakdown.ts). */
  breakdown?: Breakdown
}

export async function runFilter(
  streams: StreamInfo[],
  opts: { tools?: string[]; repeat: number },
): Promise<FilterStreamResult[]> {
  const tmp = ensureDir(join(CACHE, 'tmp'))
  const results: FilterStreamResult[] = []
  for (const s of streams) {
    // Warm the page cache and check the corpus file is what its manifest says.
    const h = await fileHash(s.path)
    if (h !== s.sha256)
      throw new Error(`corpus stream ${s.path} changed on disk (hash mismatch): rerun with --refresh-corpus`)
    const runs: ToolRun[] = []
    let parts: Breakdown | undefined
    for (const t of TOOLS) {
      if (opts.tools && !opts.tools.includes(t.name)) continue
      const out = join(tmp, `${s.name}.out`)
      const back = join(tmp, `${s.name}.back`)
      let best: ToolRun | undefined
      let failed: ToolRun | undefined
      for (let i = 0; i < opts.repeat; i++) {
        let r: ToolRun
        try {
          const enc = await timed(`{ ${t.enc} ; } < ${shq(s.path)} > ${shq(out)}`)
          const outBytes = statSync(out).size
          const dec = await timed(`{ ${t.dec} ; } < ${shq(out)} > ${shq(back)}`)
          const verified = (await fileHash(back)) === s.sha256
          r = { tool: t.name, outBytes, ratio: outBytes / s.bytes, enc, dec, verified }
          if (!verified) r.error = 'round trip is NOT byte-exact'
        } catch (e) {
          const zero: Timed = { wallS: 0, cpuS: 0, userS: 0, sysS: 0, maxRssKiB: 0 }
          r = { tool: t.name, outBytes: 0, ratio: 0, enc: zero, dec: zero, verified: false }
          r.error = (e as Error).message.split('\n').slice(0, 3).join(' ').slice(0, 300)
        } finally {
          rmSync(back, { force: true })
        }
        if (r.error) {
          failed = r
          break
        }
        // Keep the fastest run (least CPU) of the repeats: the least disturbed by the other core's activity.
        if (!best || r.enc.cpuS + r.dec.cpuS < best.enc.cpuS + best.dec.cpuS) best = r
      }
      if (failed) {
        rmSync(out, { force: true })
        log(`filter: ${s.name} ${t.name}: FAILED: ${failed.error}`)
        runs.push(failed)
        continue
      }
      if (t.name === 'xbzrle') parts = await breakdown(s.path, out)
      rmSync(out, { force: true })
      const r = best!
      log(
        `filter: ${s.name} ${t.name}: ratio ${r.ratio.toFixed(4)}, enc ${(s.bytes / 1e6 / r.enc.cpuS).toFixed(0)} MB/s cpu ` +
          `(${r.enc.wallS.toFixed(2)} s wall, ${(r.enc.maxRssKiB / 1024).toFixed(0)} MiB), dec ${(s.bytes / 1e6 / r.dec.cpuS).toFixed(0)} MB/s cpu, verified`,
      )
      runs.push(r)
    }
    const ideal = await idealXbzrle(s.path)
    log(
      `filter: ${s.name} ideal: payload ratio ${(ideal.payload / s.bytes).toFixed(4)}, framed ${(ideal.framed / s.bytes).toFixed(4)}`,
    )
    results.push({
      stream: s.name,
      bytes: s.bytes,
      resentShare: s.resentShare,
      runs,
      ideal,
      breakdown: parts,
    })
  }
  return results
}
