/**
 * `xbzrle proxy source|destination --base` with a real guest (issue #15): the destination holds a save of the
 * guest taken 10 s before the live migration. Through both CLI proxies (child processes, QEMU's return path on),
 * with the same base on both halves the link carries ≤ 0.5x the bytes of the same migration without a base; with
 * different bases both halves say so in one line and the migration runs without one. Guest RAM is identical to
 * the source's every time. Prints the figures.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { copyFileSync, readdirSync, readFileSync, statSync, truncateSync } from 'node:fs'
import { join } from 'node:path'
import {
  captureMigration,
  compareGuestRam,
  freePort,
  installTestkitHooks,
  migrateWithUris,
  type QemuProcess,
  requireQemu,
  sleep,
  startGuest,
  tmpDir,
  waitFor,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { CLI } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })
const children: ChildProcess[] = []
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL')
})

function proxy(args: string[]): { exit: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [CLI, 'proxy', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  children.push(child)
  let err = ''
  child.stderr!.on('data', (b) => (err += b))
  return { exit: new Promise((r) => child.on('close', r)), stderr: () => err }
}

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
    const source = await startGuest({
      memMiB: 160,
      append: { workload: 'sparse', mem: 128, rate: 8000, period: 500 },
    })
    await source.waitForReady(120_000)
    await source.waitForPass(1, 60_000)
    // the save the destination holds: paused, migrated to a file (as virsh save does); then the guest runs on
    await source.stop()
    await captureMigration({ guest: source, out: first })
    await source.cont()
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
