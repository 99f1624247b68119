// Real QEMU live migrations observed through the CLI: --progress json against QEMU's dirty-sync-count, and
// --metrics-listen scraped by a real Prometheus server, read back through its HTTP query API.
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  compareGuestRam,
  freePort,
  installTestkitHooks,
  iteratingMigration,
  type MigrateThroughResult,
  migrateThrough,
  requireQemu,
  requireTool,
  startRunningGuest,
  tmpDir,
  waitFor,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { CLI_SH } from '../test-cli.js'
import { SCHEMA_DIR } from './generate-schemas.js'
import { type ProgressEvent, ProgressEventSchema, type StatsReport, StatsReportSchema } from './schemas.js'

installTestkitHooks({ afterEach, afterAll })

/** The migrated guest: 4000 of its 32 MiB dirtied every 200 ms, so that QEMU iterates. */
const SOURCE_GUEST = { memMiB: 64, append: { workload: 'sparse', mem: 32, rate: 4000, period: 200 } } as const
/** A `--stats-json` file, checked against the schema. */
const readReport = (file: string): StatsReport =>
  StatsReportSchema.parse(JSON.parse(readFileSync(file, 'utf8')))

/**
 * A live migration of the test guest through `exec:` with the xbzrle encoder observed (`encodeArgs` added to
 * `xbzrle encode`). Capped bandwidth and a tiny downtime limit make QEMU iterate several passes.
 * receivedMigration() observes `receive` over WebSocket instead.
 */
async function observedMigration(encodeArgs: string[], xbzrle = false): Promise<MigrateThroughResult> {
  const source = await startRunningGuest(SOURCE_GUEST)
  return migrateThrough({
    source,
    encode: `${CLI_SH} encode ${encodeArgs.join(' ')}`,
    decode: `${CLI_SH} decode`,
    ...iteratingMigration({ xbzrle, syncs: 5 }),
  })
}

describe('--progress json during a real QEMU live migration', () => {
  it.for([
    { xbzrle: false, name: 'QEMU xbzrle off' },
    { xbzrle: true, name: 'QEMU xbzrle on' },
  ])(
    '$name: one pass per QEMU dirty-bitmap sync, every line valid',
    { timeout: 180_000 },
    async ({ xbzrle }, ctx) => {
      if (!requireQemu(ctx)) return
      const dir = tmpDir('xbzrle-progress-')
      const file = join(dir, 'progress.ndjson')
      const statsFile = join(dir, 'stats.json')
      const run = await observedMigration(
        ['--progress', `json=${file}`, '--progress-interval', '100ms', '--stats-json', statsFile],
        xbzrle,
      )
      expect(run.stats.status).toBe('completed')
      const syncs = run.stats.dirtySyncCount!
      expect(syncs).toBeGreaterThanOrEqual(4)
      const published = z.fromJSONSchema(
        JSON.parse(readFileSync(join(SCHEMA_DIR, 'progress-event.schema.json'), 'utf8')),
      )
      const events: ProgressEvent[] = readFileSync(file, 'utf8')
        .trimEnd()
        .split('\n')
        .map((l) => {
          const ev = JSON.parse(l)
          expect(published.safeParse(ev).success, l).toBe(true)
          return ProgressEventSchema.parse(ev)
        })
      const ends = events.flatMap((e) => (e.event === 'pass-end' ? [e.stats] : []))
      // Every pass QEMU made: one per dirty-bitmap sync, numbered as QEMU counts them.
      expect(ends.map((p) => p.pass)).toEqual(Array.from({ length: syncs }, (_, i) => i + 1))
      expect(events.flatMap((e) => (e.event === 'pass-start' ? [e.pass] : []))).toEqual(
        ends.map((p) => p.pass),
      )
      // Pass 1 sends all of RAM; later passes re-send; QEMU's pre-completion sync sends nothing.
      expect(ends[0]!.pages.total).toBeGreaterThanOrEqual(64 * 256)
      expect(ends[0]!.resentPages).toBe(0)
      expect(ends.at(-2)!.pages.total).toBe(0)
      for (const p of ends.slice(1, -2)) {
        expect(p.pages.total).toBeGreaterThan(0)
        expect(p.resentShare).toBe(1)
      }
      expect(events.some((e) => e.event === 'totals')).toBe(true)
      expect(events.filter((e) => e.event === 'trend')).toHaveLength(syncs)
      const last = events.at(-1)!
      expect(last).toMatchObject({ event: 'end', status: 'ok', exitCode: 0 })
      const report = readReport(statsFile)
      expect(report.passes).toEqual(ends)
      if (xbzrle) expect(report.totals.pages.foreign).toBeGreaterThan(0)
    },
  )
})

