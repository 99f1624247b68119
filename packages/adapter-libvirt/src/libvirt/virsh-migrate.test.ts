/**
 * `virsh migrate --live --migrateuri unix:///…` between two libvirtd instances on one machine, through the proxy
 * pair. Each daemon runs in its own mount namespace (testkit's startLibvirtInNamespace: private /run/libvirt,
 * /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, bind mounts of per-test directories, so the host can
 * still reach their sockets) and its own host_uuid, which is all libvirt needs to treat them as two hosts. The
 * same migrateuri path /var/lib/libvirt/qemu/xbz.sock is a different file in each namespace, as on two hosts.
 */
import { chmodSync, copyFileSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  buildTestGuest,
  lastPassInFile,
  type NamespaceLibvirt,
  parsePassLines,
  removeTmpDirs,
  requireLibvirt,
  startLibvirtInNamespace,
  testGuestDomainXml,
  tmpDir,
  virsh,
  waitForPassInFile,
  writeTcgDirtyWorkaroundEmulator,
} from '@xbzrle/testkit'
import { afterAll, describe, expect, it } from 'vitest'
import { type MigrationProxy, startDestinationProxy, startSourceProxy, tcpConnector } from './proxy.js'

const daemons: NamespaceLibvirt[] = []
const proxies: MigrationProxy[] = []
const domainName = `xbzrle-mig-${process.pid}`

afterAll(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()))
  for (const d of daemons.splice(0)) {
    // transient domains die with their QEMU; the daemons do not kill running guests on exit
    await virsh(d.uri, ['destroy', domainName]).catch(() => undefined)
    await d.stop()
  }
  await removeTmpDirs() // after the daemons (and with them their mount namespaces) are gone
})

async function startDaemons(base: string): Promise<NamespaceLibvirt> {
  const d = await startLibvirtInNamespace(base)
  daemons.push(d)
  return d
}

describe('virsh migrate between two libvirtd instances through the proxy pair', () => {
  it('migrates live over --migrateuri unix:///var/lib/libvirt/qemu/xbz.sock, byte-exact, return path on', async (ctx) => {
    if (!requireLibvirt(ctx, { namespaces: true })) return
    const dir = tmpDir('xbzrle-2virtd-')
    chmodSync(dir, 0o755)
    const kernel = join(dir, 'guest.elf')
    copyFileSync(await buildTestGuest(), kernel)
    chmodSync(kernel, 0o644)
    const [src, dst] = await Promise.all([startDaemons(join(dir, 'src')), startDaemons(join(dir, 'dst'))])

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
    const cmdline = 'workload=sparse mem=32 rate=4000 period=200'
    writeFileSync(
      join(dir, 'domain.xml'),
      // the emulator adds 8 KiB of RAM: QEMU 7.2's TCG dirty-tracking bug (testkit README) otherwise leaves the
      // destination guest with stale pages, sometimes a stack it never runs again on
      testGuestDomainXml({
        name: domainName,
        kernel,
        cmdline,
        serial: serialA,
        emulator: writeTcgDirtyWorkaroundEmulator(dir),
      }),
    )
    await virsh(src.uri, ['create', join(dir, 'domain.xml')])
    await waitForPassInFile(serialA, 3)
    // same domain (UUID) on the destination, with its own serial file
    const migratable = await virsh(src.uri, ['dumpxml', '--migratable', domainName])
    writeFileSync(join(dir, 'dest.xml'), migratable.split(serialA).join(serialB))

    const t0 = Date.now()
    await virsh(
      src.uri,
      [
        'migrate',
        '--live',
        domainName,
        dst.uri,
        '--migrateuri',
        `unix:///var/lib/libvirt/qemu/xbz.sock`,
        '--xml',
        join(dir, 'dest.xml'),
      ],
      120_000,
    )
    const ms = Date.now() - t0
    const [s, d] = await Promise.all([srcProxy.waitForSession(1), dstProxy.waitForSession(1)])
    expect(s.ok, s.error).toBe(true)
    expect(d.ok, d.error).toBe(true)
    expect(s.qemuSha256).toBeDefined()
    expect(d.qemuSha256).toBe(s.qemuSha256) // the destination QEMU got exactly what the source QEMU sent
    expect(s.returnPath).toBeGreaterThan(0) // libvirt turned return-path on; PONG + SHUT crossed back
    expect(s.forwardOut).toBeLessThan(s.forwardIn)

    expect(await virsh(dst.uri, ['domstate', domainName])).toMatch(/running/)
    await expect(virsh(src.uri, ['domstate', domainName])).rejects.toThrow(/failed to get domain|not found/i)
    const lastOnSource = await lastPassInFile(serialA)
    await waitForPassInFile(serialB, 1)
    const firstOnDest = parsePassLines(await readFile(serialB, 'utf8'))[0]?.pass ?? 0
    await waitForPassInFile(serialB, firstOnDest + 3) // the guest runs on at the destination
    expect(await readFile(serialB, 'utf8')).not.toContain('xbzrle-guest boot') // resumed, not rebooted
    // Its counter continues where the source stopped: +1, or +2 when the source stopped in the middle of a line
    // (neither file then has that pass as a whole line).
    expect(firstOnDest - lastOnSource).toBeGreaterThanOrEqual(1)
    expect(firstOnDest - lastOnSource).toBeLessThanOrEqual(2)
    console.info(
      `virsh migrate (2 libvirtd, ${ms} ms): QEMU ${s.forwardIn} B → xbzrle ${s.forwardOut} B ` +
        `(ratio ${(s.forwardIn / s.forwardOut).toFixed(2)}), return path ${s.returnPath} B, sha256 equal ` +
        `${s.qemuSha256?.slice(0, 16)}; last pass on source ${lastOnSource}, first on destination ${firstOnDest}`,
    )
  })
})
