// Observability of encode/decode: --progress json, --stats-json, --stats table, metrics registry and endpoint.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import { installTestkitHooks, tmpDir } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { runCli } from '../test-cli.js'
import { SCHEMA_DIR } from './generate-schemas.js'
import { isLoopbackHost, MigrationMetrics, parseListen, startMetricsServer } from './metrics.js'
import { convergence, parseProgressMode } from './observer.js'
import { passTable } from './run.js'
import {
  observeJsonSchemaFiles,
  type PassStatsJson,
  PassStatsSchema,
  ProgressEventSchema,
  StatsReportSchema,
} from './schemas.js'

installTestkitHooks({ afterEach, afterAll })

/** The published JSON Schema files, as validators (what a consumer of the schema would check against). */
function published(name: string) {
  return z.fromJSONSchema(JSON.parse(readFileSync(join(SCHEMA_DIR, name), 'utf8')))
}

function simulatedStream(passes: number): Buffer {
  const g = new SimulatedGuest({ memMiB: 8, passes, seed: 5, pagesPerSection: 256 })
  return Buffer.concat([...g.stream()].map((c) => Buffer.from(c)))
}

function pass(n: number, bytesIn: number, total = 1, ratio = 0.5): PassStatsJson {
  return {
    pass: n,
    startMs: 0,
    wallMs: 1,
    bytesIn,
    bytesOut: Math.round(bytesIn * ratio),
    ratio,
    pages: { full: total, delta: 0, same: 0, zero: 0, foreign: 0, other: 0, total },
    resentPages: 0,
    resentShare: 0,
    cacheHits: 0,
    cacheMisses: 0,
    final: false,
  }
}

describe('published JSON Schemas', () => {
  it('apps/cli/schemas/ is what schemas.ts generates (regenerate: npx tsx --conditions=@xbzrle/source apps/cli/src/observe/generate-schemas.ts)', () => {
    for (const [name, text] of Object.entries(observeJsonSchemaFiles())) {
      expect(readFileSync(join(SCHEMA_DIR, name), 'utf8'), name).toBe(text)
    }
  })
})

