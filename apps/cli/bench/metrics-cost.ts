/**
 * What observing a migration costs the encoder: encode throughput of a simulated multi-pass migration with
 * everything off, against the same with Prometheus metrics on and `--progress json` lines written to
 * /dev/null, both every second (`on`, a short scrape interval) and every 100 ms (`stress`). The scraper is
 * curl in a child process, as Prometheus is another process. Rounds alternate off/on/stress; medians of wall
 * throughput and of bytes per CPU-second of this process are compared, and the best rounds (least disturbed
 * by other processes on a shared machine), the time spent inside the observability code during the runs, the
 * steady-state cost of one scrape / totals line / pass end, and the pass detector per page. Not part of `npm test`.
 *
 *   npx tsx --conditions=@xbzrle/source apps/cli/bench/metrics-cost.ts [memMiB=128] [rounds=7]
 */
import { spawn } from 'node:child_process'
import { SimulatedGuest, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
// Not exported by the package (yet): the bench measures the detector on its own.
import { PassDetector } from '../../../packages/adapter-libvirt/src/filter/pass-stats.js'
import { MigrationMetrics, startMetricsServer } from '../src/observe/metrics.js'
import { encoderSource, openLineSink, RunObserver } from '../src/observe/observer.js'

const memMiB = Number(process.argv[2] ?? 128)
const rounds = Number(process.argv[3] ?? 7)

const chunks = [...new SimulatedGuest({ memMiB, passes: 6, workload: 'sparse', seed: 7 }).stream()].map((c) =>
  c.slice(),
)
const bytes = chunks.reduce((a, c) => a + c.length, 0)

/** Feeds the stream in 1 MiB chunks, yielding to the event loop between chunks (as a pipe would). */
async function encode(intervalMs: number | undefined): Promise<Run> {
  const observed = intervalMs !== undefined
  let spent = 0
  let metrics: MigrationMetrics | undefined
  let observer: RunObserver | undefined
  let scraper: ReturnType<typeof spawn> | undefined
  let close: (() => Promise<void>) | undefined
  if (observed) {
    metrics = new MigrationMetrics()
    const ep = await startMetricsServer(metrics, '127.0.0.1:0')
    close = ep.close
    scraper = spawn(
      'sh',
      ['-c', `while :; do curl -s -o /dev/null ${ep.url}; sleep ${intervalMs / 1000}; done`],
      { stdio: 'ignore' },
    )
    observer = new RunObserver({
      command: 'encode',
      id: 'bench',
      metrics,
      progress: openLineSink('/dev/null'),
      intervalMs,
    })
  }
  if (metrics && observer) {
    // Time spent in the observability code itself (noise-free, unlike throughput on a shared machine).
    const m = metrics
    const scrape = m.scrape.bind(m)
    m.scrape = async () => {
      const t = performance.now()
      const r = await scrape()
      spent += performance.now() - t
      return r
    }
    const o = observer as unknown as { tick: () => void }
    const tick = o.tick.bind(observer)
    o.tick = () => {
      const t = performance.now()
      tick()
      spent += performance.now() - t
    }
    for (const k of ['passStart', 'passEnd'] as const) {
      const f = observer.listener[k] as (x: never) => void
      ;(observer.listener as Record<string, unknown>)[k] = (x: never) => {
        const t = performance.now()
        f(x)
        spent += performance.now() - t
      }
    }
  }
  let out = 0
  const enc = new XbzrleEncoder((c) => (out += c.length), { passListener: observer?.listener })
  observer?.attach(encoderSource(enc))
  const t0 = performance.now()
  const c0 = process.cpuUsage()
  for (const c of chunks) {
    enc.push(c)
    await new Promise<void>((r) => setImmediate(r))
  }
  enc.finish()
  const secs = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(c0)
  const cpuSecs = (cpu.user + cpu.system) / 1e6
  observer?.end({ exitCode: 0 })
  scraper?.kill()
  await close?.()
  if (out === 0) throw new Error('nothing encoded')
  return { wall: bytes / 1e6 / secs, cpu: bytes / 1e6 / cpuSecs, observePercent: (spent / 1000 / secs) * 100 }
}

type Run = { wall: number; cpu: number; observePercent: number }
/** ns per page of PassDetector.isRepeat + mark over 10 passes of a 1 GiB guest's pages, 1/4 dirty per pass. */
function detectionCost(): number {
  const pages = 262_144
  const d = new PassDetector()
  d.setBlock(0, pages)
  let n = 0
  const t = performance.now()
  for (let pass = 0; pass < 10; pass++) {
    const step = pass === 0 ? 1 : 4
    for (let p = pass % 4; p < pages; p += step) {
      if (d.isRepeat(0, p)) d.next()
      d.mark(0, p)
      n++
    }
  }
  return ((performance.now() - t) * 1e6) / n
}

/** Steady-state cost of one scrape, one totals line and one pass end (ms each, after warm-up). */
async function eventCosts(): Promise<{ scrapeMs: number; totalsLineMs: number; passEndMs: number }> {
  const metrics = new MigrationMetrics()
  const observer = new RunObserver({
    command: 'encode',
    id: 'bench',
    metrics,
    progress: openLineSink('/dev/null'),
  })
  const enc = new XbzrleEncoder(() => {}, { passListener: observer.listener })
  observer.attach(encoderSource(enc))
  for (const c of chunks.slice(0, 64)) enc.push(c)
  const o = observer as unknown as { tick: () => void }
  const pass = enc.currentPass()
  const time = async (n: number, f: () => unknown) => {
    for (let i = 0; i < 50; i++) await f()
    const t = performance.now()
    for (let i = 0; i < n; i++) await f()
    return (performance.now() - t) / n
  }
  return {
    scrapeMs: +(await time(500, () => metrics.scrape())).toFixed(4),
    totalsLineMs: +(await time(2000, () => o.tick())).toFixed(4),
    passEndMs: +(await time(2000, () => observer.listener.passEnd(pass))).toFixed(4),
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const modes: Array<[string, number | undefined]> = [
  ['off', undefined],
  ['on', 1000],
  ['stress', 100],
]
const runs: Record<string, Run[]> = { off: [], on: [], stress: [] }
for (const [, iv] of modes) await encode(iv) // warm-up (JIT, wasm)
for (let i = 0; i < rounds; i++) {
  const line: string[] = []
  for (const [name, iv] of modes) {
    const r = await encode(iv)
    runs[name]!.push(r)
    line.push(
      `${name} ${r.wall.toFixed(0)} MB/s (${r.cpu.toFixed(0)} MB/cpu-s, observing ${r.observePercent.toFixed(3)}%)`,
    )
  }
  process.stderr.write(`round ${i + 1}: ${line.join(', ')}\n`)
}
/** Median and best (the round least disturbed by other processes on a shared machine) against `off`. */
const fig = (name: string, k: 'wall' | 'cpu') => {
  const base = median(runs.off!.map((x) => x[k]))
  const m = median(runs[name]!.map((x) => x[k]))
  const bestBase = Math.max(...runs.off!.map((x) => x[k]))
  const best = Math.max(...runs[name]!.map((x) => x[k]))
  return {
    MBps: +m.toFixed(1),
    costPercent: +(((base - m) / base) * 100).toFixed(2),
    bestMBps: +best.toFixed(1),
    bestCostPercent: +(((bestBase - best) / bestBase) * 100).toFixed(2),
  }
}
process.stdout.write(
  `${JSON.stringify({
    memMiB,
    streamBytes: bytes,
    rounds,
    off: {
      wallMBps: +median(runs.off!.map((x) => x.wall)).toFixed(1),
      cpuMBps: +median(runs.off!.map((x) => x.cpu)).toFixed(1),
    },
    on1s: {
      wall: fig('on', 'wall'),
      cpu: fig('on', 'cpu'),
      observePercent: +median(runs.on!.map((x) => x.observePercent)).toFixed(3),
    },
    stress100ms: {
      wall: fig('stress', 'wall'),
      cpu: fig('stress', 'cpu'),
      observePercent: +median(runs.stress!.map((x) => x.observePercent)).toFixed(3),
    },
    steadyState: await eventCosts(),
    passDetectionNsPerPage: +detectionCost().toFixed(1),
    encodeNsPerPage: +((1e9 / (median(runs.off!.map((x) => x.cpu)) * 1e6)) * 4096).toFixed(1),
  })}\n`,
)
