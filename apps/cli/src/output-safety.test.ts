// No data lost (issue #19): `-o FILE` is replaced only by a complete, verified output; a failure, a refused input,
// the input named as output and a signal all leave the old file byte-identical and no temporary file behind.
// The built CLI runs as a child process; every file is compared by SHA-256.
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  chownSync,
  closeSync,
  cpSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SimulatedGuest, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { removeTmpDir, removeTmpDirs, skipOrFail, tmpDir } from '@xbzrle/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, fixture, runCli } from './test-cli.js'

let dir: string
let stream: Buffer
let encoded: Buffer
/** Distinct, recognisable contents for the file that must survive. */
const GOOD = Buffer.from('a good file that must survive: '.repeat(1000))

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')
const shaFile = (p: string) => sha(readFileSync(p))
const temps = (d: string) => readdirSync(d).filter((n) => n.includes('xbzrle-tmp'))

/** A fresh directory with a good file `out` in it. */
function scene(): { d: string; out: string } {
  const s = mkdtempSync(join(dir, 'scene-'))
  const out = join(s, 'out')
  writeFileSync(out, GOOD)
  return { d: s, out }
}

beforeAll(async () => {
  dir = tmpDir('xbzrle-safety-')
  stream = Buffer.concat([...new SimulatedGuest({ memMiB: 8, passes: 3, seed: 5 }).stream()])
  writeFileSync(join(dir, 'in.mig'), stream)
  const r = await runCli(['encode'], stream)
  expect(r.code).toBe(0)
  encoded = r.stdout
  writeFileSync(join(dir, 'in.xbz'), encoded)
})
afterAll(removeTmpDirs)

/** Runs the CLI with explicit stdio (files as stdin/stdout). */
function runWith(
  args: string[],
  stdio: [number | 'ignore' | 'pipe', number | 'ignore' | 'pipe'],
  cli = CLI,
  extra: string[] = [],
  uid?: number,
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args, ...extra], {
      stdio: [stdio[0], stdio[1], 'pipe'],
      ...(uid === undefined ? {} : { uid, gid: uid }),
    })
    let err = ''
    let out = ''
    child.stderr!.on('data', (b) => (err += b))
    child.stdout?.on('data', (b) => (out += b))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stderr: err, stdout: out }))
  })
}