describe('encode --progress json / --stats-json / --stats', () => {
  it('one valid line per event, a pass-end per pass, totals that add up', async () => {
    const dir = tmpDir('xbzrle-observe-')
    const progress = join(dir, 'progress.ndjson')
    const statsFile = join(dir, 'stats.json')
    const input = simulatedStream(3)
    const r = await runCli(
      [
        'encode',
        '-o',
        join(dir, 'out.xbz'),
        '--stats',
        '--stats-json',
        statsFile,
        `--progress`,
        `json=${progress}`,
        '--progress-interval',
        '10ms',
      ],
      input,
    )
    expect(r.code, r.stderr).toBe(0)
    const lineSchema = published('progress-event.schema.json')
    const lines = readFileSync(progress, 'utf8').trimEnd().split('\n')
    const events = lines.map((l) => {
      const ev = JSON.parse(l)
      expect(lineSchema.safeParse(ev).success, l).toBe(true)
      return ProgressEventSchema.parse(ev)
    })
    const report = StatsReportSchema.parse(JSON.parse(readFileSync(statsFile, 'utf8')))
    expect(published('stats-report.schema.json').safeParse(report).success).toBe(true)
    // 3 dirty passes + the first + QEMU's empty pre-completion pass
    expect(report.passes).toHaveLength(5)
    expect(report.totals.passes).toBe(5)
    expect(report.totals.bytesIn).toBe(input.length)
    expect(report.totals.bytesIn).toBe(report.passes.reduce((a, p) => a + p.bytesIn, 0))
    expect(report.totals.bytesOut).toBe(report.passes.reduce((a, p) => a + p.bytesOut, 0))
    expect(report.totals.pages.total).toBe(report.passes.reduce((a, p) => a + p.pages.total, 0))
    expect(events[0]!.event).toBe('start')
    const last = events.at(-1)!
    expect(last.event).toBe('end')
    if (last.event === 'end') {
      expect(last).toMatchObject({ status: 'ok', exitCode: 0 })
      expect(last.totals.bytesOut).toBe(report.totals.bytesOut)
    }
    const ends = events.flatMap((e) => (e.event === 'pass-end' ? [e.stats] : []))
    expect(ends.map((p) => p.pass)).toEqual([1, 2, 3, 4, 5])
    expect(ends).toEqual(report.passes)
    const starts = events.flatMap((e) => (e.event === 'pass-start' ? [e.pass] : []))
    expect(starts).toEqual([1, 2, 3, 4, 5])
    expect(events.filter((e) => e.event === 'trend')).toHaveLength(5)
    // the human table: one row per pass
    expect(r.stderr).toMatch(/per pass/)
    for (let i = 1; i <= 5; i++) expect(r.stderr).toMatch(new RegExp(`\\n\\s+${i}\\s+\\d+\\.\\d\\ds`))
  })

  it('a failed run still ends with an end line (exit status, error) and its stats', async () => {
    const dir = tmpDir('xbzrle-observe-')
    const progress = join(dir, 'p.ndjson')
    const r = await runCli(
      [
        'encode',
        '--strict',
        '-o',
        join(dir, 'o'),
        '--progress',
        `json=${progress}`,
        '--stats-json',
        join(dir, 's.json'),
      ],
      simulatedStream(1).subarray(0, 100_000),
    )
    expect(r.code).toBe(3)
    const last = ProgressEventSchema.parse(
      JSON.parse(readFileSync(progress, 'utf8').trimEnd().split('\n').at(-1)!),
    )
    expect(last).toMatchObject({ event: 'end', status: 'error', exitCode: 3 })
    expect(
      StatsReportSchema.parse(JSON.parse(readFileSync(join(dir, 's.json'), 'utf8'))).totals.bytesIn,
    ).toBe(100_000)
  })

  it('decode reports the passes its page keys prove, in the same formats', async () => {
    const dir = tmpDir('xbzrle-observe-')
    const encStats = join(dir, 'enc.json')
    // The page path (the bypass would send pages into this fast pipe as raw records, which no decoder can count)
    const enc = await runCli(['encode', '--bypass', 'never', '--stats-json', encStats], simulatedStream(1))
    expect(enc.code).toBe(0)
    const r = await runCli(
      ['decode', '-o', join(dir, 'o'), '--progress', 'json', '--stats-json', '-'],
      enc.stdout,
    )
    expect(r.code, r.stderr).toBe(0)
    const report = StatsReportSchema.parse(JSON.parse(r.stdout.toString()))
    const encoded = StatsReportSchema.parse(JSON.parse(readFileSync(encStats, 'utf8')))
    expect(report).toMatchObject({ command: 'decode', passDetection: 'decoder' })
    expect(report.totals.bytesIn).toBe(enc.stdout.length)
    expect(report.totals.bytesOut).toBe(encoded.totals.bytesIn)
    expect(report.totals.pages).toEqual(encoded.totals.pages)
    // At most the encoder's non-empty passes (QEMU's empty pre-completion pass has no page to show it).
    expect(report.passes.length).toBeGreaterThanOrEqual(2)
    expect(report.passes.length).toBeLessThanOrEqual(encoded.passes.filter((p) => p.pages.total > 0).length)
    expect(report.totals.passes).toBe(report.passes.length)
    const lines = r.stderr
      .trimEnd()
      .split('\n')
      .map((l) => ProgressEventSchema.parse(JSON.parse(l)))
    expect(lines.flatMap((e) => (e.event === 'pass-end' ? [e.stats] : []))).toEqual(report.passes)
    expect(lines.at(-1)).toMatchObject({ event: 'end', status: 'ok' })
  })

  it('refuses JSON on the data stream and public metrics without the flag (usage, exit 2)', async () => {
    for (const args of [
      ['encode', '--stats-json', '-'],
      ['encode', '--progress', 'json=1'],
      ['encode', '--progress', 'yaml'],
      ['encode', '-o', '/dev/null', '--metrics-listen', '0.0.0.0:0'],
    ]) {
      const r = await runCli(args, new Uint8Array(0))
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(/^xbzrle: --(stats-json|progress|metrics-listen)/)
    }
  })
})

