// The built CLI as a child process: exit codes, stdout bytes, stderr messages.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, fixture, runCli } from './test-cli.js'

let dir: string
let stream: Buffer
let encoded: Buffer

/** A 92-byte libvirt save header (little-endian, as on x86) + XML area + the stream. */
function saveImage(magic: string, format: number, body: Buffer): Buffer {
  const xml = Buffer.from('<domain type="qemu"><name>demo-vm</name></domain>\0')
  const data = Buffer.concat([xml, Buffer.alloc(64 * 1024)])
  const h = Buffer.alloc(92)
  h.write(magic, 0, 'latin1')
  h.writeUInt32LE(2, 16)
  h.writeUInt32LE(data.length, 20)
  h.writeUInt32LE(1, 24)
  h.writeUInt32LE(format, 28)
  return Buffer.concat([h, data, body])
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-cli-'))
  stream = Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 3, seed: 2 }).stream()])
  writeFileSync(join(dir, 'in.mig'), stream)
  const r = await runCli(['encode'], stream)
  expect(r.code).toBe(0)
  encoded = r.stdout
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('xbzrle encode / decode', () => {
  it('stdin → stdout round trip is byte-exact, and stdout carries only data', async () => {
    expect(encoded.length).toBeLessThan(stream.length)
    const d = await runCli(['decode'], encoded)
    expect(d.code).toBe(0)
    expect(d.stderr).toBe('')
    expect(d.stdout.equals(stream)).toBe(true)
  })

  it('FILE arguments and -o, with --stats on stderr', async () => {
    const e = await runCli([
      'encode',
      join(dir, 'in.mig'),
      '-o',
      join(dir, 'x.xbz'),
      '--stats',
      '--mode',
      'compact',
    ])
    expect(e.code).toBe(0)
    expect(e.stdout.length).toBe(0)
    expect(e.stderr).toMatch(/xbzrle encode: .* in, .* out, ratio 0\.\d+/)
    expect(e.stderr).toMatch(/pages: \d+ full, [1-9]\d* delta/)
    const d = await runCli(['decode', join(dir, 'x.xbz'), '-o', join(dir, 'out.mig')])
    expect(d.code).toBe(0)
    expect(readFileSync(join(dir, 'out.mig')).equals(stream)).toBe(true)
  })

  it('libvirt helper forms: -c, -dc --ignore-warn, -d, -cd', async () => {
    const c = await runCli(['-c'], stream)
    expect(c.code).toBe(0)
    for (const args of [['-dc', '--ignore-warn'], ['-d'], ['-cd']]) {
      const d = await runCli(args, c.stdout)
      expect(d.code, args.join(' ')).toBe(0)
      expect(d.stdout.equals(stream)).toBe(true)
    }
  })

  it('a libvirt save image keeps its header and XML, and comes back exactly', async () => {
    const img = saveImage('LibvirtQemudSave', 0, stream)
    const e = await runCli(['encode'], img)
    expect(e.code).toBe(0)
    expect(e.stdout.length).toBeLessThan(img.length)
    const d = await runCli(['decode'], e.stdout)
    expect(d.stdout.equals(img)).toBe(true)
  })

  it('refuses partial and already-compressed save images with a clear line (exit 3)', async () => {
    const partial = await runCli(['encode'], saveImage('LibvirtQemudPart', 0, stream))
    expect(partial.code).toBe(3)
    expect(partial.stderr).toBe(
      'xbzrle: libvirt save image is incomplete (magic LibvirtQemudPart): the save is still running or failed\n',
    )
    const gz = await runCli(['encode'], saveImage('LibvirtQemudSave', 1, stream))
    expect(gz.code).toBe(3)
    expect(gz.stderr).toMatch(/^xbzrle: libvirt save image is already compressed \(gzip\)/)
  })
})

describe('bad input: one line, exit code 3 or 4, never a wrong byte', () => {
  it('truncated stream', async () => {
    const d = await runCli(['decode'], encoded.subarray(0, Math.floor(encoded.length * 0.6)))
    expect(d.code).toBe(3)
    expect(d.stderr.trim().split('\n')).toHaveLength(1)
    expect(d.stderr).toMatch(/^xbzrle: xbzrle stream: .*(truncated|incomplete|ended)/)
    expect(d.stdout.equals(stream.subarray(0, d.stdout.length))).toBe(true)
  })

  it('corrupted stream', async () => {
    const bad = Buffer.from(encoded)
    bad[Math.floor(bad.length / 2)]! ^= 0x40
    const d = await runCli(['decode'], bad)
    expect(d.code).toBe(3)
    expect(d.stderr.trim().split('\n')).toHaveLength(1)
    expect(d.stdout.equals(stream.subarray(0, d.stdout.length))).toBe(true)
    expect(d.stdout.length).toBeLessThan(stream.length)
  })

  it('a raw QEMU stream given to decode gets a hint', async () => {
    const d = await runCli(['decode'], stream)
    expect(d.code).toBe(3)
    expect(d.stderr).toMatch(/not an xbzrle stream \(starts with QEVM.*did you mean `xbzrle encode`\?\)/)
    expect(d.stdout.length).toBe(0)
  })

  it('random bytes and empty input', async () => {
    const d = await runCli(['decode'], Buffer.from('hello world, not a stream'))
    expect(d.code).toBe(3)
    expect((await runCli(['decode'], Buffer.alloc(0))).code).toBe(3)
  })

  it('missing file → exit 4; bad option → exit 2; no stack trace without --debug', async () => {
    const m = await runCli(['decode', join(dir, 'nope.xbz')])
    expect(m.code).toBe(4)
    expect(m.stderr).toBe(`xbzrle: no such file: ${join(dir, 'nope.xbz')}\n`)
    const u = await runCli(['encode', '--cache-size', 'lots'])
    expect(u.code).toBe(2)
    expect(u.stderr).toMatch(/not a size/)
    expect(u.stderr).not.toMatch(/\n\s+at /)
  })

  it('codec options go through the protocol schema: the codec values, a usage error naming the flag', async () => {
    const w = await runCli(['encode', '--ways', '3', join(dir, 'in.mig')])
    expect(w.code).toBe(2)
    expect(w.stderr).toBe('xbzrle: --ways: must be a power of two in 1..128 (got 3)\n')
    const c = await runCli(['encode', '--cache-size', '4K', join(dir, 'in.mig')])
    expect(c.code).toBe(2)
    expect(c.stderr).toBe(
      'xbzrle: --cache-size: must hold at least ways (8) pages of 4096 bytes (got 4096)\n',
    )
    const ok = await runCli(['encode', '--ways', '128', '--cache-size', '1M', join(dir, 'in.mig')])
    expect(ok.code, ok.stderr).toBe(0)
    const d = await runCli(['decode'], ok.stdout)
    expect(d.code, d.stderr).toBe(0)
    expect(d.stdout.equals(stream)).toBe(true)
  })
})

