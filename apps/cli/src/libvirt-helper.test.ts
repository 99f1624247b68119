/**
 * The libvirt helper without libvirt: settings file, argument forms, finding the real program, the helper process
 * (encode/decode/pass-through, exit codes), install/uninstall in a temp root (real dpkg-divert --root), qemu.conf
 * edits and their undo, images whose header says lzop but whose payload is xbzrle.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { buildSaveImagePrefix, EncodeStream, SimulatedGuest, XbzrleDecoder } from '@xbzrle/adapter-libvirt'
import { FrameReader, isXbzrleStream } from '@xbzrle/protocol'
import { removeTmpDirs, requireTool, tmpDir } from '@xbzrle/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  encoderOptionsOf,
  HelperConfigError,
  loadHelperConfig,
  parseConfText,
  validateConfig,
} from './libvirt-helper/config.js'
import { helperThreads } from './libvirt-helper/config-file.js'
import { classifyArgs, parseHelperArgv } from './libvirt-helper/helper.js'
import {
  convertHelperImage,
  decodeHelperImage,
  describeLibvirtImage,
  isHelperImage,
  readLibvirtImage,
} from './libvirt-helper/image.js'
import {
  formatStatus,
  formatsInUse,
  install,
  setConfValue,
  status,
  uninstall,
  wrapperScript,
  wrapperTargetsMissing,
} from './libvirt-helper/install.js'
import { findRealProgram, isHelperWrapper, WRAPPER_MARKER } from './libvirt-helper/real-program.js'
import { CLI, LIBVIRT_HELPER_CLI } from './test-cli.js'

/** The command the wrapper runs: the CLI with the libvirt wiring, from source. */
const XBZRLE = LIBVIRT_HELPER_CLI
/** The built CLI, as `xbzrle libvirt install` sets it up: bin/xbzrle.js and its fast bundle. */
const BUILT_CLI = [process.execPath, CLI]
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

afterAll(() => removeTmpDirs())

let qemuStream: Buffer
let xbzStream: Buffer
beforeAll(async () => {
  qemuStream = Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 1, seed: 3 }).stream()])
  const out: Buffer[] = []
  await pipeline(
    Readable.from([qemuStream]),
    new EncodeStream({}),
    new Writable({
      write(c, _e, cb) {
        out.push(c)
        cb()
      },
    }),
  )
  xbzStream = Buffer.concat(out)
})

function* chunks(b: Buffer, n: number): Generator<Buffer> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n)
}

