// Issue #19 item 6: decoding must respect backpressure. 'same' frames cost a few wire bytes for a whole page, so
// an xbzrle stream can expand a thousandfold; the decoder must hold at most a batch or two, never a chunk's worth
// of output. Measured in a child process (peak RSS from /proc/self/status), the output hashed on the fly.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { amplifiedStream } from './test-amplify.js'

const MiB = 2 ** 20
const dir = mkdtempSync(join(tmpdir(), 'xbz-amplify-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const child = fileURLToPath(new URL('./test-decode-child.ts', import.meta.url))

function decodeInChild(
  file: string,
): Promise<{ sha256: string; bytes: number; vmHwmKiB: number; maxRssKiB: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--conditions=@xbzrle/source', '--import', 'tsx', child, file], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    p.stdout.on('data', (c) => {
      out += c
    })
    p.stderr.on('data', (c) => {
      err += c
    })
    p.on('error', reject)
    p.on('close', (code) => {
      if (code !== 0) reject(new Error(`decoder child exited ${code}: ${err.trim().slice(-2000)}`))
      else resolve(JSON.parse(out))
    })
  })
}

describe('decoding an amplifying stream keeps memory bounded (backpressure inside a chunk)', () => {
  it.each([
    // ~1.1 MB on the wire → ~1.6 GB: 4 KiB pages, 256 pages re-sent 1500 times.
    { name: '4 KiB pages', pageSize: 4096, pages: 256, resends: 1500 },
    // ~0.15 MB on the wire → ~1.6 GB: 64 KiB pages (a 64 KiB target page size), 2 pages re-sent 12000 times.
    { name: '64 KiB pages', pageSize: 65536, pages: 2, resends: 12000 },
  ])(
    '$name: peak RSS ≤ 400 MiB, output byte-exact',
    async ({ pageSize, pages, resends }) => {
      const { encoded, sha256, qemuBytes } = amplifiedStream({ pageSize, pages, resends })
      // The amplification this test is about: at least 1000× (failing-before: the old decoder buffered it all).
      expect(qemuBytes / encoded.length).toBeGreaterThan(1000)
      expect(qemuBytes).toBeGreaterThan(1.5e9)
      const file = join(dir, `amp-${pageSize}.xbz`)
      writeFileSync(file, encoded)
      const r = await decodeInChild(file)
      console.log(
        `[decode-memory] ${pageSize} B pages: ${(encoded.length / 1e3).toFixed(0)} kB → ${(qemuBytes / 1e9).toFixed(2)} GB, ` +
          `peak RSS ${(r.vmHwmKiB / 1024).toFixed(0)} MiB (maxRSS ${(r.maxRssKiB / 1024).toFixed(0)} MiB)`,
      )
      expect(r.bytes).toBe(qemuBytes)
      expect(r.sha256).toBe(sha256)
      expect(r.vmHwmKiB * 1024).toBeLessThanOrEqual(400 * MiB)
    },
    120_000,
  )
})
