/**
 * `virsh migrate --live --migrateuri unix:///…` between two libvirtd instances on one machine, through the proxy
 * pair. Each daemon runs in its own mount namespace (unshare -m) with private /run/libvirt, /var/lib/libvirt,
 * /var/log/libvirt and /var/cache/libvirt (bind mounts of per-test directories, so the host can still reach their
 * sockets) and its own host_uuid, which is all libvirt needs to treat them as two hosts. The same migrateuri path
 * /var/lib/libvirt/qemu/xbz.sock is a different file in each namespace, exactly as on two hosts.
 */
import { execFile, spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import {
  buildTestGuest,
  parsePassLines,
  removeTmpDirs,
  requireQemu,
  type SkipContext,
  tmpDir,
} from '@xbzrle/testkit'
import { afterAll, describe, expect, it } from 'vitest'
import { type MigrationProxy, startDestinationProxy, startSourceProxy, tcpConnector } from './proxy.js'

const run = promisify(execFile)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

function requireTwoDaemons(ctx: SkipContext): boolean {
  if (!requireQemu(ctx)) return false
  const missing = ['virsh', 'libvirtd', 'virtlogd', 'unshare'].filter(
    (n) => spawnSync('sh', ['-c', `command -v ${n}`]).status !== 0,
  )
  let why = missing.length ? `needs ${missing.join(', ')}` : ''
  if (!why && process.getuid?.() !== 0) why = 'needs root'
  if (!why && spawnSync('unshare', ['-m', '--propagation', 'private', 'true']).status !== 0) {
    why = 'needs mount namespaces (unshare -m: CAP_SYS_ADMIN)'
  }
  if (!why) return true
  const message = `two-libvirtd migration test ${why}`
  if (process.env.CI === 'true') throw new Error(`${message}; CI=true, so this is a failure, not a skip`)
  console.warn(`[adapter-libvirt] SKIP: ${message}`)
  ctx.skip(message)
  return false
}

interface Daemon {
  base: string
  uri: string
}
const daemons: Daemon[] = []
const proxies: MigrationProxy[] = []

async function startDaemon(base: string): Promise<Daemon> {
  for (const d of ['run', 'log', 'cache']) mkdirSync(join(base, d), { recursive: true })
  const cp = spawnSync('cp', ['-a', '/var/lib/libvirt', join(base, 'lib')])
  if (cp.status !== 0) throw new Error(`cp -a /var/lib/libvirt failed: ${cp.stderr}`)
  writeFileSync(join(base, 'libvirtd.conf'), `host_uuid = "${randomUUID()}"\n`)
  const script = [
    `mount --bind ${base}/run /run/libvirt`,
    `mount --bind ${base}/lib /var/lib/libvirt`,
    `mount --bind ${base}/log /var/log/libvirt`,
    `mount --bind ${base}/cache /var/cache/libvirt`,
    `virtlogd -d -p ${base}/virtlogd.pid`,
    `libvirtd -d -f ${base}/libvirtd.conf -p ${base}/libvirtd.pid`,
  ].join(' && ')
  mkdirSync('/run/libvirt', { recursive: true })
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' })
  const d: Daemon = { base, uri: `qemu+unix:///system?socket=${base}/run/libvirt-sock` }
  daemons.push(d)
  if (r.status !== 0) throw new Error(`starting libvirtd in a mount namespace failed: ${r.stderr}`)
  const deadline = Date.now() + 20_000
  for (;;) {
    try {
      await run('virsh', ['-c', d.uri, 'version'], { timeout: 10_000 })
      return d
    } catch (e) {
      if (Date.now() > deadline)
        throw new Error(`libvirtd in ${base} did not come up: ${(e as Error).message}`)
      await sleep(200)
    }
  }
}

async function stopDaemon(d: Daemon): Promise<void> {
  for (const name of ['libvirtd', 'virtlogd']) {
    try {
      const pid = Number(readFileSync(join(d.base, `${name}.pid`), 'utf8').trim())
      if (pid <= 1) continue
      process.kill(pid, 'SIGTERM')
      for (let i = 0; i < 50; i++) {
        try {
          process.kill(pid, 0)
        } catch {
          break
        }
        await sleep(100)
      }
    } catch {
      // not started or already gone
    }
  }
}

async function virsh(uri: string, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('virsh', ['-c', uri, ...args], { timeout: 120_000 })
    return stdout
  } catch (e) {
    const err = e as Error & { stderr?: string }
    throw new Error(`virsh ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`)
  }
}

afterAll(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()))
  for (const d of daemons.splice(0)) {
    // transient domains die with their QEMU; the daemons do not kill running guests on exit
    await virsh(d.uri, 'destroy', domainName).catch(() => undefined)
    await stopDaemon(d)
  }
  await removeTmpDirs() // after the daemons (and with them their mount namespaces) are gone
})

const domainName = `xbzrle-mig-${process.pid}`

