// The fast forms as the built bin runs them (dist/fast.mjs and its chunks, not the sources): `-c`, `-dc` and the
// libvirt helper form, including the helper's config file, whose schema the fast bundle loads only on demand.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixture, runCli } from './test-cli.js'

let dir: string
let stream: Buffer

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-fast-'))
  stream = fixture('pc-idle.mig')
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** The format version in an xbzrle stream's prelude (after the 8-byte magic, a varint < 128). */
const versionOf = (b: Buffer) => b[8]

describe('fast forms of the built CLI', () => {
  it('-c then -dc through pipes give the input back', async () => {
    const enc = await runCli(['-c'], stream)
    expect(enc.code).toBe(0)
    expect(enc.stdout.length).toBeLessThan(stream.length)
    const dec = await runCli(['-dc', '--ignore-warn'], enc.stdout)
    expect(dec.code).toBe(0)
    expect(dec.stdout.equals(stream)).toBe(true)
  })

  it('the helper form reads its config file (format_version = 1) and decodes what it wrote', async () => {
    const conf = join(dir, 'helper.conf')
    writeFileSync(conf, 'format_version = 1\n')
    const enc = await runCli(['--libvirt-helper=lzop', `--helper-conf=${conf}`, '-c'], stream)
    expect(enc.stderr).toBe('')
    expect(enc.code).toBe(0)
    expect(versionOf(enc.stdout)).toBe(1)
    const plain = await runCli(['--libvirt-helper=lzop', '-c'], stream, {
      XBZRLE_HELPER_CONF: join(dir, 'none'),
    })
    expect(plain.code).toBe(2) // an explicitly named config that is missing is an error
    const dec = await runCli(
      ['--libvirt-helper=lzop', `--helper-conf=${conf}`, '-dc', '--ignore-warn'],
      enc.stdout,
    )
    expect(dec.code).toBe(0)
    expect(dec.stdout.equals(stream)).toBe(true)
  })

  it('a bad helper config: one line naming the file and the setting, exit 2, no output', async () => {
    const conf = join(dir, 'bad.conf')
    writeFileSync(conf, 'format_version = 9\n')
    const r = await runCli(['--libvirt-helper=lzop', `--helper-conf=${conf}`, '-c'], stream)
    expect(r.code).toBe(2)
    expect(r.stdout.length).toBe(0)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toContain('bad.conf')
    expect(r.stderr).toContain('format_version')
  })
})
