/**
 * xbzrle benchmarks. `npm run bench -w @xbzrle/bench [-- flags]`:
 *
 *   --only corpus,filter,live,live-big,compress,codec,libvirt
 *                                     stages to run (default: all). The report is always rewritten from the
 *                                     latest results of every stage (bench/results/*.json, kept in git so that
 *                                     one stage can be re-run alone and the report keeps the others).
 *   --quick                           small smoke run (40 MiB guests, 1 live run); results and report go to
 *                                     bench/.cache/quick/ and never touch BENCHMARKS.md
 *   --refresh-corpus                  recapture the streams even when cached
 *   --streams sparse,text             subset of the corpus
 *   --runs N                          live migrations per setup and link (default 3)
 *   --links 8,32,1g,0                 link rates in MiB/s, 1g = 1 Gbit/s, 0 = no limit (default 8,32,1g,0)
 *   --big-links 32                    link rates of the live-big stage (512 MiB guest; default 32)
 *   --limits 300,50                   QEMU downtime-limits in ms (default 300,50)
 *   --setups 'plain,xbzrle filter'    only these live setups
 *   --repeat N                        filter runs per tool and stream, the least-CPU one is kept (default 1)
 *   --libvirt-rounds N                virsh save/restore rounds per helper and guest in the libvirt stage
 *                                     (default: each guest's, 9)
 *   --report-only                     only rewrite the report from stored results
 */

import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { runCompress } from './compress.js'
import { ensureCorpus, type StreamInfo } from './corpus.js'
import { type FilterStreamResult, runFilter } from './filter.js'
import { runLibvirt } from './libvirt.js'
import { BIG_SETUPS, bigGuest, type LiveRun, runLive } from './live.js'
import { machineInfo } from './machine.js'
import { GBIT_MIBS } from './netlink.js'
import { writeReport } from './report.js'
import { CACHE, ensureTools, log, ROOT, readJson, writeJson } from './util.js'

type Stage = 'corpus' | 'filter' | 'live' | 'live-big' | 'compress' | 'codec' | 'libvirt'
const STAGES: Stage[] = ['corpus', 'filter', 'live', 'live-big', 'compress', 'codec', 'libvirt']

/** `8,32,1g,0`: MiB/s, 1g = 1 Gbit/s, 0 = no limit. */
function parseLinks(list: string): number[] {
  return list.split(',').map((x) => (x === '1g' ? GBIT_MIBS : Number(x)))
}

