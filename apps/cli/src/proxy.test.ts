// `xbzrle proxy source|destination` as child processes, between two real QEMU processes on unix sockets, with
// QEMU's return-path capability on (as libvirt sets it for every non-tunnelled migration).
import { type ChildProcess, spawn } from 'node:child_process'
import { copyFileSync, existsSync, readdirSync, readFileSync, statSync, truncateSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import {
  compareGuestRam,
  freePort,
  installTestkitHooks,
  migrateWithUris,
  type QemuProcess,
  requireQemu,
  saveRunningGuest,
  sleep,
  startDestination,
  startGuest,
  startRunningGuest,
  tmpDir,
  waitFor,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { SCHEMA_DIR } from './observe/generate-schemas.js'
import type { ProgressEvent, StatsReport } from './observe/schemas.js'
import { CLI, runCli } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })
const children: ChildProcess[] = []
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL')
})

function proxy(args: string[]): { child: ChildProcess; exit: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [CLI, 'proxy', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  children.push(child)
  let err = ''
  child.stderr!.on('data', (b) => (err += b))
  return { child, exit: new Promise((r) => child.on('close', r)), stderr: () => err }
}

/**
 * A live migration of a fresh 48 MiB test guest from `unix:SRC` to a destination QEMU listening on `unix:DST`;
 * `startProxies(port, srcSock, dstSock)` starts the proxies in between once the destination listens.
 */
async function migrateThroughProxies(
  dir: string,
  startProxies: (port: number, srcSock: string, dstSock: string) => Promise<void>,
) {
  const srcSock = join(dir, 'src.sock')
  const dstSock = join(dir, 'dst.sock')
  const port = await freePort()
  const source = await startGuest({
    memMiB: 48,
    append: { workload: 'sparse', mem: 24, rate: 4000, period: 200 },
  })
  await source.waitForReady()
  await source.waitForPass(1)
  const run = await migrateWithUris({
    source,
    incomingUri: `unix:${dstSock}`,
    uri: `unix:${srcSock}`,
    capabilities: { 'return-path': true },
    parameters: { 'max-bandwidth': 32 << 20, 'downtime-limit': 1 },
    forceConvergeAfterSyncs: 3,
    beforeMigrate: () => startProxies(port, srcSock, dstSock),
  })
  return { ...run, port }
}

describe('xbzrle proxy', () => {
  it('usage errors exit 2 and --help shows the virsh commands', async () => {
    const h = await runCli(['proxy', '--help'])
    expect(h.code).toBe(0)
    expect(h.stdout.toString()).toMatch(/virsh migrate --live[\s\S]*--migrateuri unix:\/\//)
    const u = await runCli(['proxy', 'source'])
    expect(u.code).toBe(2)
    expect(u.stderr).toMatch(/--listen is required/)
  })

  it('live migration source QEMU → proxy source → TCP → proxy destination → QEMU, return path relayed', {
    timeout: 180_000,
  }, async (ctx) => {
    if (!requireQemu(ctx)) return
    let dst!: ReturnType<typeof proxy>
    let src!: ReturnType<typeof proxy>
    const { source, dest, stats } = await migrateThroughProxies(
      tmpDir('xbzrle-proxy-cli-'),
      async (port, srcSock, dstSock) => {
        dst = proxy(['destination', '--listen', `127.0.0.1:${port}`, '--qemu-socket', dstSock, '--once'])
        await waitFor(() => /listening|ready/i.test(dst.stderr()), 'destination proxy', {
          timeoutMs: 5000,
          intervalMs: 25,
        })
        src = proxy(['source', '--listen', srcSock, '--connect', `127.0.0.1:${port}`, '--once'])
        await waitFor(() => /listening|ready/i.test(src.stderr()), 'source proxy', {
          timeoutMs: 5000,
          intervalMs: 25,
        })
      },
    )
    expect(stats.status).toBe('completed')
    expect(await src.exit, src.stderr()).toBe(0)
    expect(await dst.exit, dst.stderr()).toBe(0)
    // The source half reports the return-path bytes it relayed back to the source QEMU.
    expect(src.stderr()).toMatch(/return path [1-9]\d* B|return[- ]path[^\n]*[1-9]/i)
    expect(await compareGuestRam(source, dest)).toBeNull()
    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 1)
  })
})

describe('a proxy process killed mid-migration', () => {
  it.for(['source', 'destination'] as const)(
    'SIGKILL of the %s proxy: the migration fails cleanly, the source VM keeps running, nothing hangs',
    { timeout: 120_000 },
    async (victim, ctx) => {
      if (!requireQemu(ctx)) return
      const dir = tmpDir('xbzrle-proxy-kill-')
      const dstSock = join(dir, 'dst.sock')
      const srcSock = join(dir, 'src.sock')
      const port = await freePort()
      const dst = proxy(['destination', '--listen', `127.0.0.1:${port}`, '--qemu-socket', dstSock, '--once'])
      const src = proxy(['source', '--listen', srcSock, '--connect', `127.0.0.1:${port}`, '--once'])
      await waitFor(
        () => /listening/.test(dst.stderr()) && /listening/.test(src.stderr()),
        'the proxies to listen',
      )
      const a = await startGuest({
        memMiB: 64,
        append: { workload: 'sparse', mem: 32, rate: 2000, period: 200 },
      })
      await a.waitForPass(1)
      const dest = await startDestination(a)
      const caps = { 'return-path': true, events: true }
      await Promise.all([a.migrateSetCapabilities(caps), dest.migrateSetCapabilities(caps)])
      await a.migrateSetParameters({ 'max-bandwidth': 4 << 20 }) // ≥ 8 s for 32 MiB: time to kill
      await dest.migrateIncoming(`unix:${dstSock}`)
      await a.migrate(`unix:${srcSock}`)
      await waitFor(
        async () => ((await a.queryMigrate()).ramTransferred ?? 0) > 2 << 20,
        'the migration to move 2 MiB',
        { timeoutMs: 20_000, intervalMs: 100 },
      )
      const killed = victim === 'source' ? src : dst
      const other = victim === 'source' ? dst : src
      killed.child.kill('SIGKILL')
      const tKill = Date.now()

      await expect(a.waitForMigration({ timeoutMs: 20_000 })).rejects.toThrow(/migration failed/)
      expect(await a.queryStatus()).toMatchObject({ running: true, status: 'running' })
      // the surviving proxy reports one line and exits 5 (--once: the migration failed at the peer)
      const code = await Promise.race([other.exit, sleep(15_000).then(() => 'hung')])
      expect(code, other.stderr()).toBe(5)
      const lines = other
        .stderr()
        .split('\n')
        .filter((l) => / failed: /.test(l))
      expect(lines).toHaveLength(1)
      // the destination QEMU does not hang in the incoming state
      const destOutcome = await Promise.race([
        dest.exited.then(() => 'exited'),
        dest.waitForMigration({ timeoutMs: 15_000 }).then(
          () => 'completed',
          (e: Error) => (/exited/.test(e.message) ? 'exited' : 'failed'),
        ),
      ])
      expect(destOutcome).not.toBe('completed')
      const before = await a.lastPass()
      await a.waitForPass(before + 1)
      console.info(
        `killed ${victim} proxy: source QEMU failed after ${Date.now() - tKill} ms, destination QEMU ${destOutcome}; ` +
          `surviving proxy: ${lines[0]}`,
      )
    },
  )
})

// The proxy pair observed (issue #17): a real QEMU live migration through `xbzrle proxy source` and
// `xbzrle proxy destination` as child processes, each with --metrics-listen, --progress json and --stats-json.
// /metrics is scraped over HTTP at the end and must equal each proxy's --stats-json; every progress line and
// both stats documents must validate against the published JSON Schemas.
const published = (name: string) => z.fromJSONSchema(JSON.parse(readFileSync(join(SCHEMA_DIR, name), 'utf8')))

type Observed = ReturnType<typeof proxy> & { metricsPort: number; progress: string; stats: string }

/** `xbzrle proxy ROLE ARGS` with every observability output on, lingering for a last scrape. */
async function observedProxy(dir: string, role: 'source' | 'destination', args: string[]): Promise<Observed> {
  const metricsPort = await freePort()
  const progress = join(dir, `${role}.progress.ndjson`)
  const stats = join(dir, `${role}-{id}.stats.json`)
  const p = proxy([
    role,
    ...args,
    '--once',
    '--stats',
    '--metrics-listen',
    `127.0.0.1:${metricsPort}`,
    '--metrics-linger',
    '60s',
    '--progress',
    `json=${progress}`,
    '--progress-interval',
    '100ms',
    '--stats-json',
    stats,
  ])
  await waitFor(() => /listening on/.test(p.stderr()), `proxy ${role} to listen`, { timeoutMs: 10_000 })
  return { ...p, metricsPort, progress, stats: stats.replace('{id}', '1') }
}

/**
 * Scrapes /metrics until the proxy exits (it waits for a scrape after its end, --metrics-linger); returns the last
 * text read. Called once the migration's --stats-json exists, so every scrape here has the final values.
 */
async function lastScrape(p: Observed): Promise<string> {
  let text = ''
  let exited = false
  void p.exit.then(() => {
    exited = true
  })
  while (!exited) {
    const res = await fetch(`http://127.0.0.1:${p.metricsPort}/metrics`).catch(() => undefined)
    if (res?.ok) text = await res.text()
    await new Promise((r) => setTimeout(r, 200))
  }
  return text
}

/** The value of `name{…}` whose labels include every `labels` pair (undefined when absent). */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const have = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3])
  }
  return undefined
}