describe('xbzrle inspect', () => {
  it('real QEMU capture --json: record counts match the capture notes', async () => {
    writeFileSync(join(dir, 'pc-idle.mig'), fixture('pc-idle.mig'))
    const r = await runCli(['inspect', '--json', join(dir, 'pc-idle.mig')])
    expect(r.code).toBe(0)
    const j = JSON.parse(r.stdout.toString())
    expect(j.kind).toBe('qemu')
    expect(j.machine).toBe('pc-i440fx-7.2')
    expect(j.pages).toMatchObject({ page: 139, zero: 36875, xbzrle: 0 })
    expect(j.blocks).toHaveLength(8)
  })

  it('an xbzrle stream and a save image, human-readable', async () => {
    writeFileSync(join(dir, 's.xbz'), encoded)
    const x = await runCli(['inspect', join(dir, 's.xbz')])
    expect(x.code).toBe(0)
    expect(x.stdout.toString()).toMatch(/^xbzrle stream, format v3/)
    expect(x.stdout.toString()).toMatch(/decodes to/)
    writeFileSync(join(dir, 'vm.save'), saveImage('LibvirtQemudSave', 0, stream))
    const s = await runCli(['inspect', join(dir, 'vm.save')])
    expect(s.stdout.toString()).toMatch(/^libvirt save image/)
    expect(s.stdout.toString()).toMatch(/domain: demo-vm/)
  })
})

describe('xbzrle demo and help', () => {
  it('demo prints the comparison table and verifies the round trip', async () => {
    const r = await runCli(['demo', '--mem', '8', '--passes', '2'])
    expect(r.code).toBe(0)
    const out = r.stdout.toString()
    expect(out).toMatch(/raw QEMU stream/)
    expect(out).toMatch(/gzip -1/)
    expect(out).toMatch(/decoded stream is byte-identical to the original/)
  })

  it('--help shows the setups and exit codes; each command has an example', async () => {
    const r = await runCli(['--help'])
    expect(r.code).toBe(0)
    expect(r.stdout.toString()).toMatch(/Typical setups/)
    expect(r.stdout.toString()).toMatch(/Exit codes/)
    for (const cmd of ['encode', 'decode', 'inspect', 'demo', 'send', 'receive', 'bench', 'proxy']) {
      const h = await runCli([cmd, '--help'])
      expect(h.code, cmd).toBe(0)
      expect(h.stdout.toString(), cmd).toMatch(/Example/)
    }
  })
})

describe('xbzrle bench', () => {
  it('measures a file and verifies the round trip (--json)', async () => {
    const r = await runCli(['bench', join(dir, 'in.mig'), '--rounds', '1', '--json'])
    expect(r.code).toBe(0)
    const j = JSON.parse(r.stdout.toString())
    expect(j.bytes).toBe(stream.length)
    expect(j.identical).toBe(true)
    expect(j.ratio).toBeGreaterThan(0)
    expect(j.ratio).toBeLessThan(1)
    expect(j.encodeMBps).toBeGreaterThan(0)
  })
})

describe('progress line', () => {
  it('appears on a terminal (pseudo-terminal via script(1)) and never when stderr is not a TTY', async () => {
    const big = Buffer.concat([...new SimulatedGuest({ memMiB: 48, passes: 4 }).stream()])
    writeFileSync(join(dir, 'big.mig'), big)
    const cmd = `${process.execPath} ${CLI} encode ${join(dir, 'big.mig')} -o ${join(dir, 'big.xbz')}`
    const tty = execFileSync('script', ['-qfec', cmd, '/dev/null'], { encoding: 'utf8' })
    expect(tty).toMatch(
      /encode in [\d.]+ \w+ \| out [\d.]+ \w+ \| ratio 0\.\d+ \| \d+ MB\/s \| hit [\d.]+% \| [\d.]+s/,
    )
    const plain = await runCli(['encode', join(dir, 'big.mig'), '-o', join(dir, 'big2.xbz')])
    expect(plain.code).toBe(0)
    expect(plain.stderr).toBe('')
  })
})
