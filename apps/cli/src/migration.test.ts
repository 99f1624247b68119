// Real QEMU (TCG) live migrations through the built `xbzrle encode` / `xbzrle decode` commands.

import {
  compareGuestRam,
  installTestkitHooks,
  iteratingMigration,
  migrateThrough,
  requireQemu,
  startRunningGuest,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { CLI_SH, runCli } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })

/** Numbers from `--stats` on stderr. */
function statsOf(stderr: string) {
  const m = /(\d+) full, (\d+) delta, (\d+) unchanged, (\d+) zero, (\d+) qemu-xbzrle/.exec(stderr)
  expect(m, stderr).not.toBeNull()
  const [full, delta, same, zero, foreign] = m!.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ]
  return { full, delta, same, zero, foreign }
}

describe('live migration: source QEMU → xbzrle encode → xbzrle decode → destination QEMU', () => {
  it.for([
    { xbzrle: false, name: 'QEMU xbzrle off' },
    { xbzrle: true, name: 'QEMU xbzrle on' },
  ])('$name: completes, guest RAM identical, destination runs on', async ({ xbzrle }, ctx) => {
    if (!requireQemu(ctx)) return
    const source = await startRunningGuest({
      memMiB: 64,
      append: { workload: 'sparse', mem: 32, rate: 4000, period: 200 },
    })
    const { dest, stats, encode, decode } = await migrateThrough({
      source,
      encode: `${CLI_SH} encode --stats`,
      decode: `${CLI_SH} decode --stats`,
      // Capped bandwidth and a tiny downtime limit make QEMU iterate and re-send dirty pages.
      ...iteratingMigration({ xbzrle, syncs: 4 }),
    })
    expect(stats.status).toBe('completed')
    expect(encode.exitCode).toBe(0)
    expect(decode.exitCode).toBe(0)
    const s = statsOf(encode.stderr)
    if (xbzrle) {
      expect(stats.xbzrle?.pages).toBeGreaterThan(0)
      expect(s.foreign).toBeGreaterThan(0)
    } else {
      // Pages QEMU re-sent in full became deltas (or unchanged) against our cache.
      expect(s.delta + s.same).toBeGreaterThan(0)
    }
    expect(await compareGuestRam(source, dest)).toBeNull()
    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 2)
  })
})

describe('xbzrle demo --qemu', () => {
  it('migrates a real guest through the filter and verifies guest RAM', { timeout: 180_000 }, async (ctx) => {
    if (!requireQemu(ctx)) return
    const r = await runCli(['demo', '--qemu', '--mem', '48'])
    expect(r.code, r.stderr).toBe(0)
    const out = r.stdout.toString()
    expect(out).toMatch(/through xbzrle\s+[\d.]+ \w+ \(ratio 0\.\d+\)/)
    expect(out).toMatch(/guest RAM identical on both sides; destination runs on/)
  })
})
