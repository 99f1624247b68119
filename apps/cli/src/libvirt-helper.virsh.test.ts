/**
 * libvirt runs xbzrle itself (issue #16): a real libvirtd 9.0 in a private mount namespace (its own /etc/libvirt
 * with save_image_format = dump_image_format = "lzop", /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
 * /var/cache/libvirt: bind mounts of per-test directories), started with the helper directory first on its PATH.
 * The directory is empty at first, so libvirt's first save goes through the real /usr/bin/lzop; then
 * `xbzrle libvirt install --path-dir` puts the wrapper there, and libvirt (which looks `lzop` up on every save and
 * restore) runs the helper from then on. Nothing outside the temp dir and the namespace is touched.
 *
 * One daemon session: a pre-install lzop image restores after install; save/restore, managedsave/start and
 * dump go through the helper (xbzrle magic after libvirt's header); two dumps of the paused guest, one through
 * the helper and one through the real lzop, decode to the same bytes; uninstall refuses while a managed-save
 * image of the helper exists, converts it with --convert-images, and a helper image restored after uninstall
 * fails cleanly (real lzop) and restores after `xbzrle libvirt convert`.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs'
import { open, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { isXbzrleStream } from '@xbzrle/protocol'
import {
  buildTestGuest,
  lastPassInFile,
  type NamespaceLibvirt,
  parsePassLines,
  removeTmpDirs,
  requireLibvirt,
  requireTool,
  type SkipContext,
  sleep,
  startLibvirtInNamespace,
  stopDaemon,
  testGuestDomainXml,
  tmpDir,
  virsh,
  waitForPassInFile,
} from '@xbzrle/testkit'
import { afterAll, describe, expect, it } from 'vitest'
import { describeLibvirtImage, isHelperImage, readLibvirtImage } from './libvirt-helper/image.js'
import { CLI } from './test-cli.js'

/**
 * The command the wrapper runs: the built CLI as installed (bin/xbzrle.js: the launcher, then the fast bundle for
 * the helper form), so that libvirtd runs exactly what users get, start-up path included.
 */
const XBZRLE = [process.execPath, CLI]
const DAEMON_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** Daemons in a private mount namespace (testkit's requireLibvirt) and the real lzop libvirt runs at first. */
function requireLibvirtNs(ctx: SkipContext): boolean {
  return requireLibvirt(ctx, { namespaces: true }) && requireTool(ctx, 'lzop', 'lzop')
}

interface Env {
  dir: string
  daemons: NamespaceLibvirt
  uri: string
  helperDir: string
  conf: string
  manifest: string
  qemuConf: string
  saveDir: string
  libvirtdPid: number
  serial: string
  name: string
}
let env: Env | undefined

/** virsh against this file's daemon: a save, restore or dump of the guest may take longer than testkit's minute. */
function virshIn(e: Env, ...args: string[]): Promise<string> {
  return virsh(e.uri, args, 120_000)
}

afterAll(async () => {
  if (env) {
    await virshIn(env, 'destroy', env.name).catch(() => undefined)
    await virshIn(env, 'undefine', '--managed-save', env.name).catch(() => undefined)
    await env.daemons.stop()
    // a guest left behind by a libvirtd that died (libvirt 9.0 can crash when a dump fails early)
    await stopDaemon(join(env.daemons.base, 'run/qemu', `${env.name}.pid`))
  }
  await removeTmpDirs() // after the daemons (and with them the mount namespace) are gone
})

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = process.hrtime.bigint()
  const r = await f()
  return [r, Number(process.hrtime.bigint() - t0) / 1e6]
}

function xbzrle(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(XBZRLE[0]!, [...XBZRLE.slice(1), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    c.stdout.on('data', (b) => {
      out += b
    })
    c.stderr.on('data', (b) => {
      err += b
    })
    c.on('error', reject)
    c.on('close', (code) => resolve({ code, stdout: out, stderr: err }))
  })
}

/** After a restore libvirt truncates the serial file: the guest must go on from pass `before`+1, not boot again. */
async function expectRunsOnFrom(e: Env, before: number): Promise<void> {
  await waitForPassInFile(e.serial, before + 2)
  const text = await readFile(e.serial, 'utf8')
  expect(parsePassLines(text)[0]?.pass).toBe(before + 1)
  expect(text).not.toContain('xbzrle-guest boot')
  expect(await virshIn(e, 'domstate', e.name)).toMatch(/running/)
}

function sha256File(path: string, start = 0): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256')
    createReadStream(path, { start })
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')))
  })
}

