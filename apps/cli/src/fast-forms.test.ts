// The fast forms as the built bin runs them (dist/fast.cjs, not the sources): `-c`, `-dc` and the libvirt helper
// form, including the helper's config file, whose schema (dist/helper-config.cjs) is loaded only on demand; and the
// bin's loader of V8 code caches.
import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { crc32 as zlibCrc32 } from 'node:zlib'
import { FrameReader } from '@xbzrle/protocol'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, fixture, runCli } from './test-cli.js'

let dir: string
let stream: Buffer

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-fast-'))
  stream = fixture('pc-idle.mig')
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Frames of an xbzrle stream by kind. */
function frameKinds(encoded: Uint8Array): Record<string, number> {
  const kinds: Record<string, number> = {}
  const r = new FrameReader()
  r.push(encoded)
  for (let item = r.next(); item !== undefined; item = r.next())
    if (item.type === 'batch') for (const f of item.batch.frames()) kinds[f.kind] = (kinds[f.kind] ?? 0) + 1
  r.finish()
  return kinds
}

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

  it('-dc into a pipe (written behind, straight to fd 1): verified bytes only on a corrupt stream; a reader that goes away gives one line and exit 4', async () => {
    // 22 MB of real QEMU stream: a few dozen batches, so that writes are behind the decoding.
    const big = fixture('pc-xbzrle-dirty.mig')
    const enc = await runCli(['-c'], big)
    expect(enc.code).toBe(0)
    const ok = await runCli(['-dc'], enc.stdout)
    expect(ok.code).toBe(0)
    expect(ok.stdout.equals(big)).toBe(true)
    const bad = Buffer.from(enc.stdout)
    bad[Math.floor(bad.length * 0.6)]! ^= 0x40
    const r = await runCli(['-dc'], bad)
    expect(r.code).toBe(3)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stdout.length).toBeLessThan(big.length)
    expect(r.stdout.equals(big.subarray(0, r.stdout.length))).toBe(true)
    // The destination QEMU gone: `head -c 1` reads a byte and exits, the next write fails with EPIPE.
    const file = join(dir, 'big.xbz')
    writeFileSync(file, enc.stdout)
    const gone = spawnSync(
      'bash',
      [
        '-c',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash expansion, not a template
        'cat "$2" | "$0" "$1" -dc | head -c 1 > /dev/null; exit "${PIPESTATUS[1]}"',
        process.execPath,
        CLI,
        file,
      ],
      { encoding: 'utf8' },
    )
    expect(gone.status, gone.stderr).toBe(4)
    expect(gone.stderr.trim().split('\n')).toHaveLength(1)
  })

  it('bare encode then decode (the fast forms too) give the input back', async () => {
    const enc = await runCli(['encode'], stream)
    expect(enc.code).toBe(0)
    expect(enc.stdout.length).toBeLessThan(stream.length)
    const dec = await runCli(['decode'], enc.stdout)
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

  it('XBZRLE_BYPASS=always: -c sends every page past the cache, and -dc gives the input back', async () => {
    const normal = frameKinds((await runCli(['-c'], stream)).stdout)
    expect(normal.full).toBeGreaterThan(0)
    for (const args of [['-c'], ['encode', '--bypass', 'always']]) {
      const enc = await runCli(args, stream, { XBZRLE_BYPASS: 'always' })
      expect(enc.code).toBe(0)
      const kinds = frameKinds(enc.stdout)
      expect(kinds.verbatim).toBeGreaterThan(0)
      expect((kinds.full ?? 0) + (kinds.zero ?? 0) + (kinds.delta ?? 0)).toBe(0)
      const dec = await runCli(['-dc'], enc.stdout)
      expect(dec.code).toBe(0)
      expect(dec.stdout.equals(stream)).toBe(true)
    }
    // the flag wins over the environment
    const never = frameKinds(
      (await runCli(['encode', '--bypass', 'never'], stream, { XBZRLE_BYPASS: 'always' })).stdout,
    )
    expect(never.full).toBeGreaterThan(0)
  })

  it('a bad XBZRLE_BYPASS: one line naming it, exit 2, no output', async () => {
    const r = await runCli(['-c'], stream, { XBZRLE_BYPASS: 'sometimes' })
    expect(r.code).toBe(2)
    expect(r.stdout.length).toBe(0)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toContain('XBZRLE_BYPASS')
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

describe('the bin loads dist/fast.cjs with a V8 code cache only when it was made from those bytes', () => {
  type Loaded = { exports: unknown; cacheRejected: boolean } | undefined
  const { requireWithCodeCache } = createRequire(import.meta.url)(CLI) as {
    requireWithCodeCache: (file: string) => Loaded
  }
  const makeCache = fileURLToPath(new URL('../scripts/code-cache.cjs', import.meta.url))

  it('the build made a cache for dist/fast.cjs that this node takes (a fresh node, as libvirt starts it)', () => {
    const out = execFileSync(process.execPath, [
      '-e',
      `const r = require(${JSON.stringify(CLI)}).requireWithCodeCache(require.resolve(${JSON.stringify(
        fileURLToPath(new URL('../dist/fast.cjs', import.meta.url)),
      )})); console.log(JSON.stringify({ cache: r !== undefined, rejected: r?.cacheRejected, fast: typeof r?.exports.fastFilter }))`,
    ])
    expect(JSON.parse(String(out))).toEqual({ cache: true, rejected: false, fast: 'function' })
  })

  it('a cache of other bytes of the same length is not used, nor a damaged one', () => {
    const file = join(dir, 'one.cjs')
    writeFileSync(file, "module.exports = 'one'\n")
    execFileSync(process.execPath, [makeCache, file])
    const cache = readFileSync(`${file}.v8cache`)
    expect(requireWithCodeCache(file)).toEqual({ exports: 'one', cacheRejected: false })

    // V8 checks only the length: with the cache of 'one', a same-length 'two' could run as 'one'. The CRC refuses it.
    const other = join(dir, 'two.cjs')
    writeFileSync(other, "module.exports = 'two'\n")
    writeFileSync(`${other}.v8cache`, cache)
    expect(requireWithCodeCache(other)).toBeUndefined()

    // Damaged cache bytes (one byte anywhere after the header, or a cut file) are not handed to V8.
    const damaged = join(dir, 'three.cjs')
    copyFileSync(file, damaged)
    for (const at of [12, 13 + ((cache.length - 13) >> 1), cache.length - 1]) {
      const bad = Buffer.from(cache)
      bad[at]! ^= 0x10
      writeFileSync(`${damaged}.v8cache`, bad)
      expect(requireWithCodeCache(damaged), `byte ${at}`).toBeUndefined()
    }
    writeFileSync(`${damaged}.v8cache`, cache.subarray(0, cache.length - 1))
    expect(requireWithCodeCache(damaged)).toBeUndefined()
    writeFileSync(`${damaged}.v8cache`, cache.subarray(0, 5))
    expect(requireWithCodeCache(damaged)).toBeUndefined()

    // An intact cache of another V8 (here: one whose version and flag hashes do not match): V8 rejects it and the
    // file runs compiled from its source.
    const foreign = Buffer.from(cache)
    foreign.writeUInt32LE(foreign.readUInt32LE(16) ^ 1, 16) // V8's header: magic, then the version hash
    foreign.writeUInt32LE(zlibCrc32(foreign.subarray(12)), 8)
    writeFileSync(`${damaged}.v8cache`, foreign)
    expect(requireWithCodeCache(damaged)).toEqual({ exports: 'one', cacheRejected: true })
  })
})