function script(path: string, body: string): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`)
  chmodSync(path, 0o755)
  return path
}

describe('helper.conf', () => {
  it('parses qemu.conf-style settings and turns every mistake into one line', () => {
    const v = parseConfText(
      '# comment\ncache_size = "256M"  # trailing\nformat_version = 2\ncompression = "zstd"\nencode = false\n',
    )
    expect(validateConfig(v)).toEqual({
      cache_size: 256 << 20,
      format_version: 2,
      compression: 'zstd',
      encode: false,
    })
    const bad = (text: string) => {
      try {
        validateConfig(parseConfText(text, 'h.conf'), 'h.conf')
        return ''
      } catch (e) {
        expect(e).toBeInstanceOf(HelperConfigError)
        expect((e as Error).message).not.toContain('\n')
        return (e as Error).message
      }
    }
    expect(bad('cache_size = "12Q"')).toMatch(/^h\.conf: cache_size: not a size/)
    expect(bad('cache_sise = "1M"')).toMatch(/unknown setting cache_sise \(known: cache_size,/)
    expect(bad('format_version = 9')).toMatch(/format_version: must be one of/)
    expect(bad('format_version = 1\ncompression = "zstd"')).toMatch(/compression needs format_version 2/)
    expect(bad('compression = "brotli"')).toMatch(/compression/)
    expect(bad('real_lzop = "lzop"')).toMatch(/absolute path/)
    expect(bad('cache_size')).toMatch(/line 1: expected key = value/)
    expect(bad('mode = canonical')).toMatch(/values are "strings"/)
    expect(bad('mode = "compact"\nmode = "compact"')).toMatch(/line 2: mode is set twice/)
    expect(bad('threads = -1')).toMatch(/^h\.conf: threads/)
  })

  it('threads: one zstd worker for a paused save on 2+ cores, the CLI default with pages parsed, or as set', () => {
    // pages copied unparsed (no cache_size): the paused guest's vCPU core is free
    expect([1, 2, 4, 8].map((cores) => helperThreads(false, cores))).toEqual([0, 1, 3, 4])
    // pages parsed (a live snapshot): the guest runs, as for `xbzrle -c`
    expect([1, 2, 4, 8].map((cores) => helperThreads(true, cores))).toEqual([0, 0, 3, 4])
    expect(encoderOptionsOf(validateConfig(parseConfText('threads = 0\n')))).toMatchObject({
      pages: false,
      threads: 0,
    })
    expect(encoderOptionsOf(validateConfig(parseConfText('cache_size = "64M"\n')))).toMatchObject({
      pages: true,
      threads: helperThreads(true),
    })
  })

  it('a missing default file means defaults; a missing file that was asked for is an error', () => {
    const dir = tmpDir('xbzrle-lvh-conf-')
    expect(loadHelperConfig(undefined, {}).config).toBeDefined() // /etc/xbzrle/helper.conf absent here or valid
    expect(() => loadHelperConfig(join(dir, 'none.conf'))).toThrow(
      /cannot read helper config .*none\.conf: ENOENT/,
    )
    writeFileSync(join(dir, 'h.conf'), 'ways = 4\n')
    expect(loadHelperConfig(undefined, { XBZRLE_HELPER_CONF: join(dir, 'h.conf') }).config).toEqual({
      ways: 4,
    })
  })
})

describe('helper argument forms', () => {
  it('knows what libvirt runs and leaves everything else to the real program', () => {
    expect(classifyArgs(['-c'])).toBe('compress')
    expect(classifyArgs(['-dc', '--ignore-warn'])).toBe('decompress')
    expect(classifyArgs(['-d', '-c'])).toBe('decompress')
    expect(classifyArgs(['-dc'])).toBe('decompress')
    expect(classifyArgs(['-c', '-3'])).toBe('compress')
    for (const other of [
      [],
      ['-d'],
      ['file.lzo'],
      ['-dc', 'file.lzo'],
      ['-V'],
      ['-t', 'x.lzo'],
      ['-c', '-T0'],
      ['-l'],
    ])
      expect(classifyArgs(other)).toBe('other')
    expect(parseHelperArgv(['-c'])).toBeUndefined()
    expect(
      parseHelperArgv([
        '--libvirt-helper=lzop',
        '--helper-conf=/x',
        '--helper-wrapper=/w',
        '-dc',
        '--ignore-warn',
      ]),
    ).toEqual({
      program: 'lzop',
      conf: '/x',
      wrapper: '/w',
      args: ['-dc', '--ignore-warn'],
    })
  })
})

describe('finding the real program', () => {
  it('skips the helper directory, the wrapper itself (also through a symlink) and other wrappers', () => {
    const dir = tmpDir('xbzrle-lvh-real-')
    for (const d of ['helper', 'alias', 'other', 'real']) mkdirSync(join(dir, d))
    const wrapper = join(dir, 'helper/lzop')
    writeFileSync(wrapper, wrapperScript('lzop', ['/usr/bin/node', '/opt/xbzrle.js']))
    chmodSync(wrapper, 0o755)
    expect(isHelperWrapper(wrapper)).toBe(true)
    symlinkSync(wrapper, join(dir, 'alias/lzop'))
    writeFileSync(join(dir, 'other/lzop'), `#!/bin/sh\n# ${WRAPPER_MARKER}\n`)
    chmodSync(join(dir, 'other/lzop'), 0o755)
    const real = script(join(dir, 'real/lzop'), 'exit 0')
    const path = ['helper', 'alias', 'other', 'real'].map((d) => join(dir, d)).join(':')
    const r = findRealProgram('lzop', { wrapper, path, diverted: [] })
    expect(r.found).toEqual({ path: real, via: 'PATH' })
    expect(r.rejected.join('\n')).toMatch(/alias\/lzop \(that is the helper itself\)/)
    expect(r.rejected.join('\n')).toMatch(/other\/lzop \(another xbzrle helper wrapper\)/)
    // a dpkg-diverted real program next to the wrapper wins over PATH
    const distrib = script(join(dir, 'helper/lzop.distrib'), 'exit 0')
    expect(findRealProgram('lzop', { wrapper, path }).found).toEqual({ path: distrib, via: 'diverted' })
    // an explicit choice that is the helper is refused
    expect(
      findRealProgram('lzop', { wrapper, path, explicit: join(dir, 'alias/lzop') }).found,
    ).toBeUndefined()
    expect(findRealProgram('lzop', { wrapper, path: join(dir, 'helper'), diverted: [] }).why).toMatch(
      /no real lzop found/,
    )
  })
})

interface Ran {
  code: number | null
  stdout: Buffer
  stderr: string
}

function runWrapper(
  wrapper: string,
  args: string[],
  input: Buffer,
  env: NodeJS.ProcessEnv = {},
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const c = spawn(wrapper, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    const out: Buffer[] = []
    let err = ''
    c.stdout.on('data', (b) => out.push(b))
    c.stderr.on('data', (b) => {
      err += b
    })
    c.on('error', reject)
    c.stdin.on('error', () => {})
    c.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }))
    c.stdin.end(input)
  })
}

/** stdin is a regular file positioned at `offset` (as libvirt hands restore the image fd after its header). */
function runWrapperOnFile(
  wrapper: string,
  args: string[],
  file: string,
  offset: number,
  env: NodeJS.ProcessEnv = {},
): Ran {
  const r = spawnSync(
    'sh',
    [
      '-c',
      'dd bs="$1" count=1 of=/dev/null 2>/dev/null; shift; exec "$@"',
      'sh',
      String(offset),
      wrapper,
      ...args,
    ],
    {
      stdio: [Number(openSync(file, 'r')), 'pipe', 'pipe'],
      env: { ...process.env, ...env },
      maxBuffer: 1 << 30,
    },
  )
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() }
}