function sha256Of(cmd: string, args: string[]): Promise<{ hash: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    const h = createHash('sha256')
    let bytes = 0
    c.stdout.on('data', (b: Buffer) => {
      h.update(b)
      bytes += b.length
    })
    c.on('error', reject)
    c.on('close', (code) =>
      code === 0 ? resolve({ hash: h.digest('hex'), bytes }) : reject(new Error(`${cmd} exited ${code}`)),
    )
  })
}

/** Private daemons with the helper directory first on PATH and lzop as save and dump format. */
async function setup(): Promise<Env> {
  if (env) return env
  const dir = tmpDir('xbzrle-lvhelper-')
  chmodSync(dir, 0o755) // QEMU runs as libvirt-qemu and reads the kernel from here
  const helperDir = join(dir, 'helper-bin')
  mkdirSync(helperDir)
  const conf = join(dir, 'helper.conf')
  writeFileSync(conf, '# xbzrle helper settings for the test\ncache_size = "64M"\n')
  const daemons = await startLibvirtInNamespace(join(dir, 'ns'), {
    configureEtc: (etc) =>
      appendFileSync(join(etc, 'qemu.conf'), '\nsave_image_format = "lzop"\ndump_image_format = "lzop"\n'),
    path: `${helperDir}:${DAEMON_PATH}`,
  })
  const name = `xbzrle-helper-${process.pid}`
  const e: Env = {
    dir,
    daemons,
    uri: daemons.uri,
    helperDir,
    conf,
    manifest: join(dir, 'manifest.json'),
    qemuConf: join(daemons.base, 'etc/qemu.conf'),
    saveDir: join(daemons.base, 'lib/qemu/save'),
    libvirtdPid: Number(readFileSync(daemons.pidFiles.libvirtd, 'utf8').trim()),
    serial: join(dir, 'serial.log'),
    name,
  }
  env = e
  const kernel = join(dir, 'guest.elf')
  copyFileSync(await buildTestGuest(), kernel)
  chmodSync(kernel, 0o644)
  const cmdline = 'workload=sparse mem=16 rate=2000 period=200 seed=7'
  writeFileSync(join(dir, 'domain.xml'), testGuestDomainXml({ name, kernel, cmdline, serial: e.serial }))
  await virshIn(e, 'define', join(dir, 'domain.xml')) // persistent: managedsave needs it
  return e
}

const commonFlags = (e: Env) => [
  '--manifest',
  e.manifest,
  '--qemu-conf',
  e.qemuConf,
  '--save-dir',
  e.saveDir,
  '--pid',
  String(e.libvirtdPid),
]

