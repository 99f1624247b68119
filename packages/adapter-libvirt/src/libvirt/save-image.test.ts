import { execFile, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { open, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import {
  buildTestGuest,
  firstDifference,
  parsePassLines,
  removeTmpDir,
  removeTmpDirs,
  requireQemu,
  type SkipContext,
  tmpDir,
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

const run = promisify(execFile)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url))
const cli = join(repoRoot, 'apps/cli/bin/xbzrle.js')
const CONN = 'qemu:///system'

function which(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0
}

/** Like the testkit's requireQemu: fails under CI=true, skips visibly otherwise. */
function requireLibvirt(ctx: SkipContext): boolean {
  if (!requireQemu(ctx)) return false
  const missing = ['virsh', 'libvirtd', 'virtlogd'].filter((n) => !which(n))
  let why = missing.length
    ? `needs ${missing.join(', ')} (apt-get install libvirt-daemon-system libvirt-clients)`
    : ''
  if (!why && process.getuid?.() !== 0) why = 'needs root (runs libvirtd and virsh against qemu:///system)'
  if (!why && !existsSync(join(repoRoot, 'apps/cli/dist'))) why = 'needs the built CLI (npx tsc -b apps/cli)'
  if (!why) return true
  const message = `libvirt test ${why}`
  if (process.env.CI === 'true') throw new Error(`${message}; CI=true, so this is a failure, not a skip`)
  console.warn(`[adapter-libvirt] SKIP: ${message}`)
  ctx.skip(message)
  return false
}

async function virsh(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('virsh', ['-c', CONN, ...args], { timeout: 60_000 })
    return stdout
  } catch (e) {
    const err = e as Error & { stderr?: string }
    throw new Error(`virsh ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`)
  }
}

async function libvirtUp(): Promise<boolean> {
  try {
    await run('virsh', ['-c', CONN, 'version'], { timeout: 10_000 })
    return true
  } catch {
    return false
  }
}

/** Daemons this file started (stopped in afterAll by their pid); an already running daemon is reused. */
const started: { name: string; pidFile: string }[] = []

async function ensureLibvirt(): Promise<void> {
  if (await libvirtUp()) return
  for (const [name, pidFile] of [
    ['virtlogd', '/run/virtlogd.pid'],
    ['libvirtd', '/run/libvirtd.pid'],
  ] as const) {
    // a daemon of the host namespace is up when its socket answers (pgrep would also see the namespaced
    // daemons of virsh-migrate.test.ts)
    const sock = name === 'virtlogd' ? '/run/libvirt/virtlogd-sock' : '/run/libvirt/libvirt-sock'
    if (spawnSync('socat', ['-u', 'OPEN:/dev/null', `UNIX-CONNECT:${sock}`]).status === 0) continue
    const r = spawnSync(name, ['-d'], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`${name} -d failed: ${r.stderr}`)
    started.push({ name, pidFile })
  }
  const deadline = Date.now() + 20_000
  while (!(await libvirtUp())) {
    if (Date.now() > deadline)
      throw new Error('libvirtd did not come up within 20 s (virsh -c qemu:///system version)')
    await sleep(200)
  }
}

afterAll(async () => {
  for (const d of started.splice(0).reverse()) {
    try {
      const pid = Number(readFileSync(d.pidFile, 'utf8').trim())
      if (pid > 1) {
        process.kill(pid, 'SIGTERM')
        for (let i = 0; i < 50; i++) {
          try {
            process.kill(pid, 0)
          } catch {
            break
          }
          await sleep(100)
        }
      }
    } catch {
      // already gone
    }
  }
  await removeTmpDirs()
})

function domainXml(o: { name: string; kernel: string; cmdline: string; serial: string }): string {
  return `<domain type='qemu'>
  <name>${o.name}</name>
  <memory unit='KiB'>${64 * 1024}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${o.kernel}</kernel>
    <cmdline>${o.cmdline}</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${o.serial}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none'/>
</domain>
`
}

async function lastPassIn(file: string): Promise<number> {
  const p = parsePassLines(await readFile(file, 'utf8').catch(() => ''))
  return p.length ? p[p.length - 1]!.pass : 0
}

async function waitForPassIn(file: string, n: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await lastPassIn(file)) < n) {
    if (Date.now() > deadline)
      throw new Error(`guest did not reach pass ${n}: ${await readFile(file, 'utf8')}`)
    await sleep(100)
  }
}

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
    if (!requireLibvirt(ctx)) return
    await ensureLibvirt()
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
      domainXml({ name, kernel, serial, cmdline: 'workload=sparse mem=16 rate=2000 period=200 seed=7' }),
    )
    const img = join(dir, 'vm.save')
    try {
      await virsh('create', xmlFile)
      await waitForPassIn(serial, 3)
      await virsh('save', name, img)
      const passBeforeSave = await lastPassIn(serial)
      expect(passBeforeSave).toBeGreaterThanOrEqual(3)
      expect((await virsh('domstate', name).catch((e: Error) => e.message)).trim()).toMatch(
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

      await virsh('restore', `${img}.dec`)
      // libvirt truncates the serial file on restore: the guest must go on from pass N+1, not boot again
      await waitForPassIn(serial, passBeforeSave + 3)
      const text = await readFile(serial, 'utf8')
      const after = parsePassLines(text).filter((p) => p.pass > passBeforeSave)
      expect(after[0]?.pass).toBe(passBeforeSave + 1)
      expect(text).not.toContain('xbzrle-guest boot')
      expect(await virsh('domstate', name)).toMatch(/running/)
    } finally {
      await virsh('destroy', name).catch(() => undefined)
      removeTmpDir(dir)
    }
  })

  it('xbzrle encode refuses partial and compressed save images with one clear line', (ctx) => {
    if (!requireLibvirt(ctx)) return
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