function parseArgs(argv: string[]) {
  const o = {
    only: STAGES as Stage[],
    quick: false,
    refresh: false,
    streams: undefined as string[] | undefined,
    runs: undefined as number | undefined,
    links: [8, 32, GBIT_MIBS, 0],
    bigLinks: [32],
    limits: undefined as number[] | undefined,
    setups: undefined as string[] | undefined,
    repeat: 1,
    libvirtRounds: undefined as number | undefined,
    reportOnly: false,
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const val = () => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${a} needs a value`)
      return v
    }
    if (a === '--only') {
      const list = val().split(',') as Stage[]
      for (const s of list)
        if (!STAGES.includes(s)) throw new Error(`--only: unknown stage ${s} (${STAGES.join('|')})`)
      o.only = list
    } else if (a === '--quick') o.quick = true
    else if (a === '--refresh-corpus') o.refresh = true
    else if (a === '--streams') o.streams = val().split(',')
    else if (a === '--runs') o.runs = Number(val())
    else if (a === '--links') o.links = parseLinks(val())
    else if (a === '--big-links') o.bigLinks = parseLinks(val())
    else if (a === '--limits') o.limits = val().split(',').map(Number)
    else if (a === '--setups') o.setups = val().split(',')
    else if (a === '--repeat') o.repeat = Number(val())
    else if (a === '--libvirt-rounds') o.libvirtRounds = Number(val())
    else if (a === '--report-only') o.reportOnly = true
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: npm run bench -w @xbzrle/bench -- [--only corpus,filter,live,live-big,compress,codec,libvirt] [--quick] [--refresh-corpus] [--streams a,b] [--runs N] [--links 8,32,1g,0] [--big-links 32] [--limits 300,50] [--setups a,b] [--repeat N] [--libvirt-rounds N] [--report-only]',
      )
      process.exit(0)
    } else throw new Error(`unknown argument ${a}`)
  }
  return o
}

const opts = parseArgs(process.argv.slice(2))
const resultsDir = opts.quick ? join(CACHE, 'quick', 'results') : join(ROOT, 'bench', 'results')
const t0 = performance.now()
const has = (s: Stage) => !opts.reportOnly && opts.only.includes(s)

ensureTools(['/usr/bin/time', 'lzop', 'lz4', 'zstd', 'gzip', 'pv', 'socat', 'qemu-system-x86_64', 'gcc'])

// The filter rows run the built CLI (apps/cli/bin/xbzrle.js → its dist/xbzrle.mjs bundle). turbo builds this
// workspace's dependencies before `bench`, but the CLI is not one of them: bring its dist and bundle up to date.
if (has('filter') || has('live') || has('live-big') || has('corpus') || has('libvirt')) {
  const r = spawnSync('npm', ['run', 'build', '-w', 'xbzrle'], { cwd: ROOT, encoding: 'utf8' })
  if (r.status !== 0)
    log(`warning: building apps/cli failed, using its existing dist:\n${r.stdout}${r.stderr}`)
}

let streams: StreamInfo[] | undefined
if (has('corpus') || has('filter')) {
  const ts = performance.now()
  streams = await ensureCorpus({ quick: opts.quick, refresh: opts.refresh, only: opts.streams })
  const prev = readJson<{ streams: StreamInfo[] }>(join(resultsDir, 'corpus.json'))
  // Merge with previously recorded streams when only a subset was asked for.
  const merged = new Map((prev?.streams ?? []).map((s) => [s.name, s]))
  for (const s of streams) merged.set(s.name, s)
  writeJson(join(resultsDir, 'corpus.json'), {
    streams: [...merged.values()],
    stageS: (performance.now() - ts) / 1000,
  })
}

if (has('filter')) {
  const ts = performance.now()
  const res = await runFilter(streams!, { repeat: opts.repeat })
  const prev = readJson<{ results: FilterStreamResult[] }>(join(resultsDir, 'filter.json'))
  const merged = new Map((prev?.results ?? []).map((r) => [r.stream, r]))
  for (const r of res) merged.set(r.stream, r)
  writeJson(join(resultsDir, 'filter.json'), {
    machine: machineInfo(),
    results: [...merged.values()],
    stageS: (performance.now() - ts) / 1000,
  })
}

/** One live stage: `live` (the test guest over every link) or `live-big` (issue #14's 512 MiB guest). */
async function liveStage(file: string, o: Pick<Parameters<typeof runLive>[0], 'links' | 'setups' | 'guest'>) {
  const r = await runLive({
    quick: opts.quick,
    runs: opts.runs ?? (opts.quick ? 1 : 3),
    limits: opts.limits,
    ...o,
  })
  // Only some setups run (--setups): earlier runs of the other setups, links and limits stay in the file.
  const prev = opts.setups ? readJson<{ runs: LiveRun[] }>(join(resultsDir, file)) : undefined
  const key = (x: LiveRun) => `${x.setup}|${x.linkMiBs}|${x.limitMs ?? 300}`
  const fresh = new Set(r.runs.map(key))
  const kept = (prev?.runs ?? []).filter((x) => !fresh.has(key(x)))
  writeJson(join(resultsDir, file), { machine: machineInfo(), ...r, runs: [...kept, ...r.runs] })
}

if (has('live')) await liveStage('live.json', { links: opts.links, setups: opts.setups })
if (has('live-big'))
  await liveStage('live-big.json', {
    links: opts.bigLinks,
    setups: opts.setups ?? BIG_SETUPS,
    guest: bigGuest(opts.quick),
  })

if (has('compress')) {
  const ts = performance.now()
  const runs = opts.quick ? 1 : Number(process.env.BENCH_RUNS ?? 5)
  const rows = await runCompress({ quick: opts.quick, runs })
  writeJson(join(resultsDir, 'compress.json'), {
    machine: machineInfo(),
    runs,
    rows,
    stageS: (performance.now() - ts) / 1000,
  })
}

if (has('libvirt') && !opts.quick) {
  const ts = performance.now()
  try {
    const rows = await runLibvirt({ rounds: opts.libvirtRounds })
    writeJson(join(resultsDir, 'libvirt.json'), {
      machine: machineInfo(),
      rounds: opts.libvirtRounds ?? 0,
      rows,
      stageS: (performance.now() - ts) / 1000,
    })
  } catch (e) {
    // The stage needs root and libvirtd; the others do not, so a machine without them still gets a report.
    log(`libvirt stage not run: ${(e as Error).message}`)
  }
}

// `codec` has nothing to run here: `npm run bench` (turbo) runs the codec package's own bench, whose
// BENCHMARKS.md the report embeds. With --only codec alone, the report is rewritten with the current file.

if (!opts.reportOnly)
  writeJson(join(resultsDir, 'run.json'), {
    stages: opts.only,
    wallS: (performance.now() - t0) / 1000,
    date: new Date().toISOString(),
  })
const report = writeReport({ quick: opts.quick, resultsDir })
// Same as the codec package: let biome lay out the tables so that `npm run lint` stays clean.
spawnSync('npx', ['biome', 'format', '--write', report], { cwd: ROOT, stdio: 'ignore' })
log(`report written: ${report}`)
