// WriteBehindDecoder (write-behind.ts): each verified batch is written on the thread pool while the next one is
// decoded. In process, with real descriptors: a regular file, a read-only descriptor (a failing write), a
// non-blocking pipe with a slow reader (EAGAIN), and a stream that turns corrupt after batches were written.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { ProtocolError } from '@xbzrle/protocol'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixture } from './test-cli.js'
import { WriteBehindDecoder } from './write-behind.js'

let dir: string
let original: Buffer
let encoded: Buffer

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-wb-'))
  // 22 MB of real QEMU 7.2 stream: a few dozen batches of every page kind.
  original = fixture('pc-xbzrle-dirty.mig')
  const parts: Uint8Array[] = []
  const e = new XbzrleEncoder((c) => parts.push(c), { formatVersion: 2 })
  e.push(original)
  e.finish()
  encoded = Buffer.concat(parts)
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Feeds `data` in 1 MiB pushes as feedFilter does (each push awaited), then finishes. */
async function run(filter: WriteBehindDecoder, data: Uint8Array): Promise<void> {
  for (let o = 0; o < data.length; o += 1 << 20) await filter.push(data.subarray(o, o + (1 << 20)))
  filter.finish()
  await filter.settled()
}

describe('WriteBehindDecoder', () => {
  it('writes the original bytes to a regular file, in order', async () => {
    const path = join(dir, 'out.mig')
    const fd = openSync(path, 'w')
    try {
      await run(new WriteBehindDecoder({ fd }), encoded)
    } finally {
      closeSync(fd)
    }
    expect(readFileSync(path).equals(original)).toBe(true)
  })

  it('a failing write is the error (EBADF on a read-only descriptor), not a hang or a lost byte', async () => {
    const path = join(dir, 'ro')
    writeFileSync(path, '')
    const fd = openSync(path, 'r')
    try {
      const f = new WriteBehindDecoder({ fd })
      await expect(run(f, encoded)).rejects.toMatchObject({ code: 'EBADF' })
      await f.close()
    } finally {
      closeSync(fd)
    }
  })

  it('a stream that turns corrupt: the batches before it are written, none after, and close() waits for the write', async () => {
    const bad = Buffer.from(encoded)
    const at = Math.floor(bad.length * 0.6)
    bad[at]! ^= 0x40
    const path = join(dir, 'partial.mig')
    const fd = openSync(path, 'w')
    const f = new WriteBehindDecoder({ fd })
    let error: unknown
    try {
      await run(f, bad)
    } catch (e) {
      error = e
    }
    await f.close()
    closeSync(fd)
    expect(error).toBeInstanceOf(ProtocolError)
    const written = readFileSync(path)
    // A verified prefix of the original, never a byte of the corrupt batch or after it.
    expect(written.length).toBeGreaterThan(0)
    expect(written.length).toBeLessThan(original.length)
    expect(written.equals(original.subarray(0, written.length))).toBe(true)
  })

  it('a non-blocking pipe with a slow reader (EAGAIN) still gets every byte', async () => {
    // libuv makes the child's stdin pipe non-blocking: writes into it fail with EAGAIN while the reader sleeps.
    const child = spawn('sh', ['-c', 'sleep 0.3; exec sha256sum'], { stdio: ['pipe', 'pipe', 'inherit'] })
    const fd = (child.stdin as unknown as { _handle: { fd: number } })._handle.fd
    expect(fd).toBeGreaterThan(2)
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    const exited = new Promise((r) => child.on('close', r))
    await run(new WriteBehindDecoder({ fd }), encoded)
    child.stdin.end()
    await exited
    expect(out.split(' ')[0]).toBe(createHash('sha256').update(original).digest('hex'))
  })
})
