// The file-to-file path (file-filter.ts): `xbzrle -c < FILE > FILE` and `-dc`, run by the built CLI with stdin
// and stdout redirected to regular files by the shell, as libvirt's save/restore and the bench run it.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitFor } from '@xbzrle/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, CLI_SH, fixture, runCli } from './test-cli.js'

let dir: string
let stream: Buffer

/** Runs `sh -c SCRIPT` in the test directory; returns the exit status and stderr. */
function sh(script: string): { status: number; stderr: string } {
  const r = spawnSync('sh', ['-c', script], { cwd: dir, encoding: 'utf8' })
  return { status: r.status ?? -1, stderr: r.stderr }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-file-'))
  // 22 MB of real QEMU 7.2 stream with QEMU's own XBZRLE records: several batches, reads and page kinds.
  stream = fixture('pc-xbzrle-dirty.mig')
  writeFileSync(join(dir, 'in.mig'), stream)
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('file to file', () => {
  it('encodes and decodes byte-exactly, from stdin and from a file argument, and the bytes decode in a pipe too', async () => {
    const v2 = `${CLI_SH} encode --format-version 2`
    expect(sh(`${v2} < in.mig > a.xbz && ${v2} in.mig > b.xbz && ${CLI_SH} -c < in.mig > c.xbz`).status).toBe(
      0,
    )
    const a = readFileSync(join(dir, 'a.xbz'))
    // No idle flush on a file: the same input gives the same bytes however it is named (v2: v3 streams carry a
    // random stream id).
    expect(a.equals(readFileSync(join(dir, 'b.xbz')))).toBe(true)
    expect(a.length).toBeLessThan(stream.length)
    expect(sh(`${CLI_SH} -dc < a.xbz > a.out && ${CLI_SH} decode a.xbz > b.out`).status).toBe(0)
    expect(readFileSync(join(dir, 'a.out')).equals(stream)).toBe(true)
    expect(readFileSync(join(dir, 'b.out')).equals(stream)).toBe(true)
    expect(sh(`${CLI_SH} -dc < c.xbz > c.out`).status).toBe(0)
    expect(readFileSync(join(dir, 'c.out')).equals(stream)).toBe(true)
    // The stream path (stdout a pipe) reads what the file path wrote.
    const piped = await runCli(['-dc'], a)
    expect(piped.code).toBe(0)
    expect(piped.stdout.equals(stream)).toBe(true)
  })

  it('--threads 1 and 2 (zstd on worker threads) write the bytes of --threads 0, file to file and from a pipe', () => {
    const v2 = `${CLI_SH} encode --format-version 2 --compress zstd`
    expect(
      sh(
        `${v2} --threads 0 < in.mig > t0.xbz && ${v2} --threads 1 < in.mig > t1.xbz && cat in.mig | ${v2} --threads 2 > t2.xbz`,
      ).status,
    ).toBe(0)
    const t0 = readFileSync(join(dir, 't0.xbz'))
    expect(readFileSync(join(dir, 't1.xbz')).equals(t0)).toBe(true)
    // from a pipe the input's pauses may close batches early (idle flush), so compare what it decodes to
    expect(sh(`${CLI_SH} -dc < t2.xbz > t2.out`).status).toBe(0)
    expect(readFileSync(join(dir, 't2.out')).equals(stream)).toBe(true)
    expect(sh(`${v2} --threads 65 < in.mig > /dev/null`).status).toBe(2)
  })

  it('-o FILE: written atomically through the same path, the bytes of stdout', () => {
    const v2 = `${CLI_SH} encode --format-version 2`
    expect(sh(`${v2} in.mig -o o.xbz && ${v2} < in.mig > s.xbz`).status).toBe(0)
    expect(readFileSync(join(dir, 'o.xbz')).equals(readFileSync(join(dir, 's.xbz')))).toBe(true)
    // Replacing an existing file, and decoding into one.
    writeFileSync(join(dir, 'o.out'), 'old contents')
    expect(sh(`${CLI_SH} decode o.xbz -o o.out`).status).toBe(0)
    expect(readFileSync(join(dir, 'o.out')).equals(stream)).toBe(true)
    // A corrupt stream leaves the old file as it was.
    const bad = readFileSync(join(dir, 'o.xbz'))
    bad[bad.length >> 1]! ^= 0x10
    writeFileSync(join(dir, 'bad-o.xbz'), bad)
    writeFileSync(join(dir, 'keep.out'), 'keep me')
    expect(sh(`${CLI_SH} decode bad-o.xbz -o keep.out`).status).toBe(3)
    expect(readFileSync(join(dir, 'keep.out'), 'utf8')).toBe('keep me')
  })

  it('a pipe in, a file out: the same round trip, and a pause in the input brings the output up to date', async () => {
    expect(sh(`cat in.mig | ${CLI_SH} -c > p.xbz && cat p.xbz | ${CLI_SH} -dc > p.out`).status).toBe(0)
    expect(readFileSync(join(dir, 'p.out')).equals(stream)).toBe(true)
    // A live migration written to a file: what came in before a pause is in the file before more comes.
    const out = openSync(join(dir, 'live.xbz'), 'w')
    const child = spawn(process.execPath, [CLI, '-c'], { stdio: ['pipe', out, 'pipe'] })
    closeSync(out)
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
    const first = stream.subarray(0, 900_000)
    child.stdin.write(first)
    // 900 KB: less than one batch (a batch closes at 1 MiB of QEMU bytes), so only the idle flush writes their
    // ~85 KB now; without it the file would hold the header alone until more input came.
    await waitFor(() => statSync(join(dir, 'live.xbz')).size > 50_000, 'the first part in the output file')
    child.stdin.end(stream.subarray(first.length))
    expect(await exited).toBe(0)
    execFileSync('sh', ['-c', `${CLI_SH} -dc < live.xbz > live.out`], { cwd: dir })
    expect(readFileSync(join(dir, 'live.out')).equals(stream)).toBe(true)
  })

  it('a corrupt stream: one-line error, exit 3, and only verified batches were written', () => {
    expect(sh(`${CLI_SH} encode --format-version 1 < in.mig > v1.xbz`).status).toBe(0)
    const enc = readFileSync(join(dir, 'v1.xbz'))
    const bad = Buffer.from(enc)
    const at = Math.floor(bad.length * 0.6)
    bad[at] = bad[at]! ^ 0x40
    writeFileSync(join(dir, 'bad.xbz'), bad)
    const r = sh(`${CLI_SH} -dc < bad.xbz > bad.out`)
    expect(r.status).toBe(3)
    expect(r.stderr.trim().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^xbzrle: /)
    const out = readFileSync(join(dir, 'bad.out'))
    // Every byte written is the original's: a prefix, made of the batches before the damaged one.
    expect(out.length).toBeLessThan(stream.length)
    expect(out.equals(stream.subarray(0, out.length))).toBe(true)
  })

  it('refuses to write its output over its input', () => {
    writeFileSync(join(dir, 'same.mig'), stream)
    const r = sh(`${CLI_SH} -c < same.mig >> same.mig`)
    expect(r.status).toBe(2)
    expect(readFileSync(join(dir, 'same.mig')).equals(stream)).toBe(true)
  })

  it('a truncated QEMU stream is encoded with the usual warning and decodes to the same bytes', () => {
    writeFileSync(join(dir, 'cut.mig'), stream.subarray(0, 1_000_003))
    const r = sh(`${CLI_SH} -c < cut.mig > cut.xbz`)
    expect(r.status).toBe(0)
    expect(r.stderr).toMatch(/warning: the QEMU stream is truncated/)
    execFileSync('sh', ['-c', `${CLI_SH} -dc < cut.xbz > cut.out`], { cwd: dir })
    expect(readFileSync(join(dir, 'cut.out')).equals(stream.subarray(0, 1_000_003))).toBe(true)
  })
})