describe('inspect: the per-pass view of a QEMU stream and of its xbzrle stream', () => {
  it("shows the same passes either way, and the encoder's --stats-json passes", async () => {
    const dir = tmpDir('xbzrle-observe-')
    const raw = join(dir, 'vm.mig')
    const xbz = join(dir, 'vm.xbz')
    writeFileSync(raw, simulatedStream(2))
    const enc = await runCli(['encode', raw, '-o', xbz, '--stats-json', join(dir, 's.json')])
    expect(enc.code, enc.stderr).toBe(0)
    const encoded = StatsReportSchema.parse(JSON.parse(readFileSync(join(dir, 's.json'), 'utf8'))).passes
    const pagesOf = (ps: Array<{ pass: number; pages: unknown; resentPages: number; bytesIn: number }>) =>
      ps.map((p) => ({ pass: p.pass, pages: p.pages, resent: p.resentPages, bytesIn: p.bytesIn }))
    for (const file of [raw, xbz]) {
      const r = await runCli(['inspect', '--json', file])
      expect(r.code, r.stderr).toBe(0)
      const passes = z.array(PassStatsSchema).parse(JSON.parse(r.stdout.toString()).passes)
      expect(pagesOf(passes)).toEqual(pagesOf(encoded))
      expect(passes).toHaveLength(4)
      const human = await runCli(['inspect', file])
      expect(human.stdout.toString()).toMatch(/per pass[\s\S]*\n\s+4\s+\d/)
    }
  })
})

describe('convergence estimate', () => {
  it('shrinking passes: geometric remainder at the last ratio and the link rate', () => {
    const c = convergence([pass(1, 1000), pass(2, 800), pass(3, 400), pass(4, 200)], 100)
    expect(c.trend).toBe('shrinking')
    expect(c.shrinkFactor).toBeCloseTo(0.5)
    expect(c.dirtyBytes).toEqual([800, 400, 200])
    expect(c.projectedRemainingBytes).toBe(200)
    expect(c.projectedRemainingBytesOut).toBe(100)
    expect(c.projectedSeconds).toBeCloseTo(1)
  })
  it('growing or flat passes project nothing; too few passes are unknown; empty passes are skipped', () => {
    expect(convergence([pass(1, 1000), pass(2, 100), pass(3, 200)], 10)).toMatchObject({ trend: 'growing' })
    expect(
      convergence([pass(1, 1000), pass(2, 100), pass(3, 101)], 10).projectedRemainingBytes,
    ).toBeUndefined()
    expect(convergence([pass(1, 1000), pass(2, 100)], 10)).toEqual({ dirtyBytes: [100], trend: 'unknown' })
    expect(convergence([pass(1, 1000), pass(2, 100), pass(3, 0, 0), pass(4, 50)], 0)).toMatchObject({
      dirtyBytes: [100, 50],
      trend: 'shrinking',
    })
  })
})

describe('progress modes and the pass table', () => {
  it('parses modes', () => {
    expect(parseProgressMode('json')).toEqual({ kind: 'json', target: '2' })
    expect(parseProgressMode('json=3')).toEqual({ kind: 'json', target: '3' })
    expect(parseProgressMode('json=/x/y')).toEqual({ kind: 'json', target: '/x/y' })
    expect(() => parseProgressMode('json=')).toThrow(/--progress/)
  })
  it('prints one row per pass, nothing for a single pass', () => {
    expect(passTable([pass(1, 10)])).toBe('')
    const t = passTable([pass(1, 4096), pass(2, 2048, 1, 0.25)])
    expect(t.split('\n').filter(Boolean)).toHaveLength(4)
    expect(t).toMatch(/\n\s+2\s+0\.00s\s+2\.00 KiB\s+512 B\s+0\.250/)
  })
})

describe('docs and dashboard', () => {
  it('the Grafana dashboard and docs/observability.md use only metrics that exist, and document each one', async () => {
    const m = new MigrationMetrics()
    m.migrationStarted('x', 'encode')
    const names = new Set((await m.registry.getMetricsAsJSON()).map((x) => x.name))
    const root = join(SCHEMA_DIR, '../../..')
    const dashboard = readFileSync(join(root, 'docs/grafana/xbzrle.json'), 'utf8')
    const doc = readFileSync(join(root, 'docs/observability.md'), 'utf8')
    const used = (text: string) => new Set(text.match(/xbzrle_[a-z_]+/g))
    for (const n of used(dashboard)) expect(names, `dashboard uses ${n}`).toContain(n)
    for (const n of used(doc)) expect(names, `docs name ${n}`).toContain(n)
    for (const n of names) expect(doc, `docs/observability.md documents ${n}`).toContain(n)
    expect(JSON.parse(dashboard).panels.length).toBeGreaterThan(10)
  })
})