function progressEvents(file: string): ProgressEvent[] {
  const schema = published('progress-event.schema.json')
  return readFileSync(file, 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => {
      const ev = JSON.parse(l)
      expect(schema.safeParse(ev).success, l).toBe(true)
      return ev as ProgressEvent
    })
}

describe('proxy observability (real QEMU through both proxies)', () => {
  it('/metrics at the end equals --stats-json on both halves; progress lines and reports validate', {
    timeout: 180_000,
  }, async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-proxy-observe-')
    let dst!: Observed
    let src!: Observed
    const { source, dest, stats } = await migrateThroughProxies(dir, async (port, srcSock, dstSock) => {
      dst = await observedProxy(dir, 'destination', [
        '--listen',
        `127.0.0.1:${port}`,
        '--qemu-socket',
        dstSock,
      ])
      // Something that is no proxy source: dropped before any session, counted by reason.
      const stranger = connect({ host: '127.0.0.1', port })
      stranger.on('error', () => {})
      stranger.on('data', () => {})
      stranger.write(Buffer.alloc(42, 'x'))
      await new Promise((r) => stranger.on('close', r))
      src = await observedProxy(dir, 'source', ['--listen', srcSock, '--connect', `127.0.0.1:${port}`])
    })
    expect(stats.status).toBe('completed')
    const syncs = stats.dirtySyncCount!
    expect(syncs).toBeGreaterThanOrEqual(3)
    await waitFor(() => existsSync(src.stats) && existsSync(dst.stats), 'both --stats-json files')
    const [srcText, dstText] = await Promise.all([lastScrape(src), lastScrape(dst)])
    expect(await src.exit, src.stderr()).toBe(0)
    expect(await dst.exit, dst.stderr()).toBe(0)
    expect(await compareGuestRam(source, dest)).toBeNull()

    const reportSchema = published('stats-report.schema.json')
    const tx = JSON.parse(readFileSync(src.stats, 'utf8')) as StatsReport
    const rx = JSON.parse(readFileSync(dst.stats, 'utf8')) as StatsReport
    expect(reportSchema.safeParse(tx).success).toBe(true)
    expect(reportSchema.safeParse(rx).success).toBe(true)
    expect(tx).toMatchObject({ command: 'proxy-source', passDetection: 'encoder' })
    expect(rx).toMatchObject({ command: 'proxy-destination', passDetection: 'decoder' })
    // The source encodes QEMU's stream, the destination decodes it back: the same bytes, mirrored.
    expect(rx.totals.bytesIn).toBe(tx.totals.bytesOut)
    expect(rx.totals.bytesOut).toBe(tx.totals.bytesIn)
    // The encoder sees QEMU's passes exactly; the decoder the ones page repeats prove (never more).
    expect(tx.passes).toHaveLength(syncs)
    expect(rx.passes.length).toBeGreaterThanOrEqual(2)
    expect(rx.passes.length).toBeLessThanOrEqual(syncs - 1)

    for (const [text, role, report] of [
      [srcText, 'proxy-source', tx],
      [dstText, 'proxy-destination', rx],
    ] as const) {
      const proc = role === 'proxy-source' ? src : dst
      const id = `${role}-${proc.child.pid}-1`
      const series = { id, role }
      expect(metric(text, 'xbzrle_migration_bytes_in', series), role).toBe(report.totals.bytesIn)
      expect(metric(text, 'xbzrle_migration_bytes_out', series), role).toBe(report.totals.bytesOut)
      expect(metric(text, 'xbzrle_migration_passes', series), role).toBe(report.passes.length)
      expect(metric(text, 'xbzrle_migration_ratio', series), role).toBeCloseTo(report.totals.ratio, 12)
      expect(report.totals.hitRate, role).toBeDefined()
      expect(metric(text, 'xbzrle_migration_cache_hit_ratio', series), role).toBeCloseTo(
        report.totals.hitRate!,
        12,
      )
      expect(metric(text, 'xbzrle_migration_state', series), role).toBe(1) // completed
      expect(metric(text, 'xbzrle_migrations_completed_total', { role }), role).toBe(1)
      expect(metric(text, 'xbzrle_migrations_in_flight', { role }), role).toBe(0)
      expect(metric(text, 'xbzrle_bytes_in_total', { role }), role).toBe(report.totals.bytesIn)
      const pages = report.totals.pages
      expect(metric(text, 'xbzrle_migration_pages', { ...series, kind: 'delta' }), role).toBe(pages.delta)
      expect(metric(text, 'xbzrle_migration_pages', { ...series, kind: 'full' }), role).toBe(pages.full)

      const events = progressEvents(proc.progress)
      expect(events[0]).toMatchObject({ event: 'start', command: role, id })
      expect(events.at(-1)).toMatchObject({ event: 'end', status: 'ok', exitCode: 0, id })
      const ends = events.flatMap((e) => (e.event === 'pass-end' ? [e.stats] : []))
      expect(ends).toEqual(report.passes)
    }
    expect(
      metric(dstText, 'xbzrle_refused_connections_total', { role: 'proxy-destination', reason: 'MALFORMED' }),
    ).toBe(1)
    expect(dst.stderr()).toMatch(/dropped 127\.0\.0\.1:\d+: the peer is not an xbzrle proxy source/)
    expect(src.stderr()).toMatch(/per pass \(QEMU dirty-sync iterations\)/)
    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 1)
    console.info(
      `proxy observed: QEMU ${tx.totals.bytesIn} B -> xbzrle ${tx.totals.bytesOut} B, ${syncs} dirty syncs, ` +
        `source passes ${tx.passes.length}, destination passes ${rx.passes.length}`,
    )
  })
})

