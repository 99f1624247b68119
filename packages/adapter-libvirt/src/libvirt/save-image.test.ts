import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, writeFileSync } from 'node:fs'
import { open, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  buildTestGuest,
  firstDifference,
  type LibvirtDaemons,
  lastPassInFile,
  parsePassLines,
  removeTmpDir,
  removeTmpDirs,
  requireLibvirt,
  type SkipContext,
  skipOrFail,
  startHostLibvirt,
  testGuestDomainXml,
  tmpDir,
  virsh,
  waitForPassInFile,
} from '@xbzrle/testkit'
import { afterAll, describe, expect, it } from 'vitest'
import {
  buildSaveImageHeader,
  buildSaveImagePrefix,
  parseSaveImageHeader,
  readSaveImageInfo,
  SAVE_HEADER_SIZE,
  SaveImageError,
} from './save-image.js'

const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url))
const cli = join(repoRoot, 'apps/cli/bin/xbzrle.js')

/** testkit's requireLibvirt (libvirtd, virsh, root) plus the built CLI this file runs. */
function requireLibvirtAndCli(ctx: SkipContext): boolean {
  if (!requireLibvirt(ctx)) return false
  if (existsSync(join(repoRoot, 'apps/cli/dist'))) return true
  return skipOrFail(ctx, 'libvirt test needs the built CLI (npx tsc -b apps/cli)')
}

/** The host's daemons, started on first use when they are not running (and then stopped in afterAll). */
let host: LibvirtDaemons | undefined
afterAll(async () => {
  await host?.stop()
  await removeTmpDirs()
})

function runCli(args: string[]): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stderr: r.stderr, stdout: r.stdout }
}

describe('save image header helpers', () => {
  it('builds headers that parse back, and refuses partial / compressed / future images', () => {
    const prefix = buildSaveImagePrefix('<domain/>', { cookie: '<cookie/>', padding: 100 })
    const h = parseSaveImageHeader(prefix)
    expect(h).toMatchObject({
      version: 2,
      dataLen: 10 + 10 + 100,
      wasRunning: true,
      format: 0,
      cookieOffset: 10,
    })
    expect(() => parseSaveImageHeader(buildSaveImageHeader({ magic: 'partial', dataLen: 10 }))).toThrow(
      /incomplete/,
    )
    expect(() => parseSaveImageHeader(buildSaveImageHeader({ dataLen: 10, format: 4 }))).toThrow(
      /already compressed \(lzop\)/,
    )
    expect(() => parseSaveImageHeader(buildSaveImageHeader({ dataLen: 10, version: 3 }))).toThrow(
      SaveImageError,
    )
    const be = parseSaveImageHeader(buildSaveImageHeader({ dataLen: 77, littleEndian: false }))
    expect(be).toMatchObject({ dataLen: 77, littleEndian: false })
  })
})

