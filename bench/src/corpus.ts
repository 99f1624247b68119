/**
 * Stage `corpus`: real QEMU (TCG) migration streams of the testkit guest under several workloads, captured with
 * `exec:cat > FILE`, cached in bench/.cache/corpus/ and regenerated when missing or when their recipe changes.
 */
import { createHash } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { captureMigration, cleanupTestkit, type GuestConfig, startGuest } from '@xbzrle/testkit'
import { CACHE, CLI, ensureDir, fileHash, log, MiB, readJson, run, writeJson } from './util.js'

export interface StreamRecipe {
  name: string
  what: string
  memMiB: number
  append: GuestConfig
  /** Stop the guest, then migrate (a single pass: what `virsh save` writes). */
  paused?: boolean
  maxBandwidth: number
  forceConvergeAfterSyncs?: number
  warmupPasses: number
}

export interface StreamInfo {
  name: string
  what: string
  path: string
  key: string
  bytes: number
  sha256: string
  captureS: number
  qemu: { dirtySyncCount?: number; totalTimeMs?: number; downtimeMs?: number }
  pages: { page: number; zero: number; xbzrle: number; compress: number }
  records: number
  resentPages: number
  resentShare: number
  ramBytes: number
}

/** Full corpus: 160 MiB guests, 128 MiB workload region (≈134 MB of non-zero RAM: every stream ≥ 100 MB). */
export function recipes(quick: boolean): StreamRecipe[] {
  const memMiB = quick ? 40 : 160
  const mem = quick ? 32 : 128
  const bw = 64 * MiB
  const live = (name: string, what: string, append: GuestConfig, syncs: number): StreamRecipe => ({
    name,
    what,
    memMiB,
    append: { mem, ...append },
    maxBandwidth: bw,
    forceConvergeAfterSyncs: syncs,
    warmupPasses: 1,
  })
  return [
    live('sparse', 'live, random 8-byte writes anywhere (20k ops/s)', { workload: 'sparse', rate: 20000 }, 4),
    live('sweep', 'live, one byte per page, sweeping (10k pages/s)', { workload: 'sweep', rate: 10000 }, 4),
    live(
      'hotset',
      'live, 16 bytes in a 16 MiB hot set (4096 pages, 20k ops/s)',
      { workload: 'hotset', rate: 20000, hot: 4096 },
      10,
    ),
    live(
      'text',
      'live, database-like ASCII record updates (20k ops/s)',
      { workload: 'text', rate: 20000 },
      4,
    ),
    live('idle', 'live, idle guest (filled RAM, CPU in hlt)', { workload: 'idle' }, 3),
    {
      name: 'save',
      what: 'paused save: guest stopped, then migrated (single pass, sparse workload)',
      memMiB,
      append: { workload: 'sparse', mem, rate: 20000 },
      paused: true,
      maxBandwidth: 1 << 30,
      warmupPasses: 1,
    },
  ]
}

function recipeKey(r: StreamRecipe): string {
  return createHash('sha256').update(JSON.stringify(r)).digest('hex').slice(0, 12)
}

export function corpusDir(quick: boolean): string {
  return ensureDir(join(CACHE, quick ? 'quick' : '', 'corpus'))
}

interface InspectJson {
  bytes: number
  ramBytes: number
  pages: { page: number; zero: number; xbzrle: number; compress: number }
  resentPages: number
}

async function capture(
  r: StreamRecipe,
  path: string,
): Promise<Omit<StreamInfo, 'pages' | 'records' | 'resentPages' | 'resentShare' | 'ramBytes' | 'sha256'>> {
  const t0 = performance.now()
  const params = { 'max-bandwidth': r.maxBandwidth, 'downtime-limit': 1 }
  let res: Awaited<ReturnType<typeof captureMigration>>
  if (r.paused) {
    const guest = await startGuest({ memMiB: r.memMiB, append: r.append })
    try {
      await guest.waitForReady(120_000)
      await guest.waitForPass(r.warmupPasses, 120_000)
      await guest.stop()
      res = await captureMigration({ guest, out: path, parameters: params, timeoutMs: 600_000 })
    } finally {
      await guest.close({ graceful: false })
    }
  } else {
    res = await captureMigration({
      memMiB: r.memMiB,
      append: r.append,
      out: path,
      parameters: params,
      warmupPasses: r.warmupPasses,
      forceConvergeAfterSyncs: r.forceConvergeAfterSyncs,
      timeoutMs: 600_000,
    })
  }
  return {
    name: r.name,
    what: r.what,
    path,
    key: recipeKey(r),
    bytes: res.bytes,
    captureS: (performance.now() - t0) / 1000,
    qemu: {
      dirtySyncCount: res.stats.dirtySyncCount,
      totalTimeMs: res.stats.totalTimeMs,
      downtimeMs: res.stats.downtimeMs,
    },
  }
}

export async function inspectStream(path: string): Promise<InspectJson> {
  const r = await run('node', [CLI, 'inspect', '--json', path])
  if (r.code !== 0) throw new Error(`xbzrle inspect failed: ${r.stderr}`)
  return JSON.parse(r.stdout) as InspectJson
}

/** Make sure every stream of the corpus exists (capturing the missing ones) and return their descriptions. */
export async function ensureCorpus(opts: {
  quick: boolean
  refresh: boolean
  only?: string[]
}): Promise<StreamInfo[]> {
  const dir = corpusDir(opts.quick)
  const out: StreamInfo[] = []
  try {
    for (const r of recipes(opts.quick)) {
      if (opts.only && !opts.only.includes(r.name)) continue
      const path = join(dir, `${r.name}.mig`)
      const metaPath = join(dir, `${r.name}.json`)
      const meta = readJson<StreamInfo>(metaPath)
      if (
        !opts.refresh &&
        meta &&
        meta.key === recipeKey(r) &&
        existsSync(path) &&
        statSync(path).size === meta.bytes
      ) {
        out.push({ ...meta, path })
        continue
      }
      log(`corpus: capturing ${r.name} (${r.memMiB} MiB guest, ${JSON.stringify(r.append)})`)
      const cap = await capture(r, path)
      const insp = await inspectStream(path)
      const records = insp.pages.page + insp.pages.zero + insp.pages.xbzrle + insp.pages.compress
      const info: StreamInfo = {
        ...cap,
        sha256: await fileHash(path),
        pages: insp.pages,
        records,
        resentPages: insp.resentPages,
        resentShare: records ? insp.resentPages / records : 0,
        ramBytes: insp.ramBytes,
      }
      writeJson(metaPath, info)
      log(
        `corpus: ${r.name} ${(info.bytes / 1e6).toFixed(0)} MB, ${info.qemu.dirtySyncCount} syncs, ` +
          `re-sends ${(info.resentShare * 100).toFixed(0)}%, ${info.captureS.toFixed(1)} s`,
      )
      out.push(info)
    }
  } finally {
    await cleanupTestkit()
  }
  return out
}