//
// `xbzrle proxy source|destination --base` with a real guest (issue #15): the destination holds a save of the
// guest taken 10 s before the live migration. Through both CLI proxies (child processes, QEMU's return path on),
// with the same base on both halves the link carries ≤ 0.5x the bytes of the same migration without a base; with
// different bases both halves say so in one line and the migration runs without one. Guest RAM is identical to
// the source's every time. Prints the figures.
const baseArgs = (chain: string | undefined) => (chain ? ['--base', chain] : [])

/**
 * One live migration of `source` through the proxy pair, `--base` as given per half. Checks that it completed,
 * both proxies exited 0 and the destination's RAM equals the source's; returns the xbzrle bytes the source half
 * put on the link (its --stats-json) and both halves' stderr.
 */
async function migrate(source: QemuProcess, dir: string, bases: { src?: string; dst?: string }) {
  const tag = `${bases.src ? 'b' : 'n'}${bases.dst ? 'b' : 'n'}${Date.now()}`
  const srcSock = join(dir, `${tag}-src.sock`)
  const dstSock = join(dir, `${tag}-dst.sock`)
  const statsDir = tmpDir('xbzrle-proxy-base-stats-')
  const port = await freePort()
  let src!: ReturnType<typeof proxy>
  let dst!: ReturnType<typeof proxy>
  const { dest, stats } = await migrateWithUris({
    source,
    incomingUri: `unix:${dstSock}`,
    uri: `unix:${srcSock}`,
    capabilities: { 'return-path': true },
    parameters: { 'max-bandwidth': 64 << 20, 'downtime-limit': 1 },
    forceConvergeAfterSyncs: 4,
    timeoutMs: 300_000,
    beforeMigrate: async () => {
      dst = proxy([
        'destination',
        '--listen',
        `127.0.0.1:${port}`,
        '--qemu-socket',
        dstSock,
        '--once',
        '--digest',
        ...baseArgs(bases.dst),
      ])
      src = proxy([
        'source',
        '--listen',
        srcSock,
        '--connect',
        `127.0.0.1:${port}`,
        '--once',
        '--digest',
        '--stats-json',
        join(statsDir, 'src-{id}.json'),
        ...baseArgs(bases.src),
      ])
      // seeding the source's base takes a few seconds before it listens
      await waitFor(
        () => /listening/.test(dst.stderr()) && /listening/.test(src.stderr()),
        'the proxies to listen',
        {
          timeoutMs: 120_000,
          intervalMs: 50,
        },
      )
    },
  })
  expect(stats.status).toBe('completed')
  expect(await src.exit, src.stderr()).toBe(0)
  expect(await dst.exit, dst.stderr()).toBe(0)
  expect(await compareGuestRam(source, dest)).toBeNull()
  // the QEMU stream read on the source equals the one written on the destination
  const digest = (s: string) => /sha256 ([0-9a-f]{16})/.exec(s)?.[1]
  expect(digest(src.stderr())).toBeDefined()
  expect(digest(dst.stderr())).toBe(digest(src.stderr()))
  const [file] = readdirSync(statsDir).filter((n) => n.endsWith('.json'))
  const report = JSON.parse(readFileSync(join(statsDir, file!), 'utf8')) as {
    totals: { bytesIn: number; bytesOut: number }
  }
  await dest.close({ graceful: false })
  return { link: report.totals.bytesOut, qemu: report.totals.bytesIn, src: src.stderr(), dst: dst.stderr() }
}

