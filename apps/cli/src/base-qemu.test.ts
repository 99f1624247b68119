/**
 * `--base` with a real guest (issue #15): the test guest rewrites a 256 MiB region at 20k writes/s; it is saved
 * twice, 10 s apart, the way `virsh save` does it (paused, then migrated to a file). The second save encoded
 * against the first must be ≤ 0.05x its encoding without a base and ≤ 0.03x `lzop -1`'s output, decode
 * byte-exactly, and restore: a destination QEMU loads it through `xbzrle decode --base`, its RAM equals the
 * saved guest's, and it runs on. Prints the figures (BENCHMARKS.md, "Base images").
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream, statSync } from 'node:fs'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import {
  captureMigration,
  compareGuestRam,
  installTestkitHooks,
  migrateThrough,
  requireQemu,
  requireTool,
  type StartGuestOptions,
  saveRunningGuest,
  shellQuote,
  sleep,
  startDestination,
  startRunningGuest,
  tmpDir,
} from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { CLI_SH, freePort, runCli } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })

/** The guest: 256 MiB rewritten at 20k writes/s. */
const REWRITING_GUEST: StartGuestOptions = {
  memMiB: 288,
  append: { workload: 'sparse', mem: 256, rate: 20000, period: 500 },
}
/** A 288 MiB TCG guest needs longer than the defaults to boot and finish its first pass. */
const SLOW_START = { readyMs: 120_000, passMs: 60_000 }

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256')
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), h)
  return h.digest('hex')
}

async function lzop1(input: string, output: string): Promise<number> {
  const child = spawn('lzop', ['-1', '-c', input], { stdio: ['ignore', 'pipe', 'inherit'] })
  await pipeline(child.stdout, createWriteStream(output))
  return statSync(output).size
}

describe('base images with a real guest', () => {
  it('two saves 10 s apart: the second against the first is tiny, decodes exactly and restores', {
    timeout: 600_000,
  }, async (ctx) => {
    if (!requireQemu(ctx) || !requireTool(ctx, 'lzop', 'lzop')) return
    const dir = tmpDir('xbzrle-base-qemu-')
    const f = (n: string) => join(dir, n)
    const guest = await startRunningGuest(REWRITING_GUEST, 1, SLOW_START)
    // save 1: paused, then migrated to a file (what virsh save does); the guest then runs on
    await saveRunningGuest(guest, f('first.mig'))
    await sleep(10_000)
    await guest.stop()
    await captureMigration({ guest, out: f('second.mig') })
    const raw = statSync(f('second.mig')).size

    const based = await runCli([
      'encode',
      f('second.mig'),
      '--base',
      f('first.mig'),
      '-o',
      f('second.xbz'),
      '--stats',
    ])
    expect(based.code, based.stderr).toBe(0)
    const alone = await runCli(['encode', f('second.mig'), '-o', f('second-alone.xbz')])
    expect(alone.code, alone.stderr).toBe(0)
    const lzop = await lzop1(f('second.mig'), f('second.lzo'))
    const basedBytes = statSync(f('second.xbz')).size
    const aloneBytes = statSync(f('second-alone.xbz')).size
    console.log(
      `[base-qemu] raw ${raw} B; with --base ${basedBytes} B (${(basedBytes / raw).toFixed(4)} of raw); ` +
        `without ${aloneBytes} B (${(aloneBytes / raw).toFixed(4)}); lzop -1 ${lzop} B (${(lzop / raw).toFixed(4)}); ` +
        `based/without ${(basedBytes / aloneBytes).toFixed(4)}, based/lzop ${(basedBytes / lzop).toFixed(4)}\n${based.stderr}`,
    )
    expect(basedBytes).toBeLessThanOrEqual(0.05 * aloneBytes)
    expect(basedBytes).toBeLessThanOrEqual(0.03 * lzop)

    const back = await runCli(['decode', f('second.xbz'), '--base', f('first.mig'), '-o', f('back.mig')])
    expect(back.code, back.stderr).toBe(0)
    expect(await sha256(f('back.mig'))).toBe(await sha256(f('second.mig')))

    // restore: a fresh QEMU loads the based stream through the decoder, and the guest runs on
    const dest = await startDestination(guest)
    await dest.migrateIncoming(
      `exec:${CLI_SH} decode ${shellQuote(f('second.xbz'))} --base ${shellQuote(f('first.mig'))}`,
    )
    await dest.waitForMigration({ timeoutMs: 180_000 })
    expect(await compareGuestRam(guest, dest)).toBeNull()
    const last = await guest.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 2, 60_000)
  })

  it('live migration to a destination holding a save from 10 s earlier: ≤ 0.5x the wire bytes, RAM identical', {
    timeout: 600_000,
  }, async (ctx) => {
    if (!requireQemu(ctx)) return
    const dir = tmpDir('xbzrle-base-live-')
    const first = join(dir, 'first.mig')
    const source = await startRunningGuest(REWRITING_GUEST, 1, SLOW_START)
    await saveRunningGuest(source, first)
    await sleep(10_000)
    /** One live migration over WebSocket; returns the payload bytes the sender put on the wire. */
    const migrate = async (base: boolean) => {
      const port = await freePort()
      const b = base ? ` --base ${shellQuote(first)}` : ''
      const { dest, stats, encode, decode } = await migrateThrough({
        source,
        encode: `XBZRLE_TOKEN=t0ken ${CLI_SH} send ws://127.0.0.1:${port}/vm --stats${b}`,
        decode: `XBZRLE_TOKEN=t0ken ${CLI_SH} receive --listen 127.0.0.1:${port}${b}`,
        parameters: { 'max-bandwidth': 64 << 20, 'downtime-limit': 1 },
        forceConvergeAfterSyncs: 4,
        timeoutMs: 300_000,
      })
      expect(stats.status).toBe('completed')
      expect(encode.exitCode, encode.stderr).toBe(0)
      expect(decode.exitCode, decode.stderr).toBe(0)
      expect(await compareGuestRam(source, dest)).toBeNull()
      const m = /([\d.]+) (B|KiB|MiB|GiB) sent to/.exec(encode.stderr)
      expect(m, encode.stderr).not.toBeNull()
      const wire = Number(m![1]) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(m![2]!)
      await dest.close({ graceful: false })
      return { wire, stats, stderr: encode.stderr }
    }
    const based = await migrate(true)
    expect(based.stderr).toMatch(/the receiver holds our base sha256:[0-9a-f]{64}: encoding against it/)
    await source.cont()
    const plain = await migrate(false)
    console.log(
      `[base-live] wire bytes with --base ${based.wire} (QEMU sent ${based.stats.ramTransferred}, ${based.stats.dirtySyncCount} syncs), ` +
        `without ${plain.wire} (QEMU sent ${plain.stats.ramTransferred}, ${plain.stats.dirtySyncCount} syncs); ratio ${(based.wire / plain.wire).toFixed(4)}`,
    )
    expect(based.wire).toBeLessThanOrEqual(0.5 * plain.wire)
  })
})