describe('MigrationMetrics', () => {
  function metricValue(text: string, name: string, labels: string): number | undefined {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels))
    return line === undefined ? undefined : Number(line.split(' ').at(-1))
  }

  it('reads samplers at scrape time, ends migrations, counts refusals and resumes', async () => {
    let t = 0
    const m = new MigrationMetrics({ now: () => t })
    let s = { bytesIn: 0, bytesOut: 0, pages: { full: 0 }, pass: 1, passes: 0 }
    const id = m.migrationStarted('vm 1/x', 'receive', () => s)
    expect(id).toBe('vm_1_x')
    t = 1000
    s = { bytesIn: 4000, bytesOut: 1000, pages: { full: 3 }, pass: 3, passes: 2 }
    let text = (await m.scrape()).text
    expect(metricValue(text, 'xbzrle_migrations_in_flight', 'role="receive"')).toBe(1)
    expect(metricValue(text, 'xbzrle_migration_bytes_in', 'id="vm_1_x"')).toBe(4000)
    expect(metricValue(text, 'xbzrle_migration_ratio', 'id="vm_1_x"')).toBe(0.25)
    expect(metricValue(text, 'xbzrle_migration_pass', 'id="vm_1_x"')).toBe(3)
    expect(metricValue(text, 'xbzrle_migration_passes', 'id="vm_1_x"')).toBe(2)
    expect(metricValue(text, 'xbzrle_migration_link_rate_bytes_per_second', 'id="vm_1_x"')).toBe(1000)
    expect(metricValue(text, 'xbzrle_pages_total', 'kind="full"')).toBe(3)
    m.resumed('vm 1/x', 'receive')
    m.refused('receive', 'bad-token')
    m.migrationEnded('vm 1/x', 'receive', true, { bytesIn: 5000, bytesOut: 1200 })
    text = (await m.scrape()).text
    expect(metricValue(text, 'xbzrle_migrations_in_flight', 'role="receive"')).toBe(0)
    expect(metricValue(text, 'xbzrle_migrations_completed_total', 'role="receive"')).toBe(1)
    expect(metricValue(text, 'xbzrle_migration_state', 'id="vm_1_x"')).toBe(1)
    expect(metricValue(text, 'xbzrle_migration_resumes', 'id="vm_1_x"')).toBe(1)
    expect(metricValue(text, 'xbzrle_bytes_in_total', 'role="receive"')).toBe(5000)
    expect(metricValue(text, 'xbzrle_refused_connections_total', 'reason="bad-token"')).toBe(1)
  })

  it('bounds label cardinality: finished migrations age out by count and by time, totals stay', async () => {
    let t = 0
    const m = new MigrationMetrics({ now: () => t, maxFinished: 2, finishedTtlMs: 60_000 })
    for (let i = 0; i < 5; i++) {
      m.migrationStarted(`m${i}`, 'receive')
      m.update(`m${i}`, 'receive', { bytesIn: 10, bytesOut: 5 })
      m.migrationEnded(`m${i}`, 'receive', i !== 4)
      t += 1000
    }
    m.migrationStarted('running', 'receive')
    expect(m.ids.sort()).toEqual(['m3', 'm4', 'running'])
    t += 61_000
    const text = (await m.scrape()).text
    expect(m.ids).toEqual(['running'])
    expect(text).not.toMatch(/id="m\d"/)
    expect(metricValue(text, 'xbzrle_bytes_in_total', 'role="receive"')).toBe(50)
    expect(metricValue(text, 'xbzrle_migrations_failed_total', 'role="receive"')).toBe(1)
    expect(metricValue(text, 'xbzrle_migrations_completed_total', 'role="receive"')).toBe(4)
  })

  it('serves /metrics on loopback only unless allowed', async () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true)
    expect(isLoopbackHost('[::1]')).toBe(true)
    expect(isLoopbackHost('::ffff:127.0.0.2')).toBe(true)
    expect(isLoopbackHost('0.0.0.0')).toBe(false)
    expect(isLoopbackHost('10.0.0.1')).toBe(false)
    expect(parseListen('9464')).toEqual({ host: '127.0.0.1', port: 9464 })
    expect(parseListen('[::1]:80')).toEqual({ host: '::1', port: 80 })
    const m = new MigrationMetrics()
    await expect(startMetricsServer(m, '0.0.0.0:0')).rejects.toThrow(/not a loopback address/)
    const ep = await startMetricsServer(m, '127.0.0.1:0')
    try {
      m.migrationStarted('a', 'encode')
      const res = await fetch(ep.url)
      expect(res.status).toBe(200)
      expect(await res.text()).toMatch(/xbzrle_migrations_in_flight\{role="encode"\} 1/)
      expect((await fetch(ep.url.replace('/metrics', '/nope'))).status).toBe(404)
    } finally {
      await ep.close()
    }
  })
})