/** Runs in order; each step needs the ones before it (one libvirtd session). */
describe.sequential('libvirt runs xbzrle as its lzop (real libvirtd, private mount namespace)', () => {
  const figures: Record<string, number> = {}

  it('a pre-install lzop image restores after install; save/restore through the helper; managedsave/start --bypass-cache', async (ctx) => {
    if (!requireLibvirtNs(ctx)) return
    const e = await setup()
    await virshIn(e, 'start', e.name)
    await waitForPassInFile(e.serial, 3)

    // 1. before install: libvirt runs the real /usr/bin/lzop (the helper directory is still empty)
    const pre = join(e.dir, 'pre-install.save')
    const [, tPreSave] = await timed(() => virshIn(e, 'save', e.name, pre))
    const passPre = await lastPassInFile(e.serial)
    const preInfo = await readLibvirtImage(pre)
    expect(preInfo).toMatchObject({ formatName: 'lzop', payload: 'lzop', partial: false })

    // 2. install: the wrapper goes into the directory that is first on libvirtd's PATH
    const inst = await xbzrle([
      'libvirt',
      'install',
      '--path-dir',
      e.helperDir,
      '--exec',
      XBZRLE.join(' '),
      '--config',
      e.conf,
      ...commonFlags(e),
    ])
    expect(inst.code, inst.stderr).toBe(0)
    expect(inst.stdout).toContain('real lzop: /usr/bin/lzop')
    expect(inst.stdout).toContain(`Environment=PATH=${e.helperDir}:`) // the drop-in is printed, not written
    const st = await xbzrle(['libvirt', 'status', ...commonFlags(e)])
    expect(st.code, st.stderr).toBe(0)
    expect(st.stdout).toContain(`runs the xbzrle helper as lzop (${e.helperDir}/lzop)`)
    expect(st.stdout).toMatch(
      /images saved with the real lzop: restore \(the helper hands them to \/usr\/bin\/lzop\)/,
    )

    // 3. the image saved with the real lzop restores through the helper (passed to the real lzop)
    const [, tPreRestore] = await timed(() => virshIn(e, 'restore', pre))
    await expectRunsOnFrom(e, passPre)

    // 4. save through the helper: libvirt's header says lzop, the payload after it is an xbzrle stream
    const img = join(e.dir, 'helper.save')
    const [, tSave] = await timed(() => virshIn(e, 'save', e.name, img))
    const passSaved = await lastPassInFile(e.serial)
    const info = await readLibvirtImage(img)
    expect(info).toMatchObject({ formatName: 'lzop', payload: 'xbzrle', partial: false })
    const head = Buffer.alloc(8)
    const fd = await open(img, 'r')
    await fd.read(head, 0, 8, info!.streamOffset)
    await fd.close()
    expect(isXbzrleStream(head)).toBe(true)
    expect(describeLibvirtImage(info!, img)).toContain('payload is an xbzrle stream')
    const [, tRestore] = await timed(() => virshIn(e, 'restore', img))
    await expectRunsOnFrom(e, passSaved)

    // 5. managedsave + start, both with --bypass-cache: libvirt_iohelper then sits between the file and the
    // helper (O_DIRECT), so the helper reads and writes pipes instead of the image file
    await virshIn(e, 'managedsave', '--bypass-cache', e.name)
    const passManaged = await lastPassInFile(e.serial)
    const managed = join(e.saveDir, `${e.name}.save`)
    const mInfo = await readLibvirtImage(managed)
    expect(mInfo && isHelperImage(mInfo)).toBe(true)
    await virshIn(e, 'start', '--bypass-cache', e.name)
    await expectRunsOnFrom(e, passManaged)

    const [preSize, size] = await Promise.all([stat(pre), stat(img)])
    Object.assign(figures, {
      lzopImage: preSize.size,
      xbzrleImage: size.size,
      lzopSaveMs: tPreSave,
      lzopRestoreMs: tPreRestore,
      helperSaveMs: tSave,
      helperRestoreMs: tRestore,
    })
    console.info(
      `libvirt helper: save image with real lzop ${preSize.size} B (save ${tPreSave.toFixed(0)} ms, restore through the helper's pass-through ${tPreRestore.toFixed(0)} ms); ` +
        `with the xbzrle helper ${size.size} B (save ${tSave.toFixed(0)} ms, restore ${tRestore.toFixed(0)} ms)`,
    )
  }, 180_000)

  it('virsh dump with dump_image_format = "lzop" writes an xbzrle stream that decodes to the exact bytes QEMU wrote', async (ctx) => {
    if (!requireLibvirtNs(ctx)) return
    const e = await setup()
    expect(existsSync(e.manifest), 'the first test installs the helper').toBe(true)
    // Two dumps of one paused guest cannot be compared: QEMU 7.2 refuses the second ("Can't migrate the vm that
    // was paused due to previous migration") and resuming in between changes the guest's memory. So this dump
    // goes through a test wrapper that tees what QEMU writes before the installed helper sees it.
    const wrapper = join(e.helperDir, 'lzop')
    const installed = readFileSync(wrapper, 'utf8')
    const raw = join(e.dir, 'dump.qemu')
    const exec = installed
      .split('\n')
      .find((l) => l.startsWith('exec '))!
      .slice(5)
    writeFileSync(wrapper, `#!/bin/sh\nset -e\ntee ${raw} | ${exec}\n`)
    const dump = join(e.dir, 'dump.xbz')
    let tDump: number
    try {
      ;[, tDump] = await timed(() => virshIn(e, 'dump', e.name, dump))
    } finally {
      writeFileSync(wrapper, installed)
    }
    const h = Buffer.alloc(16)
    const fh = await open(dump, 'r')
    await fh.read(h, 0, 16, 0)
    await fh.close()
    expect(isXbzrleStream(h)).toBe(true) // a dump has no libvirt header: the file is the helper's output
    const decoded = await sha256Of(XBZRLE[0]!, [...XBZRLE.slice(1), 'decode', dump])
    const qemu = { hash: await sha256File(raw), bytes: (await stat(raw)).size }
    expect(qemu.bytes).toBeGreaterThan(1 << 20) // guest RAM (zero pages are only flags) and device state
    expect(decoded).toEqual(qemu)
    expect(await virshIn(e, 'domstate', e.name)).toMatch(/running/) // libvirt resumes after a dump
    console.info(
      `virsh dump (${tDump.toFixed(0)} ms): QEMU wrote ${qemu.bytes} B (sha256 ${qemu.hash.slice(0, 16)}), ` +
        `the helper stored ${(await stat(dump)).size} B, xbzrle decode gives the same sha256`,
    )
  })

  it('uninstall refuses while a helper managed-save image exists, converts it on request; a helper image then fails cleanly and restores after convert', async (ctx) => {
    if (!requireLibvirtNs(ctx)) return
    const e = await setup()
    expect(existsSync(e.manifest), 'the first test installs the helper').toBe(true)
    expect(await virshIn(e, 'domstate', e.name)).toMatch(/running/)
    await virshIn(e, 'managedsave', e.name)
    const passManaged = await lastPassInFile(e.serial)
    const managed = join(e.saveDir, `${e.name}.save`)
    const orphan = join(e.dir, 'orphan.save') // a helper image uninstall does not know about
    copyFileSync(managed, orphan)

    // a corrupt helper image fails the restore with an error (the helper makes QEMU fail: no libvirt hang)
    const info = (await readLibvirtImage(orphan))!
    const corrupt = join(e.dir, 'corrupt.save')
    const bytes = readFileSync(orphan)
    const at = info.streamOffset + Math.floor((bytes.length - info.streamOffset) / 2)
    bytes[at] = bytes[at]! ^ 0x55
    writeFileSync(corrupt, bytes)
    const corruptErr = await virshIn(e, 'restore', corrupt).then(
      () => '',
      (err: Error) => err.message,
    )
    expect(corruptErr).toMatch(/Failed to restore domain/)
    expect(await virshIn(e, 'domstate', e.name)).toMatch(/shut off/)

    const refused = await xbzrle(['libvirt', 'uninstall', ...commonFlags(e)])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(managed)
    expect(refused.stderr).toContain('--convert-images')
    expect(refused.stderr.trim().split('\n')).toHaveLength(1)
    expect(existsSync(join(e.helperDir, 'lzop'))).toBe(true) // nothing was changed

    const un = await xbzrle(['libvirt', 'uninstall', '--convert-images', ...commonFlags(e)])
    expect(un.code, un.stderr).toBe(0)
    expect(existsSync(join(e.helperDir, 'lzop'))).toBe(false)
    expect(existsSync(e.manifest)).toBe(false)
    expect(await readLibvirtImage(managed)).toMatchObject({ format: 0, payload: 'qemu' })

    // libvirt now runs the real lzop: the orphaned helper image fails, and nothing starts
    const st = await xbzrle(['libvirt', 'status', ...commonFlags(e)])
    expect(st.stdout).toContain('runs /usr/bin/lzop as lzop (not the helper)')
    expect(st.stdout).toContain('images saved by the helper: DO NOT restore')
    // libvirt now runs the real lzop, which cannot read the orphaned helper image. libvirt 9.0 then waits for a
    // QEMU that waits for input (it does so for any file lzop cannot read): the guest never runs, the domain
    // stays paused until `virsh destroy`. That is why uninstall converts the images it knows about.
    let settled: string | undefined
    let sawPaused = false
    const restoring = virshIn(e, 'restore', orphan).then(
      () => {
        settled = 'restored'
      },
      (err: Error) => {
        settled = err.message
      },
    )
    for (let i = 0; i < 300 && settled === undefined; i++) {
      const state = await virshIn(e, 'domstate', e.name).catch(() => '')
      if (/paused/.test(state)) {
        sawPaused = true
        break
      }
      await sleep(100)
    }
    expect(settled).not.toBe('restored')
    expect(await lastPassInFile(e.serial)).toBe(0) // QEMU truncated the serial file at start; the guest never ran
    await virshIn(e, 'destroy', e.name).catch(() => undefined)
    await restoring
    const failed = settled ?? ''
    expect(failed).toMatch(/Failed to restore domain/)
    expect(await virshIn(e, 'domstate', e.name)).toMatch(/shut off/)
    const check = await xbzrle(['libvirt', 'check', orphan])
    expect(check.stdout).toContain(`xbzrle libvirt convert ${orphan} -o ${orphan}.raw`)

    // the converted managed-save image starts the guest without any helper
    await virshIn(e, 'start', e.name)
    await expectRunsOnFrom(e, passManaged)
    await virshIn(e, 'destroy', e.name)
    // and the orphan restores once converted: the same moment of the guest again
    const conv = await xbzrle(['libvirt', 'convert', orphan, '-o', `${orphan}.raw`])
    expect(conv.code, conv.stderr).toBe(0)
    await virshIn(e, 'restore', `${orphan}.raw`)
    await expectRunsOnFrom(e, passManaged)
    console.info(
      `corrupt helper image: ${corruptErr.split('\n').slice(-2).join(' / ')}; after uninstall a helper image ${sawPaused ? 'hung with the domain paused until virsh destroy, then' : 'failed by itself:'} ${failed.split('\n').at(-1)}`,
    )
  }, 180_000)
})
