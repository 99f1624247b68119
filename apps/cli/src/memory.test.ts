// Bounded memory on a long stream: ~1 GB of QEMU-format migration through `xbzrle encode | xbzrle decode`,
// with peak RSS of both processes measured by GNU time, and the output checked by SHA-256.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { CLI_SH } from './test-cli.js'

const MiB = 1024 * 1024

describe('memory stays bounded by the cache plus a constant', () => {
  it('encode | decode of a ~1 GB stream', { timeout: 300_000 }, () => {
    // The generator writes a 64 MiB guest's migration with 60 dirty passes and prints its SHA-256 on stderr.
    const gen = `${process.execPath} ${fileURLToPath(new URL('./test-simulate.mjs', import.meta.url))} 64 60`
    const dir = mkdtempSync(join(tmpdir(), 'xbzrle-mem-'))
    const script = `set -o pipefail; ${gen} 2>gen.txt | /usr/bin/time -f 'enc %M' -o enc.txt ${CLI_SH} encode | /usr/bin/time -f 'dec %M' -o dec.txt ${CLI_SH} decode | sha256sum; cat gen.txt enc.txt dec.txt`
    let out: string
    try {
      out = execFileSync('bash', ['-c', script], { encoding: 'utf8', cwd: dir, maxBuffer: 1 << 20 })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
    const digest = /^([0-9a-f]{64})/m.exec(out)?.[1]
    const gen1 = /gen (\d+) ([0-9a-f]{64})/.exec(out)
    expect(gen1, out).not.toBeNull()
    expect(Number(gen1![1])).toBeGreaterThan(900e6)
    expect(digest).toBe(gen1![2])
    // The cache is sized to the guest (64 MiB + 17 MiB of ROM/VGA blocks -> 128 MiB).
    const enc = Number(/enc (\d+)/.exec(out)![1]) * 1024
    const dec = Number(/dec (\d+)/.exec(out)![1]) * 1024
    expect(enc, out).toBeLessThan(128 * MiB + 200 * MiB)
    expect(dec, out).toBeLessThan(128 * MiB + 200 * MiB)
  })
})