describe('-o FILE: a good file survives every failure', () => {
  it('encode -o and decode -o round trip is byte-exact, replaces the old file, keeps its mode', async () => {
    const { d, out } = scene()
    const xbz = join(d, 'x.xbz')
    writeFileSync(xbz, GOOD, { mode: 0o640 })
    const e = await runCli(['encode', join(dir, 'in.mig'), '-o', xbz])
    expect(e.code, e.stderr).toBe(0)
    expect(e.stderr).toBe('')
    expect(statSync(xbz).mode & 0o777).toBe(0o640)
    const d1 = await runCli(['decode', xbz, '-o', out])
    expect(d1.code, d1.stderr).toBe(0)
    expect(shaFile(out)).toBe(sha(stream))
    expect(temps(d)).toEqual([])
  })

  it('decode of a truncated stream over a good file: exit 3, file byte-identical, no temp file', async () => {
    const { d, out } = scene()
    const cut = join(d, 'cut.xbz')
    writeFileSync(cut, encoded.subarray(0, Math.floor(encoded.length * 0.7)))
    const r = await runCli(['decode', cut, '-o', out])
    expect(r.code).toBe(3)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(shaFile(out)).toBe(sha(GOOD))
    expect(temps(d)).toEqual([])
  })

  it('bad magic (exit 3) and a missing input (exit 4) leave the good file as it was, not empty', async () => {
    const { d, out } = scene()
    const bad = join(d, 'bad.xbz')
    writeFileSync(bad, 'hello world, this is not an xbzrle stream at all')
    const r = await runCli(['decode', bad, '-o', out])
    expect(r.code).toBe(3)
    expect(shaFile(out)).toBe(sha(GOOD))
    const raw = await runCli(['decode', join(dir, 'in.mig'), '-o', out])
    expect(raw.code).toBe(3)
    expect(shaFile(out)).toBe(sha(GOOD))
    const m = await runCli(['decode', join(d, 'missing.xbz'), '-o', out])
    expect(m.code).toBe(4)
    expect(m.stderr).toBe(`xbzrle: no such file: ${join(d, 'missing.xbz')}\n`)
    expect(shaFile(out)).toBe(sha(GOOD))
    const me = await runCli(['encode', join(d, 'missing.mig'), '-o', out])
    expect(me.code).toBe(4)
    expect(shaFile(out)).toBe(sha(GOOD))
    expect(temps(d)).toEqual([])
  })

  it("libvirt helper forms take lzop's -o FILE as the output (atomic too), not as an input", async () => {
    const { d, out } = scene()
    const c = await runCli(['-c', '-o', out], stream)
    expect(c.code, c.stderr).toBe(0)
    expect(c.stdout.length).toBe(0)
    const back = join(d, 'back.mig')
    const dc = await runCli(['-dc', '--ignore-warn', out, '-o', back])
    expect(dc.code, dc.stderr).toBe(0)
    expect(shaFile(back)).toBe(sha(stream))
    // A failing helper run leaves the file it was told to write as it was.
    const bad = await runCli(['-dc', '-o', back], Buffer.from('not an xbzrle stream'))
    expect(bad.code).toBe(3)
    expect(shaFile(back)).toBe(sha(stream))
    expect(temps(d)).toEqual([])
  })

  it('an existing file the user may not write stays protected; an unwritable directory is a clear error', async (ctx) => {
    if (process.getuid?.() !== 0) return void skipOrFail(ctx, 'needs root to run the CLI as another user')
    const d = tmpDir('xbzrle-perm-')
    try {
      chmodSync(d, 0o777)
      const input = join(d, 'in.mig')
      writeFileSync(input, stream, { mode: 0o644 })
      const ro = join(d, 'ro.xbz')
      writeFileSync(ro, GOOD, { mode: 0o444 })
      chownSync(ro, 65534, 65534)
      const asNobody = (args: string[]) => runWith(args, ['ignore', 'ignore'], CLI, [], 65534)
      const r = await asNobody(['encode', input, '-o', ro])
      expect(r.code, r.stderr).toBe(4)
      expect(r.stderr).toBe(`xbzrle: cannot write ${ro}: permission denied\n`)
      expect(shaFile(ro)).toBe(sha(GOOD))
      const locked = join(d, 'locked')
      mkdirSync(locked, { mode: 0o755 })
      const n = await asNobody(['encode', input, '-o', join(locked, 'new.xbz')])
      expect(n.code).toBe(4)
      expect(n.stderr).toMatch(
        /^xbzrle: cannot write .*new\.xbz: permission denied \(creating a temporary file in .*locked\)\n$/,
      )
      expect(readdirSync(locked)).toEqual([])
      expect(temps(d)).toEqual([])
    } finally {
      removeTmpDir(d)
    }
  })

  it('a new output is not created when the command fails', async () => {
    const { d } = scene()
    const r = await runCli(['decode', join(dir, 'in.mig'), '-o', join(d, 'new.mig')])
    expect(r.code).toBe(3)
    expect(readdirSync(d).sort()).toEqual(['out'])
  })
})

describe('the input named as output is refused (exit 2) and stays unchanged', () => {
  it('decode X -o X, encode X -o X, through a hard link and a symlink', async () => {
    const { d } = scene()
    const xbz = join(d, 'in.xbz')
    const mig = join(d, 'in.mig')
    writeFileSync(xbz, encoded)
    writeFileSync(mig, stream)
    linkSync(xbz, join(d, 'xbz-hard'))
    symlinkSync(xbz, join(d, 'xbz-soft'))
    linkSync(mig, join(d, 'mig-hard'))
    symlinkSync(mig, join(d, 'mig-soft'))
    const cases: [string, string, string][] = [
      ['decode', xbz, xbz],
      ['decode', xbz, join(d, 'xbz-hard')],
      ['decode', xbz, join(d, 'xbz-soft')],
      ['decode', join(d, 'xbz-soft'), xbz],
      ['encode', mig, mig],
      ['encode', mig, join(d, 'mig-hard')],
      ['encode', mig, join(d, 'mig-soft')],
    ]
    for (const [cmd, input, output] of cases) {
      const r = await runCli([cmd, input, '-o', output])
      const what = `${cmd} ${input} -o ${output}`
      expect(r.code, what).toBe(2)
      expect(r.stderr, what).toMatch(/^xbzrle: output .* is the same file as the input .*\n$/)
      expect(shaFile(xbz), what).toBe(sha(encoded))
      expect(shaFile(mig), what).toBe(sha(stream))
    }
    expect(temps(d)).toEqual([])
  })

  it('stdin redirected from the output file (decode -o X < X), and stdout appended to the input', async () => {
    const { d } = scene()
    const xbz = join(d, 'in.xbz')
    writeFileSync(xbz, encoded)
    const fd = openSync(xbz, 'r')
    try {
      const r = await runWith(['decode', '-o', xbz], [fd, 'ignore'])
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/^xbzrle: output .* is the same file as stdin/)
    } finally {
      closeSync(fd)
    }
    expect(shaFile(xbz)).toBe(sha(encoded))
    const afd = openSync(xbz, 'a')
    try {
      const r = await runWith(['decode', xbz], ['ignore', afd])
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/^xbzrle: stdout is the same file as the input/)
    } finally {
      closeSync(afd)
    }
    expect(shaFile(xbz)).toBe(sha(encoded))
  })
})