const fallbackLines = (stderr: string) => stderr.split('\n').filter((l) => /migrating without a base/.test(l))

describe('xbzrle proxy --base with a real guest', () => {
  it('same base on both halves: ≤ 0.5x the link bytes, RAM identical; different bases: one line each, no base, RAM identical', {
    timeout: 900_000,
  }, async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-proxy-base-')
    const first = join(dir, 'first.mig')
    const source = await startRunningGuest(
      { memMiB: 160, append: { workload: 'sparse', mem: 128, rate: 8000, period: 500 } },
      1,
      { readyMs: 120_000, passMs: 60_000 },
    )
    // the save the destination holds: paused, migrated to a file (as virsh save does); then the guest runs on
    await saveRunningGuest(source, first)
    await sleep(10_000)

    const based = await migrate(source, dir, { src: first, dst: first })
    expect(based.src).toMatch(
      /xbzrle proxy source: both halves hold base sha256:[0-9a-f]{64}: encoding against it/,
    )
    expect(based.dst).toMatch(
      /xbzrle proxy destination: both halves hold base sha256:[0-9a-f]{64}: decoding against it/,
    )
    expect(fallbackLines(based.src + based.dst)).toEqual([])

    await source.cont()
    const plain = await migrate(source, dir, {})
    expect(plain.src + plain.dst).not.toMatch(/hold base|without a base/)

    // a different base on the destination: the first save with its last 4 KiB cut (another fingerprint)
    const other = join(dir, 'other.mig')
    copyFileSync(first, other)
    truncateSync(other, statSync(first).size - 4096)
    await source.cont()
    const mismatched = await migrate(source, dir, { src: first, dst: other })
    expect(fallbackLines(mismatched.src)).toEqual([
      expect.stringMatching(
        /^xbzrle proxy source: the destination holds base sha256:[0-9a-f]{64}, not ours \(sha256:[0-9a-f]{64}\): migrating without a base$/,
      ),
    ])
    expect(fallbackLines(mismatched.dst)).toEqual([
      expect.stringMatching(
        /^xbzrle proxy destination: the source holds base sha256:[0-9a-f]{64}, not ours \(sha256:[0-9a-f]{64}\): migrating without a base$/,
      ),
    ])

    console.log(
      `[proxy-base] link bytes with --base ${based.link} (QEMU ${based.qemu}), without ${plain.link} (QEMU ${plain.qemu}), ` +
        `mismatched base ${mismatched.link} (QEMU ${mismatched.qemu}); based/without ${(based.link / plain.link).toFixed(4)}`,
    )
    expect(based.link).toBeLessThanOrEqual(0.5 * plain.link)
  })
})