describe('virsh save → xbzrle encode → decode → virsh restore (real libvirtd + QEMU)', () => {
  it('round-trips a save image byte for byte and the restored guest runs on', async (ctx) => {
    if (!requireLibvirtAndCli(ctx)) return
    host ??= await startHostLibvirt()
    const { uri } = host
    const virshHost = (...args: string[]) => virsh(uri, args)
    const dir = tmpDir('xbzrle-virsh-')
    chmodSync(dir, 0o755) // QEMU runs as libvirt-qemu and reads the kernel from here
    const kernel = join(dir, 'guest.elf')
    copyFileSync(await buildTestGuest(), kernel)
    chmodSync(kernel, 0o644)
    const serial = join(dir, 'serial.log')
    const name = `xbzrle-save-${process.pid}`
    const xmlFile = join(dir, 'domain.xml')
    writeFileSync(
      xmlFile,
      testGuestDomainXml({
        name,
        kernel,
        serial,
        cmdline: 'workload=sparse mem=16 rate=2000 period=200 seed=7',
      }),
    )
    const img = join(dir, 'vm.save')
    try {
      await virshHost('create', xmlFile)
      await waitForPassInFile(serial, 3)
      await virshHost('save', name, img)
      const passBeforeSave = await lastPassInFile(serial)
      expect(passBeforeSave).toBeGreaterThanOrEqual(3)
      expect((await virshHost('domstate', name).catch((e: Error) => e.message)).trim()).toMatch(
        /shut off|failed to get/,
      )

      // libvirt's header: final magic, raw format, the domain XML, the QEMU stream right after the XML area
      const info = await readSaveImageInfo(img)
      expect(info.header).toMatchObject({ version: 2, format: 0, wasRunning: true })
      expect(info.xml).toContain(`<name>${name}</name>`)
      const fh = await open(img, 'r')
      const qevm = Buffer.alloc(8)
      await fh.read(qevm, 0, 8, info.streamOffset)
      await fh.close()
      expect(qevm.subarray(0, 4).toString('latin1')).toBe('QEVM')

      const enc = runCli(['encode', img, '-o', `${img}.xbz`])
      expect(enc.status, enc.stderr).toBe(0)
      const dec = runCli(['decode', `${img}.xbz`, '-o', `${img}.dec`])
      expect(dec.status, dec.stderr).toBe(0)
      expect(await firstDifference(img, `${img}.dec`)).toBeNull()
      const [raw, xbz] = await Promise.all([stat(img), stat(`${img}.xbz`)])
      console.info(
        `virsh save image ${raw.size} B (XML area ${info.header.dataLen} B) → xbzrle ${xbz.size} B ` +
          `(ratio ${(raw.size / xbz.size).toFixed(3)}); decoded image identical`,
      )

      await virshHost('restore', `${img}.dec`)
      // libvirt truncates the serial file on restore: the guest must go on from pass N+1, not boot again
      await waitForPassInFile(serial, passBeforeSave + 3)
      const text = await readFile(serial, 'utf8')
      const after = parsePassLines(text).filter((p) => p.pass > passBeforeSave)
      expect(after[0]?.pass).toBe(passBeforeSave + 1)
      expect(text).not.toContain('xbzrle-guest boot')
      expect(await virshHost('domstate', name)).toMatch(/running/)
    } finally {
      await virshHost('destroy', name).catch(() => undefined)
      removeTmpDir(dir)
    }
  })

  it('xbzrle encode refuses partial and compressed save images with one clear line', (ctx) => {
    if (!requireLibvirtAndCli(ctx)) return
    const dir = tmpDir('xbzrle-virsh-')
    const body = Buffer.concat([
      Buffer.from(buildSaveImagePrefix('<domain/>', { padding: 16 })),
      Buffer.from('QEVM'),
    ])
    const partial = Buffer.from(body)
    partial.set(buildSaveImageHeader({ magic: 'partial', dataLen: body.length - SAVE_HEADER_SIZE - 4 }))
    const gz = Buffer.from(body)
    gz.set(buildSaveImageHeader({ dataLen: body.length - SAVE_HEADER_SIZE - 4, format: 1 }))
    writeFileSync(join(dir, 'partial.save'), partial)
    writeFileSync(join(dir, 'gzip.save'), gz)

    const p = runCli(['encode', join(dir, 'partial.save'), '-o', join(dir, 'p.xbz')])
    expect(p.status).not.toBe(0)
    expect(p.stderr).toMatch(/incomplete \(magic LibvirtQemudPart\)/)
    expect(p.stderr.trim().split('\n')).toHaveLength(1)
    const g = runCli(['encode', join(dir, 'gzip.save'), '-o', join(dir, 'g.xbz')])
    expect(g.status).not.toBe(0)
    expect(g.stderr).toMatch(/already compressed \(gzip\).*save_image_format = "raw"/)
    expect(g.stderr.trim().split('\n')).toHaveLength(1)
    removeTmpDir(dir)
    console.info(`refusals (exit ${p.status}/${g.status}):\n  ${p.stderr.trim()}\n  ${g.stderr.trim()}`)
  })
})