/** Feeds part of the stream slowly, waits until the command writes its temporary output, then signals it. */
async function interrupt(
  args: string[],
  sig: NodeJS.Signals,
  watchDir: string | undefined,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: number }> {
  const child: ChildProcess = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let err = ''
  let outBytes = 0
  child.stderr!.on('data', (b) => (err += b))
  child.stdout!.on('data', (b: Buffer) => (outBytes += b.length))
  child.stdin!.on('error', () => {})
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('close', (code, signal) => r({ code, signal })),
  )
  // The first part of the stream, then nothing: the command sits mid-stream with its output open.
  child.stdin!.write(stream.subarray(0, 3 << 20))
  const deadline = Date.now() + 15_000
  const started = () => (watchDir ? temps(watchDir).length > 0 : outBytes > 0)
  while (Date.now() < deadline && !started()) await new Promise((r) => setTimeout(r, 20))
  child.kill(sig)
  const { code, signal } = await closed
  return { code, signal, stderr: err, stdout: outBytes }
}

describe('signals: one line on stderr, exit 128+signo, the old output untouched, no temp file', () => {
  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
    ['SIGHUP', 129],
  ] as const)('%s mid-encode with -o', async (sig, status) => {
    const { d, out } = scene()
    const r = await interrupt(['encode', '-o', out], sig, d)
    expect(r.signal).toBeNull()
    expect(r.code).toBe(status)
    expect(r.stderr).toBe(`xbzrle: interrupted by ${sig}; ${out} left unchanged\n`)
    expect(shaFile(out)).toBe(sha(GOOD))
    expect(temps(d)).toEqual([])
  })

  it('SIGTERM mid-decode with -o of a new file: nothing is created', async () => {
    const { d } = scene()
    const target = join(d, 'new.mig')
    const child = spawn(process.execPath, [CLI, 'decode', '-o', target], {
      stdio: ['pipe', 'ignore', 'pipe'],
    })
    let err = ''
    child.stderr.on('data', (b) => (err += b))
    const closed = new Promise<number | null>((r) => child.on('close', (c) => r(c)))
    child.stdin.on('error', () => {})
    child.stdin.write(encoded.subarray(0, encoded.length >> 1))
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline && temps(d).length === 0) await new Promise((r) => setTimeout(r, 20))
    child.kill('SIGTERM')
    expect(await closed).toBe(143)
    expect(err).toBe(`xbzrle: interrupted by SIGTERM; ${target} not written\n`)
    expect(readdirSync(d).sort()).toEqual(['out'])
  })

  it('SIGTERM mid-encode to stdout: one line and exit 143', async () => {
    const r = await interrupt(['encode'], 'SIGTERM', undefined)
    expect(r.code).toBe(143)
    expect(r.stderr).toBe('xbzrle: interrupted by SIGTERM\n')
  })
})

