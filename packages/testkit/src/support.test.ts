import { execFileSync, spawn } from 'node:child_process'
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import {
  findTool,
  freePort,
  hasQemu,
  lastPassInFile,
  qemuArgs,
  requireLibvirt,
  requireQemu,
  requireTool,
  resolveGuestOptions,
  type SkipContext,
  shellQuote,
  skipOrFail,
  startLibvirtInNamespace,
  stopDaemon,
  testGuestDomainXml,
  tmpDir,
  unixSocketAnswers,
  virsh,
  waitFor,
  waitForPassInFile,
  writeTcgDirtyWorkaroundEmulator,
} from './index.js'
import { wrapCommand, wrappedResult } from './shell.js'
import { removeTmpDirs } from './tmp.js'

afterAll(removeTmpDirs)
afterEach(() => {
  vi.unstubAllEnvs()
  vi.restoreAllMocks()
})

/** A SkipContext that records its notes, with console.warn silenced. */
function recordingCtx(): SkipContext & { notes: (string | undefined)[] } {
  vi.spyOn(console, 'warn').mockImplementation(() => {})
  const notes: (string | undefined)[] = []
  return { notes, skip: (note) => void notes.push(note) }
}

/** A directory holding only links to the named tools (for a PATH that lacks everything else). */
function pathWith(...tools: string[]): string {
  const dir = tmpDir('xbzrle-path-')
  for (const t of tools) {
    const target = findTool(t)
    if (target) symlinkSync(target, join(dir, t))
  }
  return dir
}

describe('gates: require* fail under CI=true and skip visibly otherwise', () => {
  it('requireTool: true when the tool exists, a named skip or a CI failure when it does not', () => {
    const ctx = recordingCtx()
    expect(requireTool(ctx, 'sh', 'dash')).toBe(true)
    expect(ctx.notes).toEqual([])
    vi.stubEnv('CI', 'false')
    expect(requireTool(ctx, 'xbzrle-no-such-tool', 'xbzrle-pkg')).toBe(false)
    expect(ctx.notes).toEqual(['test needs xbzrle-no-such-tool (apt-get install xbzrle-pkg)'])
    vi.stubEnv('CI', 'true')
    expect(() => requireTool(ctx, 'xbzrle-no-such-tool', 'xbzrle-pkg')).toThrow(
      /needs xbzrle-no-such-tool .*CI=true, so this is a failure/,
    )
    expect(ctx.notes).toHaveLength(1) // no skip under CI
  })

  it('requireQemu names the missing QEMU binary', () => {
    vi.stubEnv('XBZRLE_QEMU', '/nonexistent/qemu-system-x86_64')
    expect(hasQemu()).toBe(false)
    vi.stubEnv('CI', 'true')
    expect(() => requireQemu(recordingCtx())).toThrow(/CI=true/)
    vi.stubEnv('CI', '')
    const ctx = recordingCtx()
    expect(requireQemu(ctx)).toBe(false)
    expect(ctx.notes[0]).toMatch(/needs \/nonexistent\/qemu-system-x86_64 .*apt-get install qemu-system-x86/)
  })

  it('requireLibvirt names the missing libvirt tools when QEMU and gcc are there', (ctx) => {
    if (!requireQemu(ctx)) return
    vi.stubEnv('PATH', pathWith('qemu-system-x86_64', 'gcc'))
    vi.stubEnv('CI', '')
    const rec = recordingCtx()
    expect(requireLibvirt(rec, { namespaces: true })).toBe(false)
    expect(rec.notes[0]).toMatch(/needs virsh, libvirtd, virtlogd, unshare \(apt-get install libvirt/)
  })

  it('skipOrFail is the shared primitive', () => {
    const ctx = recordingCtx()
    vi.stubEnv('CI', '')
    expect(skipOrFail(ctx, 'needs a unicorn')).toBe(false)
    expect(ctx.notes).toEqual(['needs a unicorn'])
    expect(console.warn).toHaveBeenCalledWith('[@xbzrle/testkit] SKIP: needs a unicorn')
  })

  it('findTool takes paths with a slash as they are', () => {
    expect(findTool('/bin/sh')).toBe('/bin/sh')
    expect(findTool('/nonexistent/sh')).toBeUndefined()
    expect(findTool('sh')).toMatch(/\/sh$/)
  })
})

describe('waitFor', () => {
  it('returns the first truthy value of a sync or async condition', async () => {
    let n = 0
    expect(await waitFor(() => (++n >= 3 ? `after ${n}` : undefined), 'three calls', { intervalMs: 1 })).toBe(
      'after 3',
    )
    expect(await waitFor(async () => 42, 'an answer')).toBe(42)
  })

  it('times out naming what it waited for; a lazy description is computed only then', async () => {
    const describe = vi.fn(() => 'the moon, tail: xyz')
    await expect(waitFor(() => false, describe, { timeoutMs: 20, intervalMs: 5 })).rejects.toThrow(
      'timed out after 20 ms waiting for the moon, tail: xyz',
    )
    expect(describe).toHaveBeenCalledTimes(1)
  })

  it('an exception of the condition ends the wait at once', async () => {
    let calls = 0
    await expect(
      waitFor(
        () => {
          calls++
          throw new Error('guest died')
        },
        'never',
        { timeoutMs: 60_000 },
      ),
    ).rejects.toThrow('guest died')
    expect(calls).toBe(1)
  })
})

describe('freePort and unix sockets', () => {
  it('freePort gives a port that can be listened on', async () => {
    const port = await freePort()
    expect(port).toBeGreaterThan(0)
    const server = createServer()
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', resolve)
    })
    expect((server.address() as { port: number }).port).toBe(port)
    await new Promise<void>((r) => server.close(() => r()))
  })

  it('unixSocketAnswers is true only while something listens', async () => {
    const path = join(tmpDir('xbzrle-sock-'), 's.sock')
    expect(await unixSocketAnswers(path)).toBe(false)
    const server = createServer((c) => c.destroy())
    await new Promise<void>((r) => server.listen(path, r))
    expect(await unixSocketAnswers(path)).toBe(true)
    await new Promise<void>((r) => server.close(() => r()))
    expect(await unixSocketAnswers(path)).toBe(false)
  })
})