describe('the helper process (lzop wrapper → xbzrle --libvirt-helper=lzop)', () => {
  let dir: string
  let wrapper: string
  let fakeLog: string
  let env: NodeJS.ProcessEnv
  /**
   * An executable wrapper helper/FILE standing in for `program`, reading the settings `conf` (then in NAME.conf),
   * running `exec` (default: the CLI from source).
   */
  const makeWrapper = (
    file: string,
    program: 'lzop' | 'zstd',
    conf?: { name: string; text: string },
    exec: string[] = XBZRLE,
  ) => {
    const confFile = join(dir, conf ? conf.name : 'helper.conf')
    if (conf) writeFileSync(confFile, conf.text)
    const path = join(dir, 'helper', file)
    writeFileSync(path, wrapperScript(program, exec, confFile))
    chmodSync(path, 0o755)
    return path
  }
  beforeAll(() => {
    dir = tmpDir('xbzrle-lvh-proc-')
    mkdirSync(join(dir, 'helper'))
    mkdirSync(join(dir, 'real'))
    wrapper = makeWrapper('lzop', 'lzop', { name: 'helper.conf', text: 'cache_size = "4M"\n' })
    fakeLog = join(dir, 'real.log')
    // a stand-in for the real lzop: records its argv, copies stdin to stdout, exits 7
    script(join(dir, 'real/lzop'), `echo "$0 $*" > ${fakeLog}\ncat\nexit 7`)
    env = { PATH: `${join(dir, 'helper')}:${join(dir, 'real')}:/usr/bin:/bin` }
  })

  it('encodes a QEMU stream on -c and decodes it on -dc --ignore-warn, byte for byte (pipe and file stdin)', async () => {
    const enc = await runWrapper(wrapper, ['-c'], qemuStream, env)
    expect(enc.code, enc.stderr).toBe(0)
    expect(isXbzrleStream(enc.stdout)).toBe(true)
    expect(existsSync(fakeLog)).toBe(false) // the real program was not involved
    const dec = await runWrapper(wrapper, ['-dc', '--ignore-warn'], enc.stdout, env)
    expect(dec.code, dec.stderr).toBe(0)
    expect(sha(dec.stdout)).toBe(sha(qemuStream))
    // a file on stdin that is positioned after a prefix, like libvirt's image fd after its header
    const file = join(dir, 'img')
    const prefix = Buffer.alloc(1234, 7)
    writeFileSync(file, Buffer.concat([prefix, enc.stdout]))
    const fromFile = runWrapperOnFile(wrapper, ['-dc', '--ignore-warn'], file, prefix.length, env)
    expect(fromFile.code, fromFile.stderr).toBe(0)
    expect(sha(fromFile.stdout)).toBe(sha(qemuStream))
  })

  it('by default copies the stream without parsing pages (a save sends every page once); caches them with cache_size', async () => {
    // biome-ignore lint/suspicious/noExplicitAny: inspect's JSON
    let lastInfo: any
    const cacheOf = async (w: string) => {
      const enc = await runWrapper(w, ['-c'], qemuStream, env)
      expect(enc.code, enc.stderr).toBe(0)
      const file = join(dir, 'cache.xbz')
      writeFileSync(file, enc.stdout)
      const info = JSON.parse(
        execFileSync(XBZRLE[0]!, [...XBZRLE.slice(1), 'inspect', '--json', file], { encoding: 'utf8' }),
      )
      lastInfo = info
      return info.header.cache.cacheBytes
    }
    expect(await cacheOf(wrapper)).toBe(4 << 20) // helper.conf: cache_size = "4M"
    expect(lastInfo.frames.full).toBeGreaterThan(0) // pages parsed and cached
    const defaults = makeWrapper('lzop-defaults', 'lzop', { name: 'defaults.conf', text: '# nothing set\n' })
    expect(await cacheOf(defaults)).toBe(1 << 20)
    // no cache_size: a save sends each page once, so the stream is copied without parsing pages
    expect(Object.keys(lastInfo.frames)).toEqual(['verbatim'])
    expect(lastInfo.batches).toBeGreaterThan(0)
  })

  it('-c batches by size, not by pipe reads: pipe or file in, regular file or pipe out, byte for byte', async () => {
    /** Batches of an xbzrle stream, and what it decodes to (in process: a CLI start per check made this slow). */
    const read = (stream: Uint8Array) => {
      const r = new FrameReader()
      r.push(stream)
      let batches = 0
      for (let item = r.next(); item; item = r.next()) if (item.type === 'batch') batches++
      r.finish()
      const out: Uint8Array[] = []
      const d = new XbzrleDecoder((c) => out.push(c.slice()))
      d.push(stream)
      d.finish()
      return { batches, sha: sha(Buffer.concat(out)) }
    }
    const withFds = <T>(fds: number[], f: () => T): T => {
      try {
        return f()
      } finally {
        for (const fd of fds) closeSync(fd)
      }
    }
    // pages parsed and cached (helper.conf: cache_size = "4M"), and copied unparsed (no cache_size: the default)
    const defaults = makeWrapper('lzop-batches', 'lzop', { name: 'batches.conf', text: '# nothing set\n' })
    const input = join(dir, 'save-in.mig')
    writeFileSync(input, Buffer.concat([Buffer.alloc(100, 1), qemuStream]))
    // ~4 MiB of QEMU stream in 1 MiB batches; the stream path closed one per pipe read (64 and more)
    expect(qemuStream.length).toBeGreaterThan(4 << 20)
    for (const [name, w] of [
      ['cache', wrapper],
      ['defaults', defaults],
    ] as const) {
      // stdin a pipe fed in 64 KiB writes, stdout a regular file: as `virsh save` runs the helper by hand
      const piped = join(dir, `save-piped-${name}.xbz`)
      const out = openSync(piped, 'w')
      const code = await withFds(
        [out],
        () =>
          new Promise<number | null>((resolve, reject) => {
            const c = spawn(w, ['-c'], { stdio: ['pipe', out, 'inherit'], env: { ...process.env, ...env } })
            c.on('error', reject)
            c.on('close', resolve)
            c.stdin!.on('error', () => {})
            Readable.from(chunks(qemuStream, 64 << 10)).pipe(c.stdin!)
          }),
      )
      expect(code, name).toBe(0)
      const fromPipe = read(readFileSync(piped))
      expect(fromPipe.batches, name).toBeLessThan(16)
      expect(fromPipe.sha, name).toBe(sha(qemuStream))
      // stdin a regular file too (read with large reads into reused buffers), positioned after a prefix
      const fromFile = join(dir, `save-file-${name}.xbz`)
      const fds = [openSync(input, 'r'), openSync(fromFile, 'w')]
      const r = withFds(fds, () =>
        spawnSync('sh', ['-c', 'dd bs=100 count=1 of=/dev/null 2>/dev/null; exec "$0" -c', w], {
          stdio: [fds[0]!, fds[1]!, 'pipe'],
          env: { ...process.env, ...env },
        }),
      )
      expect(r.status, r.stderr?.toString()).toBe(0)
      const file = read(readFileSync(fromFile))
      expect(file.batches, name).toBeLessThan(16)
      expect(file.sha, name).toBe(sha(qemuStream))
      // stdout a pipe read at once, as libvirt 9's iohelper pipe: the same batches (bulk pacing, not the live rules)
      const toPipe = await runWrapper(w, ['-c'], qemuStream, env)
      expect(toPipe.code, toPipe.stderr).toBe(0)
      const pipe = read(toPipe.stdout)
      expect(pipe.batches, name).toBe(file.batches)
      expect(pipe.sha, name).toBe(sha(qemuStream))
      // and the helper itself restores it
      const back = await runWrapper(w, ['-dc', '--ignore-warn'], toPipe.stdout, env)
      expect(back.code, back.stderr).toBe(0)
      expect(sha(back.stdout), name).toBe(sha(qemuStream))
    }
  }, 180_000)

  it('-c on real pipes, as libvirt runs it: blocking reads and writes (no end made non-blocking), byte for byte', async () => {
    // libvirt hands the helper a pipe from QEMU and a pipe into libvirt_iohelper. The helper reads and writes them
    // with blocking calls; anything that creates process.stdout (the launcher, a worker's stdio) would make fd 1
    // non-blocking and turn every full pipe into polling. The built CLI, as installed.
    const w = makeWrapper('lzop-fifo', 'lzop', { name: 'fifo.conf', text: '# nothing set\n' }, BUILT_CLI)
    const inFifo = join(dir, 'in.fifo')
    const outFifo = join(dir, 'out.fifo')
    execFileSync('mkfifo', [inFifo, outFifo])
    const c = spawn('sh', ['-c', 'exec "$0" -c < "$1" > "$2"', w, inFifo, outFifo], {
      stdio: ['ignore', 'ignore', 'pipe'],
      // the wrapper drops it: Node reads those certificates at every start, and the helper makes no TLS connection
      env: { ...process.env, ...env, NODE_EXTRA_CA_CERTS: '/dev/null' },
    })
    let err = ''
    c.stderr!.on('data', (b) => {
      err += b
    })
    const exited = new Promise<number | null>((resolve) => c.on('close', resolve))
    const [input, output] = await Promise.all([open(inFifo, 'w'), open(outFifo, 'r')])
    try {
      // the output is read all along (the helper blocks on a full pipe, as with a reader that is behind)
      let firstRecord!: () => void
      const firstOut = new Promise<void>((resolve) => {
        firstRecord = resolve
      })
      const reading = (async () => {
        const out: Buffer[] = []
        for (;;) {
          const r = await output.read(Buffer.alloc(1 << 20), 0, 1 << 20)
          if (r.bytesRead === 0) return Buffer.concat(out)
          out.push(r.buffer.subarray(0, r.bytesRead))
          firstRecord()
        }
      })()
      const half = qemuStream.length >> 1
      await input.write(qemuStream.subarray(0, half))
      await firstOut // a batch is out: the worker runs and the first record was written
      const flags = (fd: number) =>
        Number.parseInt(
          /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/${c.pid}/fdinfo/${fd}`, 'utf8'))![1]!,
          8,
        )
      const O_NONBLOCK = 0o4000
      expect(flags(0) & O_NONBLOCK, 'stdin').toBe(0)
      expect(flags(1) & O_NONBLOCK, 'stdout').toBe(0)
      expect(readFileSync(`/proc/${c.pid}/environ`, 'latin1')).not.toContain('NODE_EXTRA_CA_CERTS')
      await input.write(qemuStream.subarray(half))
      await input.close()
      const encoded = await reading
      expect(await exited, err).toBe(0)
      const decoded: Buffer[] = []
      const d = new XbzrleDecoder((b) => decoded.push(Buffer.from(b)))
      d.push(encoded)
      d.finish()
      expect(sha(Buffer.concat(decoded))).toBe(sha(qemuStream))
    } finally {
      await input.close().catch(() => {})
      await output.close()
      c.kill()
    }
  }, 60_000)

  it('-c on real pipes: a reader that goes away gives one line and exit 4; SIGTERM in a blocked read ends it', async () => {
    // the built CLI as installed, with the default settings
    const w = makeWrapper('lzop-abort', 'lzop', { name: 'abort.conf', text: '# nothing set\n' }, BUILT_CLI)
    const input = join(dir, 'abort-in.mig')
    writeFileSync(input, qemuStream)
    // libvirt's iohelper gone: the helper's blocking write fails with EPIPE (`head -c 1` reads a byte and exits)
    const r = spawnSync(
      'bash',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash expansion, not a template
      ['-c', 'cat "$1" | "$0" -c | head -c 1 > /dev/null; exit "${PIPESTATUS[1]}"', w, input],
      {
        env: { ...process.env, ...env },
        encoding: 'utf8',
      },
    )
    expect(r.status, r.stderr).toBe(4)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^xbzrle \(lzop helper\): /)
    // QEMU stalled: the helper blocks in a read of a pipe that stays open; libvirt's abort (SIGTERM) ends it
    const inFifo = join(dir, 'stall.fifo')
    execFileSync('mkfifo', [inFifo])
    const c = spawn('sh', ['-c', 'exec "$0" -c < "$1" > /dev/null', w, inFifo], {
      stdio: ['ignore', 'ignore', 'ignore'],
      env: { ...process.env, ...env },
    })
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      c.on('close', (_code, sig) => resolve(sig)),
    )
    const qemu = await open(inFifo, 'w')
    try {
      await qemu.write(qemuStream.subarray(0, 100 << 10)) // a QEMU header and some pages, then nothing
      await new Promise((r) => setTimeout(r, 1500)) // the helper started and waits in a read
      c.kill('SIGTERM')
      expect(await exited).toBe('SIGTERM')
    } finally {
      await qemu.close()
    }
  }, 60_000)

  it('hands anything else to the real program: sniffed bytes first, same args, its exit status', async () => {
    const data = Buffer.concat([
      Buffer.from('\x89LZO\0\r\n\x1a\nnot really lzop', 'latin1'),
      Buffer.alloc(300_000, 1),
    ])
    const r = await runWrapper(wrapper, ['-dc', '--ignore-warn'], data, env)
    expect(r.code).toBe(7)
    expect(sha(r.stdout)).toBe(sha(data))
    expect(readFileSync(fakeLog, 'utf8').trim()).toBe(`${join(dir, 'real/lzop')} -dc --ignore-warn`)
    // -c of something that is not a QEMU stream (e.g. `tar --lzop`, a user's file) is real lzop's job too
    const text = Buffer.from('hello, not a migration stream\n')
    const c = await runWrapper(wrapper, ['-c'], text, env)
    expect(c.code).toBe(7)
    expect(c.stdout.toString()).toBe(text.toString())
    // encode = false: new saves go to the real program, QEMU stream or not
    const off = makeWrapper('lzop-off', 'lzop', { name: 'off.conf', text: 'encode = false\n' })
    const o = await runWrapper(off, ['-c'], qemuStream, env)
    expect(o.code).toBe(7)
    expect(sha(o.stdout)).toBe(sha(qemuStream))
    // forms libvirt never uses go straight through
    const v = await runWrapper(wrapper, ['-V'], Buffer.alloc(0), env)
    expect(v.code).toBe(7)
    expect(readFileSync(fakeLog, 'utf8').trim()).toBe(`${join(dir, 'real/lzop')} -V`)
    // a file on stdin is not consumed by sniffing: the real program reads it from the same offset
    const file = join(dir, 'plain')
    writeFileSync(file, Buffer.concat([Buffer.alloc(100, 9), data]))
    const f = runWrapperOnFile(wrapper, ['-dc', '--ignore-warn'], file, 100, env)
    expect(f.code).toBe(7)
    expect(sha(f.stdout)).toBe(sha(data))
  })

  it('with the real /usr/bin/lzop behind it, an lzop file still decompresses', async (ctx) => {
    if (!requireTool(ctx, '/usr/bin/lzop', 'lzop')) return
    const lzo = spawnSync('/usr/bin/lzop', ['-c'], { input: qemuStream, maxBuffer: 1 << 30 }).stdout
    const r = await runWrapper(wrapper, ['-dc', '--ignore-warn'], lzo, {
      PATH: `${join(dir, 'helper')}:/usr/bin:/bin`,
    })
    expect(r.code, r.stderr).toBe(0)
    expect(sha(r.stdout)).toBe(sha(qemuStream))
  })

  it('stands in for zstd the same way (libvirt >= 10.4 runs zstd -c / zstd -dc)', async (ctx) => {
    if (!requireTool(ctx, '/usr/bin/zstd', 'zstd')) return
    const z = makeWrapper('zstd', 'zstd')
    const zenv = { PATH: `${join(dir, 'helper')}:/usr/bin:/bin` }
    const enc = await runWrapper(z, ['-c'], qemuStream, zenv)
    expect(enc.code, enc.stderr).toBe(0)
    expect(isXbzrleStream(enc.stdout)).toBe(true)
    const zst = spawnSync('/usr/bin/zstd', ['-c', '-q'], { input: qemuStream, maxBuffer: 1 << 30 }).stdout
    for (const input of [enc.stdout, zst]) {
      const d = await runWrapper(z, ['-dc'], input, zenv)
      expect(d.code, d.stderr).toBe(0)
      expect(sha(d.stdout)).toBe(sha(qemuStream))
    }
  })

  it('a bad config, a corrupt stream and a lookup loop each give one line and a non-zero exit', async () => {
    const badWrapper = makeWrapper('lzop-bad', 'lzop', { name: 'bad.conf', text: 'cache_size = "lots"\n' })
    const b = await runWrapper(badWrapper, ['-c'], qemuStream, env)
    expect(b.code).toBe(2)
    expect(b.stderr.trim()).toMatch(/^xbzrle \(lzop helper\): .*bad\.conf: cache_size: not a size/)
    expect(b.stderr.trim().split('\n')).toHaveLength(1)

    const enc = await runWrapper(wrapper, ['-c'], qemuStream, env)
    const corrupt = Buffer.from(enc.stdout)
    corrupt[Math.floor(corrupt.length / 2)]! ^= 0x40
    const d = await runWrapper(wrapper, ['-dc'], corrupt, env)
    expect(d.code).toBe(3)
    expect(d.stderr.trim().split('\n')).toHaveLength(1)
    expect(d.stderr).toMatch(/^xbzrle \(lzop helper\): /)
    expect(sha(d.stdout)).not.toBe(sha(qemuStream))
    // the image file on stdin, as libvirt restores (large reads, blocking writes): the same, and what came out
    // before the error is QEMU's stream up to a verified batch, not one byte more
    const file = join(dir, 'corrupt-img')
    writeFileSync(file, Buffer.concat([Buffer.alloc(92, 1), corrupt]))
    const f = runWrapperOnFile(wrapper, ['-dc', '--ignore-warn'], file, 92, env)
    expect(f.code).toBe(3)
    expect(f.stderr.trim().split('\n')).toHaveLength(1)
    expect(f.stderr).toMatch(/^xbzrle \(lzop helper\): /)
    expect(f.stdout.length).toBeLessThan(qemuStream.length)
    expect(f.stdout.equals(qemuStream.subarray(0, f.stdout.length))).toBe(true)

    // real_lzop pointing back at the helper: refused, not an endless chain of helpers
    const loopWrapper = makeWrapper('lzop-loop', 'lzop', {
      name: 'loop.conf',
      text: `real_lzop = "${wrapper}"\n`,
    })
    const l = await runWrapper(loopWrapper, ['-V'], Buffer.alloc(0), env)
    expect(l.code).toBe(2)
    expect(l.stderr).toMatch(/configured real lzop .* the helper itself/)
  })
})

describe('install / uninstall in a temp root', () => {
  function fakeRoot(qemuConf: string, withLzop = true): string {
    const root = tmpDir('xbzrle-lvh-root-')
    for (const d of ['usr/bin', 'var/lib/dpkg/info', 'etc/libvirt', 'var/lib/libvirt/qemu/save'])
      mkdirSync(join(root, d), { recursive: true })
    writeFileSync(join(root, 'var/lib/dpkg/diversions'), '')
    writeFileSync(join(root, 'var/lib/dpkg/status'), '')
    if (withLzop) script(join(root, 'usr/bin/lzop'), 'echo the real lzop')
    writeFileSync(join(root, 'etc/libvirt/qemu.conf'), qemuConf)
    return root
  }
  const QEMU_CONF =
    '# qemu.conf\n#save_image_format = "raw"\n#dump_image_format = "raw"\nuser = "libvirt-qemu"\n'
  const hasDpkgDivert = spawnSync('dpkg-divert', ['--version']).status === 0

  it('Debian method: dpkg-divert --rename, wrapper in /usr/bin, qemu.conf with a backup; uninstall restores every byte', async (ctx) => {
    if (!hasDpkgDivert) {
      ctx.skip('needs dpkg-divert')
      return
    }
    const root = fakeRoot(QEMU_CONF)
    const realBefore = readFileSync(join(root, 'usr/bin/lzop'))
    const log: string[] = []
    install({
      root,
      pids: [],
      exec: ['/usr/bin/node', '/opt/xbzrle.js'],
      setFormat: 'lzop',
      log: (l) => log.push(l),
    })
    expect(readFileSync(join(root, 'usr/bin/lzop.distrib'))).toEqual(realBefore)
    expect(isHelperWrapper(join(root, 'usr/bin/lzop'))).toBe(true)
    expect(statSync(join(root, 'usr/bin/lzop')).mode & 0o777).toBe(0o755)
    expect(spawnSync('dpkg-divert', ['--root', root, '--list'], { encoding: 'utf8' }).stdout).toContain(
      'local diversion of /usr/bin/lzop to /usr/bin/lzop.distrib',
    )
    expect(readFileSync(join(root, 'etc/libvirt/qemu.conf.xbzrle-bak'), 'utf8')).toBe(QEMU_CONF)
    expect(formatsInUse(join(root, 'etc/libvirt/qemu.conf'))).toEqual({
      save_image_format: 'lzop',
      dump_image_format: 'raw',
      snapshot_image_format: 'raw',
    })
    expect(log.join('\n')).toContain(
      'line 2: - #save_image_format = "raw"\n  line 2: + save_image_format = "lzop"',
    )
    // the helper finds the diverted real program next to the wrapper
    expect(
      findRealProgram('lzop', { wrapper: join(root, 'usr/bin/lzop'), path: join(root, 'usr/bin') }).found
        ?.path,
    ).toBe(join(root, 'usr/bin/lzop.distrib'))
    expect(() => install({ root, pids: [], log: () => {} })).toThrow(/already installed/)

    await uninstall({ root, pids: [], log: () => {} })
    expect(readFileSync(join(root, 'usr/bin/lzop'))).toEqual(realBefore)
    expect(existsSync(join(root, 'usr/bin/lzop.distrib'))).toBe(false)
    expect(readFileSync(join(root, 'etc/libvirt/qemu.conf'), 'utf8')).toBe(QEMU_CONF)
    expect(existsSync(join(root, 'etc/libvirt/qemu.conf.xbzrle-bak'))).toBe(false)
    expect(existsSync(join(root, 'var/lib/xbzrle/libvirt-helper.json'))).toBe(false)
    expect(spawnSync('dpkg-divert', ['--root', root, '--list'], { encoding: 'utf8' }).stdout).toBe('')
    await expect(uninstall({ root, pids: [], log: () => {} })).rejects.toThrow(/not installed/)
  })

  it('refuses when libvirt uses lzop and no real lzop would be left; changes nothing', (ctx) => {
    if (!hasDpkgDivert) {
      ctx.skip('needs dpkg-divert')
      return
    }
    const conf = 'save_image_format = "lzop"\n'
    const root = fakeRoot(conf, false)
    expect(() => install({ root, pids: [], log: () => {} })).toThrow(
      /libvirt uses save_image_format = "lzop" and no real lzop would be left .*--force/,
    )
    expect(existsSync(join(root, 'usr/bin/lzop'))).toBe(false)
    expect(existsSync(join(root, 'var/lib/xbzrle/libvirt-helper.json'))).toBe(false)
    expect(readFileSync(join(root, 'etc/libvirt/qemu.conf'), 'utf8')).toBe(conf)
    expect(() => install({ root, pids: [], setFormat: 'lz4' as never, log: () => {} })).toThrow(
      /--set-format must be one of/,
    )
  })

  it('path-dir method: wrapper and drop-in; a qemu.conf edited since install gets only our line reverted', async () => {
    const root = fakeRoot(QEMU_CONF)
    const log: string[] = []
    install({
      root,
      pids: [],
      pathDir: '/opt/xbzrle/bin',
      writeDropIn: true,
      setFormat: 'lzop',
      formatKeys: ['save_image_format', 'dump_image_format'],
      exec: ['/usr/bin/node', '/opt/xbzrle.js'],
      log: (l) => log.push(l),
    })
    const dropIn = join(root, 'etc/systemd/system/libvirtd.service.d/xbzrle-helper.conf')
    expect(readFileSync(dropIn, 'utf8')).toContain('Environment=PATH=/opt/xbzrle/bin:/usr/local/sbin:')
    expect(isHelperWrapper(join(root, 'opt/xbzrle/bin/lzop'))).toBe(true)
    expect(existsSync(join(root, 'usr/bin/lzop.distrib'))).toBe(false) // nothing diverted
    expect(wrapperTargetsMissing(join(root, 'opt/xbzrle/bin/lzop'))).toEqual(['/opt/xbzrle.js'])
    const st = formatStatus(await status({ root, pids: [] }))
    expect(st).toContain('installed: yes (path-dir')
    expect(st).toMatch(/lzop: BROKEN, it runs \/opt\/xbzrle\.js, which no longer exist/)
    const conf = join(root, 'etc/libvirt/qemu.conf')
    writeFileSync(conf, `${readFileSync(conf, 'utf8')}max_files = 4096\n`) // the admin edits it meanwhile
    await uninstall({ root, pids: [], log: (l) => log.push(l) })
    expect(readFileSync(conf, 'utf8')).toBe(`${QEMU_CONF}max_files = 4096\n`)
    expect(existsSync(`${conf}.xbzrle-bak`)).toBe(true) // kept: it was not used to restore
    expect(existsSync(dropIn)).toBe(false)
    expect(existsSync(join(root, 'opt/xbzrle/bin/lzop'))).toBe(false)
    expect(log.join('\n')).toMatch(/edited since install: reverted our lines only/)
  })

  it('setConfValue replaces, uncomments or appends, and says what changed', () => {
    expect(setConfValue('a = 1\nsave_image_format = "raw"\n', 'save_image_format', 'lzop')).toEqual({
      text: 'a = 1\nsave_image_format = "lzop"\n',
      change: {
        key: 'save_image_format',
        line: 2,
        before: 'save_image_format = "raw"',
        after: 'save_image_format = "lzop"',
      },
    })
    expect(setConfValue('x = 1', 'dump_image_format', 'lzop').text).toBe(
      'x = 1\ndump_image_format = "lzop"\n',
    )
    expect(setConfValue('save_image_format = "lzop"\n', 'save_image_format', 'lzop').change).toBeUndefined()
  })

  it('uninstall refuses while helper images would stop restoring, and converts them on request', async () => {
    const root = fakeRoot(QEMU_CONF)
    install({
      root,
      pids: [],
      pathDir: '/opt/xbzrle/bin',
      exec: ['/usr/bin/node', '/opt/xbzrle.js'],
      log: () => {},
    })
    const prefix = buildSaveImagePrefix('<domain><name>vm</name></domain>', {
      cookie: '<cookie/>',
      padding: 4096,
      format: 4,
    })
    const img = join(root, 'var/lib/libvirt/qemu/save/vm.save')
    writeFileSync(img, Buffer.concat([prefix, xbzStream]))
    chmodSync(img, 0o600)
    await expect(uninstall({ root, pids: [], log: () => {} })).rejects.toThrow(
      new RegExp(
        `1 image\\(s\\) written by the helper would no longer restore: ${img}; rerun with --convert-images`,
      ),
    )
    expect(existsSync(join(root, 'opt/xbzrle/bin/lzop'))).toBe(true)
    const s = await status({ root, pids: [] })
    expect(s.helperImages).toEqual([img])
    await uninstall({ root, pids: [], convertImages: true, log: () => {} })
    const raw = buildSaveImagePrefix('<domain><name>vm</name></domain>', {
      cookie: '<cookie/>',
      padding: 4096,
      format: 0,
    })
    expect(sha(readFileSync(img))).toBe(sha(Buffer.concat([raw, qemuStream])))
    expect(statSync(img).mode & 0o777).toBe(0o600)
  })
})

describe('libvirt images whose header says lzop', () => {
  it('tells an xbzrle payload from a real one, explains it, and converts it into a raw image byte for byte', async () => {
    const dir = tmpDir('xbzrle-lvh-img-')
    const xml = '<domain><name>vm</name></domain>'
    const helperImg = join(dir, 'helper.save')
    writeFileSync(helperImg, Buffer.concat([buildSaveImagePrefix(xml, { format: 4 }), xbzStream]))
    const lzopImg = join(dir, 'lzop.save')
    writeFileSync(
      lzopImg,
      Buffer.concat([
        buildSaveImagePrefix(xml, { format: 4 }),
        Buffer.from('\x89LZO\0\r\n\x1a\n....', 'latin1'),
      ]),
    )
    const h = (await readLibvirtImage(helperImg))!
    expect(h).toMatchObject({ formatName: 'lzop', payload: 'xbzrle', partial: false })
    expect(isHelperImage(h)).toBe(true)
    expect(describeLibvirtImage(h, helperImg)).toBe(
      `${helperImg}: libvirt save image whose header says lzop but whose payload is an xbzrle stream (written by the xbzrle libvirt helper; the real lzop cannot read it). Restore it with the helper installed (xbzrle libvirt install), or convert it: xbzrle libvirt convert ${helperImg} -o ${helperImg}.raw && virsh restore ${helperImg}.raw`,
    )
    const l = (await readLibvirtImage(lzopImg))!
    expect(isHelperImage(l)).toBe(false)
    expect(describeLibvirtImage(l, lzopImg)).toMatch(/compressed with lzop \(payload lzop\)/)
    expect(await readLibvirtImage(join(dir, 'helper.save')).then((i) => i?.streamOffset)).toBe(
      92 + buildSaveImagePrefix(xml).length - 92,
    )
    await convertHelperImage(helperImg, join(dir, 'out.save'))
    expect(sha(readFileSync(join(dir, 'out.save')))).toBe(
      sha(Buffer.concat([buildSaveImagePrefix(xml), qemuStream])),
    )
    // xbzrle decode IMAGE (stdout or any Writable): the same raw image; other images are left alone
    const chunks: Buffer[] = []
    const sink = new Writable({
      write(c, _e, cb) {
        chunks.push(c)
        cb()
      },
    })
    expect(await decodeHelperImage(helperImg, sink)).toBe(true)
    expect(sha(Buffer.concat(chunks))).toBe(sha(Buffer.concat([buildSaveImagePrefix(xml), qemuStream])))
    expect(await decodeHelperImage(lzopImg, sink)).toBe(false)
    await expect(convertHelperImage(lzopImg, join(dir, 'x.save'))).rejects.toThrow(
      /not an image written by the xbzrle helper/,
    )
    expect(existsSync(join(dir, 'x.save'))).toBe(false)
  })
})