describe('a truncated QEMU input is not silently accepted', () => {
  /** Where the simulated stream's device state begins: the end of its RAM part, an item boundary. */
  function ramEnd(b: Buffer): number {
    const e = new XbzrleEncoder(() => {})
    e.push(b)
    e.finish()
    const pt = e.stats.qemu.passthrough
    expect(pt?.reason).toBe('device-state')
    return pt!.offset
  }

  it('warns by default (exit 0, output still decodes to the same bytes) and fails with --strict', async () => {
    const cuts = [
      { name: 'inside an item', bytes: stream.subarray(0, Math.floor(stream.length * 0.6) + 3) },
      { name: 'at an item boundary', bytes: stream.subarray(0, ramEnd(stream)) },
    ]
    for (const { name, bytes } of cuts) {
      const e = await runCli(['encode'], bytes)
      expect(e.code, name).toBe(0)
      expect(e.stderr, name).toMatch(/^xbzrle encode: warning: the QEMU stream is truncated: .+\n$/)
      const d = await runCli(['decode'], e.stdout)
      expect(sha(d.stdout), name).toBe(sha(bytes))

      const { d: sd, out } = scene()
      const input = join(sd, 'cut.mig')
      writeFileSync(input, bytes)
      const s = await runCli(['encode', input, '--strict', '-o', out])
      expect(s.code, name).toBe(3)
      expect(s.stderr, name).toMatch(/^xbzrle: the QEMU stream is truncated: .+\(--strict\)\n$/)
      expect(shaFile(out), name).toBe(sha(GOOD))
      expect(temps(sd)).toEqual([])
    }
  })

  it('a truncated libvirt save image: the byte offset counts the header and XML; --strict to stdout exits 3', async () => {
    const xml = Buffer.concat([
      Buffer.from('<domain type="qemu"><name>t</name></domain>\0'),
      Buffer.alloc(4096),
    ])
    const h = Buffer.alloc(92)
    h.write('LibvirtQemudSave', 0, 'latin1')
    h.writeUInt32LE(2, 16)
    h.writeUInt32LE(xml.length, 20)
    h.writeUInt32LE(1, 24)
    const image = Buffer.concat([h, xml, stream])
    const cut = image.subarray(0, 92 + xml.length + Math.floor(stream.length / 2) + 5)
    const e = await runCli(['encode'], cut)
    expect(e.code).toBe(0)
    const m = /inside an item \((\d+) bytes\) at byte (\d+); the output decodes/.exec(e.stderr)
    expect(m, e.stderr).not.toBeNull()
    // The unfinished item is the tail of the input: where it starts plus its length is the input's length.
    expect(Number(m![2]) + Number(m![1])).toBe(cut.length)
    expect(sha((await runCli(['decode'], e.stdout)).stdout)).toBe(sha(cut))
    const s = await runCli(['encode', '--strict'], cut)
    expect(s.code).toBe(3)
    expect(s.stderr.trim().split('\n')).toHaveLength(1)
    const head = await runCli(['encode'], image.subarray(0, 92 + 100))
    expect(head.stderr).toMatch(/truncated: the input ended after 192 bytes, before the QEMU stream began/)
  })

  it('complete streams (simulated and real QEMU captures) encode without a warning, also with --strict', async () => {
    const f = await runCli(['encode', '--strict'], stream)
    expect(f.code).toBe(0)
    expect(f.stderr).toBe('')
    for (const name of ['pc-idle.mig', 'multifd-c0.s2d', 'postcopy-c0.s2d']) {
      const r = await runCli(['encode', '--strict'], fixture(name))
      expect(r.code, name).toBe(0)
      expect(r.stderr, name).toBe('')
    }
  })

  it('input that is not a QEMU stream is copied with a warning, and refused with --strict', async () => {
    const junk = Buffer.from('not a migration stream, just some bytes\n'.repeat(100))
    const e = await runCli(['encode'], junk)
    expect(e.code).toBe(0)
    expect(e.stderr).toMatch(/^xbzrle encode: warning: .*not a QEMU migration stream.*\n$/)
    expect(sha((await runCli(['decode'], e.stdout)).stdout)).toBe(sha(junk))
    const s = await runCli(['encode', '--strict'], junk)
    expect(s.code).toBe(3)
  })
})

describe('--version', () => {
  it('comes from the package.json next to the installed dist/ (a copy with another version)', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
    const r = await runCli(['--version'])
    expect(r.code).toBe(0)
    expect(r.stdout.toString()).toBe(`${pkg.version}\n`)
    // The layout of a packed install: package.json, bin/ and dist/ side by side, dependencies in node_modules.
    const root = fileURLToPath(new URL('..', import.meta.url))
    const inst = mkdtempSync(join(dir, 'installed-'))
    cpSync(join(root, 'bin'), join(inst, 'bin'), { recursive: true })
    cpSync(join(root, 'dist'), join(inst, 'dist'), { recursive: true })
    writeFileSync(join(inst, 'package.json'), JSON.stringify({ ...pkg, version: '9.8.7-test.1' }))
    symlinkSync(join(root, '..', '..', 'node_modules'), join(inst, 'node_modules'))
    const v = await runWith([], ['ignore', 'pipe'], join(inst, 'bin', 'xbzrle.js'), ['--version'])
    expect(v.code, v.stderr).toBe(0)
    expect(v.stdout).toBe('9.8.7-test.1\n')
  })
})