interface Prometheus {
  url: string
  query(q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>
  stop(): Promise<void>
}

/** A real Prometheus server (Debian's package) with a temporary config and data dir, scraping `target` every second. */
async function startPrometheus(target: string): Promise<Prometheus> {
  const dir = tmpDir('xbzrle-prometheus-')
  const port = await freePort()
  const config = join(dir, 'prometheus.yml')
  writeFileSync(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: xbzrle',
      '    scrape_interval: 1s',
      '    scrape_timeout: 1s',
      '    static_configs:',
      `      - targets: ['${target}']`,
      '',
    ].join('\n'),
  )
  const child: ChildProcess = spawn(
    'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let log = ''
  child.stderr!.on('data', (b: Buffer) => {
    log += b.toString()
  })
  const url = `http://127.0.0.1:${port}`
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await waitFor(
    async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok,
    () => `prometheus ready on ${url} (${log})`,
    { timeoutMs: 30_000 },
  )
  return {
    url,
    async query(q) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(q)}`)
      const body = (await res.json()) as { status: string; data: { result: never[] } }
      if (body.status !== 'success') throw new Error(`prometheus query ${q}: ${JSON.stringify(body)}`)
      return body.data.result
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

/** The last value Prometheus holds of the series `selector` (one series), or undefined when there is none. */
async function lastValue(prom: Prometheus, selector: string): Promise<number | undefined> {
  const r = await prom.query(`last_over_time(${selector}[10m])`)
  return r.length === 1 ? Number(r[0]!.value[1]) : undefined
}

/**
 * Waits until Prometheus holds the CLI's final scrape of run `id` (state 1: the CLI exited after it, so its series
 * are stale and read as last values), then returns the reader of that run's metrics by name.
 */
async function finalScrape(prom: Prometheus, id: string, role: 'encode' | 'receive') {
  const last = (name: string) => lastValue(prom, `${name}{id="${id}",role="${role}"}`)
  await waitFor(async () => (await last('xbzrle_migration_state')) === 1, 'final scrape in Prometheus', {
    timeoutMs: 30_000,
  })
  return last
}

/**
 * The CLI's metrics as Prometheus last scraped them (run `id`, `role`) equal its `--stats-json` report: bytes in and
 * out, ratio, passes, and one completed migration.
 */
async function expectScrapedReport(
  prom: Prometheus,
  id: string,
  role: 'encode' | 'receive',
  report: StatsReport,
) {
  const last = await finalScrape(prom, id, role)
  expect(await last('xbzrle_migration_bytes_in')).toBe(report.totals.bytesIn)
  expect(await last('xbzrle_migration_bytes_out')).toBe(report.totals.bytesOut)
  expect(await last('xbzrle_migration_ratio')).toBeCloseTo(report.totals.ratio, 12)
  expect(await last('xbzrle_migration_passes')).toBe(report.passes.length)
  expect(await lastValue(prom, `xbzrle_migrations_completed_total{role="${role}"}`)).toBe(1)
  return last
}

const TOKEN = 'observe-qemu-test-token'

/**
 * The same live migration over WebSocket: source QEMU → `exec:xbzrle send ws://…` (encodes, `--stats-json`
 * `sendStats`) → `xbzrle receive` (decodes, `receiveArgs` added) → its stdout as the destination's `exec:`
 * incoming. The token travels in XBZRLE_TOKEN.
 */
async function receivedMigration(
  migrationId: string,
  sendStats: string,
  receiveArgs: string[],
): Promise<MigrateThroughResult> {
  const port = await freePort()
  const source = await startRunningGuest(SOURCE_GUEST)
  return migrateThrough({
    source,
    encode: `XBZRLE_TOKEN=${TOKEN} ${CLI_SH} send ws://127.0.0.1:${port}/${migrationId} --migration-id ${migrationId} --stats-json ${sendStats}`,
    decode: `XBZRLE_TOKEN=${TOKEN} ${CLI_SH} receive --listen 127.0.0.1:${port} ${receiveArgs.join(' ')}`,
    ...iteratingMigration({ syncs: 5 }),
  })
}

describe('metrics scraped by a real Prometheus', () => {
  it("bytes, ratio and passes through the query API equal the run's --stats-json", {
    timeout: 240_000,
  }, async (ctx) => {
    if (!requireTool(ctx, 'prometheus', 'prometheus')) return
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-metrics-')
    const statsFile = join(dir, 'stats.json')
    const metricsPort = await freePort()
    const prom = await startPrometheus(`127.0.0.1:${metricsPort}`)
    try {
      const id = 'vm-metrics-test'
      const run = await observedMigration([
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
        '--metrics-id',
        id,
        '--metrics-linger',
        '30s',
        '--stats-json',
        statsFile,
      ])
      expect(run.stats.status).toBe('completed')
      const report = readReport(statsFile)
      // The encoder exited after a scrape of its final values; the series are stale now, so read the last value.
      const last = await expectScrapedReport(prom, id, 'encode', report)
      expect(report.passes.length).toBe(run.stats.dirtySyncCount)
      expect(await last('xbzrle_migration_pages')).toBeUndefined() // one series per kind
      expect(await lastValue(prom, `xbzrle_migration_pages{id="${id}",kind="full"}`)).toBe(
        report.totals.pages.full,
      )
    } finally {
      await prom.stop()
    }
  })

  it("receive over WebSocket: bytes, ratio and passes through the query API equal the receiver's --stats-json", {
    timeout: 240_000,
  }, async (ctx) => {
    if (!requireTool(ctx, 'prometheus', 'prometheus')) return
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-metrics-rx-')
    const rxFile = join(dir, 'receive.json')
    const txFile = join(dir, 'send.json')
    const metricsPort = await freePort()
    const prom = await startPrometheus(`127.0.0.1:${metricsPort}`)
    try {
      const id = 'vm-rx-metrics-test' // the migration id is the receiver's metrics id
      const run = await receivedMigration(id, txFile, [
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
        '--metrics-linger',
        '30s',
        '--stats-json',
        rxFile,
      ])
      expect(run.stats.status).toBe('completed')
      expect(run.encode.exitCode, run.encode.stderr).toBe(0)
      expect(run.decode.exitCode, run.decode.stderr).toBe(0)
      expect(await compareGuestRam(run.source, run.dest)).toBeNull()
      const rx = readReport(rxFile)
      const tx = readReport(txFile)
      expect(rx).toMatchObject({ command: 'receive', passDetection: 'decoder' })
      // What crossed the wire, seen from both ends: the receiver's bytes are the sender's, mirrored.
      expect(rx.totals.bytesIn).toBe(tx.totals.bytesOut)
      expect(rx.totals.bytesOut).toBe(tx.totals.bytesIn)
      expect(rx.totals.pages).toEqual(tx.totals.pages)
      // The sender's encoder counts QEMU's passes exactly; the receiver the ones page repeats prove, never
      // QEMU's empty pre-completion pass (docs/observability.md, "Passes on the decoding side").
      const syncs = run.stats.dirtySyncCount!
      expect(tx.passes).toHaveLength(syncs)
      expect(rx.passes.length).toBeGreaterThanOrEqual(2)
      expect(rx.passes.length).toBeLessThanOrEqual(syncs - 1)
      expect(rx.totals.passes).toBe(rx.passes.length)
      const last = await expectScrapedReport(prom, id, 'receive', rx)
      expect(await last('xbzrle_migration_pass')).toBe(rx.passes.length)
      expect(await lastValue(prom, `xbzrle_migration_pages{id="${id}",kind="delta"}`)).toBe(
        rx.totals.pages.delta,
      )
      process.stderr.write(
        `receive passes: dirty-sync-count ${syncs}, send ${tx.passes.map((p) => p.pages.total).join('/')}, receive ${rx.passes.map((p) => p.pages.total).join('/')}\n`,
      )
    } finally {
      await prom.stop()
    }
  })
})