describe('daemons and serial files', () => {
  it('stopDaemon SIGTERMs the pid of a pid file and waits until it is gone', async () => {
    const dir = tmpDir('xbzrle-daemon-')
    const child = spawn('sleep', ['60'], { stdio: 'ignore' })
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_code, signal) => r(signal)))
    writeFileSync(join(dir, 'd.pid'), `${child.pid}\n`)
    await stopDaemon(join(dir, 'd.pid'))
    expect(await exited).toBe('SIGTERM')
    await stopDaemon(join(dir, 'missing.pid')) // never started: no-op
  })

  it('waitForPassInFile follows a serial log written by someone else', async () => {
    const file = join(tmpDir('xbzrle-serial-'), 'serial.log')
    expect(await lastPassInFile(file)).toBe(0)
    writeFileSync(file, 'xbzrle-guest ready\npass 1 checksum 00000001\npass 2 checksum 00000002\npass 3 chec')
    expect(await lastPassInFile(file)).toBe(2)
    expect(await waitForPassInFile(file, 2)).toBe(2)
    await expect(waitForPassInFile(file, 3, { timeoutMs: 30, intervalMs: 5 })).rejects.toThrow(
      /waiting for pass 3 in .*serial tail:\n[\s\S]*pass 3 chec/,
    )
  })

  it('testGuestDomainXml puts the kernel, command line, memory and serial file in place', () => {
    const xml = testGuestDomainXml({
      name: 'd1',
      kernel: '/k.elf',
      cmdline: 'mem=8',
      serial: '/s.log',
      memMiB: 48,
    })
    expect(xml).toContain("<memory unit='KiB'>49152</memory>")
    expect(xml).toContain('<kernel>/k.elf</kernel>')
    expect(xml).toContain('<cmdline>mem=8</cmdline>')
    expect(xml).toContain("<source path='/s.log'/>")
  })

  it("the TCG dirty-page emulator adds 8 KiB to libvirt's -m and pc.ram backend, and refuses an -m it cannot read", () => {
    const dir = tmpDir('xbzrle-emu-')
    // a stand-in QEMU that prints its arguments, one per line
    const qemu = join(dir, 'args')
    writeFileSync(qemu, '#!/bin/sh\nprintf "%s\\n" "$@"\n', { mode: 0o755 })
    const emulator = writeTcgDirtyWorkaroundEmulator(dir, qemu)
    const backend = (id: string, size: number) =>
      `{"qom-type":"memory-backend-ram","id":"${id}","size":${size}}`
    const argv = ['-machine', 'pc,memory-backend=pc.ram', '-m', '64', '-object', backend('pc.ram', 64 << 20)]
    const other = ['-object', backend('other', 4096), '-name', 'a b']
    const out = execFileSync(emulator, [...argv, ...other], { encoding: 'utf8' })
      .split('\n')
      .slice(0, -1)
    const expected = [
      '-machine',
      'pc,memory-backend=pc.ram',
      '-m',
      '65544K',
      '-object',
      backend('pc.ram', 67117056),
    ]
    expect(out).toEqual([...expected, ...other])
    expect(() => execFileSync(emulator, ['-m', 'size=65536k'], { stdio: 'pipe' })).toThrow(
      /unexpected -m size=65536k/,
    )
  })
})

