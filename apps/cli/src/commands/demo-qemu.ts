import { fileURLToPath } from 'node:url'
import { CliError, ExitCode } from '../errors.js'
import { formatBytes } from '../io.js'

export interface QemuDemoOptions {
  workload: string
  memMiB: number
}

type Testkit = typeof import('@xbzrle/testkit')

/**
 * `demo --qemu`: a real live migration of the project's test guest between two QEMU processes (TCG), through
 * `xbzrle encode` → `xbzrle decode`, verified by comparing guest RAM. The test guest and the QEMU harness live in
 * the repository's private @xbzrle/testkit, so this mode needs a source checkout.
 */
/**
 * The running CLI's launcher. dist/ may be one bundled file, so a path relative to this module is not reliable:
 * prefer the script node is running when that is our launcher.
 */
function launcherPath(): string {
  const running = process.argv[1]
  if (running && /xbzrle(\.js)?$/.test(running)) return running
  return fileURLToPath(new URL('../../bin/xbzrle.js', import.meta.url))
}

export async function runQemuDemo(o: QemuDemoOptions): Promise<void> {
  let tk: Testkit
  try {
    tk = (await import('@xbzrle/testkit' as string)) as Testkit
  } catch {
    throw new CliError(
      'demo --qemu needs a source checkout of xbzrle (the test guest is built from packages/testkit)',
      ExitCode.ENVIRONMENT,
      'git clone the repository, run `npm ci`, then `npm run demo -- --qemu`',
    )
  }
  const missing = tk.missingQemuTools()
  if (missing.length > 0) {
    throw new CliError(
      `demo --qemu: missing ${missing.join(', ')}`,
      ExitCode.ENVIRONMENT,
      'bash scripts/install-deps.sh installs them',
    )
  }
  const cli = `${process.execPath} ${launcherPath()}`
  const region = Math.max(4, o.memMiB - 16)
  process.stderr.write(`demo --qemu: booting a ${o.memMiB} MiB TCG guest (workload ${o.workload})…\n`)
  const source = await tk.startGuest({
    memMiB: o.memMiB,
    append: { workload: o.workload as 'sparse', mem: region, rate: 4000, period: 200 },
  })
  try {
    await source.waitForReady()
    await source.waitForPass(1)
    process.stderr.write('demo --qemu: migrating through xbzrle encode → xbzrle decode…\n')
    const { dest, stats, encode } = await tk.migrateThrough({
      source,
      encode: `${cli} encode --stats`,
      decode: `${cli} decode`,
      parameters: { 'max-bandwidth': 64 << 20, 'downtime-limit': 1 },
      forceConvergeAfterSyncs: 4,
    })
    const m = /([\d.]+ \w+) in, ([\d.]+ \w+) out, ratio ([\d.]+)/.exec(encode.stderr)
    const pages = /pages: ([^\n]+)/.exec(encode.stderr)?.[1] ?? ''
    const hit = /hit rate ([\d.]+%)/.exec(encode.stderr)?.[1] ?? '-'
    const diff = await tk.compareGuestRam(source, dest)
    const last = await source.lastPass()
    await dest.cont()
    await dest.waitForPass(last + 1, 30_000)
    process.stdout.write(
      [
        `xbzrle demo --qemu: real live migration of a ${o.memMiB} MiB guest (QEMU TCG), workload "${o.workload}"`,
        '',
        `  QEMU stream        ${m?.[1] ?? '?'}`,
        `  through xbzrle     ${m?.[2] ?? '?'} (ratio ${m?.[3] ?? '?'})`,
        `  migration          ${stats.totalTimeMs ?? '?'} ms total, ${stats.downtimeMs ?? '?'} ms downtime, ${stats.dirtySyncCount ?? '?'} dirty syncs, ${formatBytes(stats.ramTransferred ?? 0)} RAM sent by QEMU`,
        `  pages              ${pages}; cache hit rate ${hit}`,
        `  verified           ${diff === null ? 'guest RAM identical on both sides' : `RAM DIFFERS at offset ${diff}`}; destination runs on (pass ${last + 1})`,
        '',
      ].join('\n'),
    )
    await dest.close({ graceful: false })
    if (diff !== null) throw new CliError('demo --qemu: guest RAM differs after migration', ExitCode.INTERNAL)
  } finally {
    await source.close({ graceful: false })
    await tk.cleanupTestkit()
  }
}