function domainXml(kernel: string, serial: string): string {
  return `<domain type='qemu'>
  <name>${domainName}</name>
  <memory unit='KiB'>${64 * 1024}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${kernel}</kernel>
    <cmdline>workload=sparse mem=32 rate=4000 period=200</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${serial}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none'/>
</domain>
`
}

async function passes(file: string) {
  return parsePassLines(await readFile(file, 'utf8').catch(() => ''))
}

async function waitForPassIn(file: string, n: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const p = await passes(file)
    if ((p.at(-1)?.pass ?? 0) >= n) return
    if (Date.now() > deadline) throw new Error(`guest did not reach pass ${n} in ${file}`)
    await sleep(100)
  }
}

describe('virsh migrate between two libvirtd instances through the proxy pair', () => {
  it('migrates live over --migrateuri unix:///var/lib/libvirt/qemu/xbz.sock, byte-exact, return path on', async (ctx) => {
    if (!requireTwoDaemons(ctx)) return
    const dir = tmpDir('xbzrle-2virtd-')
    chmodSync(dir, 0o755)
    const kernel = join(dir, 'guest.elf')
    copyFileSync(await buildTestGuest(), kernel)
    chmodSync(kernel, 0o644)
    const [src, dst] = await Promise.all([startDaemon(join(dir, 'src')), startDaemon(join(dir, 'dst'))])

    // proxies: the source libvirtd connects to /var/lib/libvirt/qemu/xbz.sock in its namespace; the destination
    // QEMU listens on the same path in the other namespace
    const dstProxy = await startDestinationProxy({
      listen: { host: '127.0.0.1', port: 0 },
      qemuSocket: join(dst.base, 'lib/qemu/xbz.sock'),
      digest: true,
    })
    proxies.push(dstProxy)
    const srcProxy = await startSourceProxy({
      listen: join(src.base, 'lib/qemu/xbz.sock'),
      connect: tcpConnector({ port: Number(dstProxy.address.split(':').pop()) }),
      digest: true,
    })
    proxies.push(srcProxy)

    const serialA = join(dir, 'a.serial')
    const serialB = join(dir, 'b.serial')
    writeFileSync(join(dir, 'domain.xml'), domainXml(kernel, serialA))
    await virsh(src.uri, 'create', join(dir, 'domain.xml'))
    await waitForPassIn(serialA, 3)
    // same domain (UUID) on the destination, with its own serial file
    const migratable = await virsh(src.uri, 'dumpxml', '--migratable', domainName)
    writeFileSync(join(dir, 'dest.xml'), migratable.split(serialA).join(serialB))

    const t0 = Date.now()
    await virsh(
      src.uri,
      'migrate',
      '--live',
      domainName,
      dst.uri,
      '--migrateuri',
      `unix:///var/lib/libvirt/qemu/xbz.sock`,
      '--xml',
      join(dir, 'dest.xml'),
    )
    const ms = Date.now() - t0
    const [s, d] = await Promise.all([srcProxy.waitForSession(1), dstProxy.waitForSession(1)])
    expect(s.ok, s.error).toBe(true)
    expect(d.ok, d.error).toBe(true)
    expect(s.qemuSha256).toBeDefined()
    expect(d.qemuSha256).toBe(s.qemuSha256) // the destination QEMU got exactly what the source QEMU sent
    expect(s.returnPath).toBeGreaterThan(0) // libvirt turned return-path on; PONG + SHUT crossed back
    expect(s.forwardOut).toBeLessThan(s.forwardIn)

    expect(await virsh(dst.uri, 'domstate', domainName)).toMatch(/running/)
    await expect(virsh(src.uri, 'domstate', domainName)).rejects.toThrow(/failed to get domain|not found/i)
    const lastOnSource = (await passes(serialA)).at(-1)?.pass ?? 0
    await waitForPassIn(serialB, 1)
    const firstOnDest = (await passes(serialB))[0]?.pass ?? 0
    await waitForPassIn(serialB, firstOnDest + 3) // the guest runs on at the destination
    expect(await readFile(serialB, 'utf8')).not.toContain('xbzrle-guest boot') // resumed, not rebooted
    // Not asserted: firstOnDest === lastOnSource + 1. libvirt rounds guest RAM to whole MiB, which triggers
    // QEMU 7.2's TCG dirty-tracking bug (see @xbzrle/testkit README: the harness avoids it with +8 KiB, which
    // libvirt does not allow), so the guest's counter page can arrive stale. The sha256 check above proves the
    // proxies delivered exactly the bytes the source QEMU sent.
    console.info(
      `virsh migrate (2 libvirtd, ${ms} ms): QEMU ${s.forwardIn} B → xbzrle ${s.forwardOut} B ` +
        `(ratio ${(s.forwardIn / s.forwardOut).toFixed(2)}), return path ${s.returnPath} B, sha256 equal ` +
        `${s.qemuSha256?.slice(0, 16)}; last pass on source ${lastOnSource}, first on destination ${firstOnDest}`,
    )
  })
})