describe('QEMU command line and exec: plumbing (no QEMU started)', () => {
  it('resolves defaults: 64 MiB + 8 KiB for the TCG dirty-page workaround, pc machine', () => {
    const o = resolveGuestOptions({ append: { workload: 'text', mem: 8 } }, '/guest.elf')
    expect(o).toEqual({
      kernel: '/guest.elf',
      append: 'workload=text mem=8',
      memMiB: 64,
      tcgDirtyWorkaround: true,
      ramBytes: 64 * 1024 * 1024 + 8192,
      machine: 'pc',
      extraArgs: [],
    })
    expect(resolveGuestOptions({ memMiB: 32, tcgDirtyWorkaround: false }, '/k').ramBytes).toBe(32 << 20)
  })

  it('qemuArgs: -S with -incoming by default, -m in KiB, extra args last', () => {
    const o = resolveGuestOptions({ memMiB: 32, extraArgs: ['-d', 'guest_errors'] }, '/k')
    const run = { name: 'dest', serialPath: '/t/serial.log', qmpPath: '/t/qmp.sock' }
    const dest = qemuArgs(o, { ...run, incoming: 'defer' })
    expect(dest.join(' ')).toMatch(
      /-m 32776K .*-serial file:\/t\/serial.log -qmp unix:\/t\/qmp.sock,server=on,wait=off/,
    )
    expect(dest.slice(-5)).toEqual(['-incoming', 'defer', '-S', '-d', 'guest_errors'])
    expect(qemuArgs(o, run)).not.toContain('-S')
    expect(qemuArgs(o, { ...run, paused: true })).toContain('-S')
  })

  it('a wrapped command reports its exit status and stderr', async () => {
    const dir = tmpDir('xbzrle-wrap-')
    const out = join(dir, "it's out")
    const cmd = wrapCommand('echo hi; echo oops >&2; (exit 3)', `>${shellQuote(out)}`, dir, 'enc')
    const sh = spawn('/bin/sh', ['-c', cmd], { stdio: 'ignore' })
    await new Promise((r) => sh.once('exit', r))
    expect(await wrappedResult(dir, 'enc')).toEqual({ exitCode: 3, stderr: 'oops\n' })
    expect(readFileSync(out, 'utf8')).toBe('hi\n')
    await expect(wrappedResult(dir, 'never-ran', 30)).rejects.toThrow(/never-ran.status/)
  })
})

describe('libvirt daemons in a mount namespace', () => {
  it('start answer virsh, see the private /etc/libvirt, and stop for good', {
    timeout: 90_000,
  }, async (ctx) => {
    if (!requireLibvirt(ctx, { namespaces: true })) return
    const base = join(tmpDir('xbzrle-lvns-'), 'ns')
    let etcSeen = ''
    const d = await startLibvirtInNamespace(base, {
      configureEtc: (etc) => {
        etcSeen = etc
        writeFileSync(join(etc, 'xbzrle-marker'), 'x')
      },
    })
    try {
      expect(etcSeen).toBe(join(base, 'etc'))
      // its own host_uuid (what makes two instances two hosts for virsh migrate)
      const uuid = /host_uuid = "([^"]+)"/.exec(readFileSync(join(base, 'libvirtd.conf'), 'utf8'))?.[1]
      expect(await virsh(d.uri, ['capabilities'])).toContain(`<uuid>${uuid}</uuid>`)
      expect(await unixSocketAnswers(join(base, 'run/libvirt-sock'))).toBe(true)
      const pid = Number(readFileSync(d.pidFiles.libvirtd, 'utf8').trim())
      // the namespace's /etc/libvirt is the copy: the daemon's mount namespace shows the marker file
      expect(readFileSync(`/proc/${pid}/root/etc/libvirt/xbzrle-marker`, 'utf8')).toBe('x')
    } finally {
      await d.stop()
    }
    expect(await unixSocketAnswers(join(base, 'run/libvirt-sock'))).toBe(false)
    await expect(virsh(d.uri, ['version'], 10_000)).rejects.toThrow(/virsh version failed/)
  })
})
