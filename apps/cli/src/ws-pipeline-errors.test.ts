// A stream that is bad on arrival, end to end: the real `xbzrle receive` (its real DecodeStream pipeline and atomic
// -o output) fed by the real `xbzrle send --encoded`, both as child processes, with an xbzrle stream that was
// encoded for real and then truncated or corrupted. Nothing here is a stub: the error the sender prints is the
// decoder's own verdict, carried back over the WebSocket close (4500 PIPELINE_ERROR).
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import { FrameReader } from '@xbzrle/protocol'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, freePort, runCli } from './test-cli.js'

const TOKEN = 'pipeline-errors-token'
const env = { XBZRLE_TOKEN: TOKEN }
const OLD = Buffer.from('the previous contents of out.mig, which a failed migration must leave alone\n')
let dir: string
let encoded: Buffer
const children: ChildProcess[] = []

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-pipe-err-'))
  const raw = Buffer.concat([...new SimulatedGuest({ memMiB: 8, passes: 2, seed: 7 }).stream()])
  writeFileSync(join(dir, 'in.mig'), raw)
  const enc = await runCli(['encode', join(dir, 'in.mig'), '-o', join(dir, 'in.xbz')])
  expect(enc.code, enc.stderr).toBe(0)
  encoded = readFileSync(join(dir, 'in.xbz'))
})
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

/** Byte offsets of the stream's batch records (to cut or corrupt inside one, past the header). */
function batchOffsets(stream: Uint8Array): number[] {
  const r = new FrameReader()
  r.push(stream)
  const at: number[] = []
  for (let item = r.next(); item; item = r.next()) if (item.type === 'batch') at.push(item.batch.offset)
  r.finish()
  return at
}

/** Starts `xbzrle receive --once -o out.mig` in its own folder; resolves once it listens. */
async function startReceiver(sub: string) {
  const port = await freePort()
  const folder = join(dir, sub)
  mkdirSync(folder)
  const out = join(folder, 'out.mig')
  writeFileSync(out, OLD)
  const child = spawn(
    process.execPath,
    [CLI, 'receive', '--listen', `127.0.0.1:${port}`, '-o', out, '--once'],
    {
      env: { ...process.env, ...env },
    },
  )
  children.push(child)
  let stderr = ''
  child.stderr.on('data', (b) => (stderr += b))
  const exit = new Promise<number | null>((r) => child.on('close', r))
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', () => {
      if (/listening on/.test(stderr)) resolve()
    })
    child.on('close', (code) => reject(new Error(`receiver exited ${code}: ${stderr}`)))
  })
  return { port, folder, out, exit, stderr: () => stderr }
}

async function sendBadStream(name: string, bytes: Uint8Array) {
  const rx = await startReceiver(name)
  writeFileSync(join(dir, `${name}.xbz`), bytes)
  const tx = await runCli(
    [
      'send',
      `ws://127.0.0.1:${rx.port}/${name}`,
      join(dir, `${name}.xbz`),
      '--encoded',
      '--migration-id',
      name,
    ],
    undefined,
    env,
  )
  const rxCode = await rx.exit
  return { tx, rxCode, rxStderr: rx.stderr(), rx }
}

describe('a truncated or corrupted stream through xbzrle send → xbzrle receive', () => {
  it('truncated inside a batch: the sender fails with the decoder verdict, the receiver fails, out.mig is unchanged', async () => {
    const at = batchOffsets(encoded)
    expect(at.length).toBeGreaterThan(3)
    const cut = at[Math.floor(at.length / 2)]! + 100 // inside a batch record in the middle of the stream
    const { tx, rxCode, rxStderr, rx } = await sendBadStream('trunc', encoded.subarray(0, cut))

    expect(tx.code, tx.stderr).toBe(5) // a network peer refused it
    const lines = tx.stderr.trim().split('\n')
    expect(lines, tx.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/^xbzrle: /)
    expect(lines[0]).toMatch(/4500/)
    expect(lines[0]).toMatch(/PIPELINE_ERROR/)
    // the decoder's ProtocolError (TRUNCATED), named as such: where the input ended, and that it is incomplete
    expect(lines[0]).toMatch(
      /xbzrle stream: input ends inside batch \d+ .*at offset \d+ \(incomplete input\)$/,
    )

    expect(rxCode).toBe(3) // bad, corrupt or truncated input
    expect(rxStderr).toMatch(/migration trunc failed: .*input ends inside batch/)
    expect(readFileSync(rx.out).equals(OLD)).toBe(true)
    expect(readdirSync(rx.folder)).toEqual(['out.mig']) // no temporary file left behind
  })

  it('a corrupted byte inside a batch: the sender names the corruption, the receiver fails, out.mig is unchanged', async () => {
    const at = batchOffsets(encoded)
    const bad = Buffer.from(encoded)
    const pos = Math.floor((at[2]! + at[3]!) / 2) // the middle of batch 2's record
    bad[pos]! ^= 0x40
    const { tx, rxCode, rxStderr, rx } = await sendBadStream('corrupt', bad)

    expect(tx.code, tx.stderr).toBe(5)
    const lines = tx.stderr.trim().split('\n')
    expect(lines, tx.stderr).toHaveLength(1)
    // the decoder's ProtocolError (CRC of batch 2's decoded bytes), named as such
    expect(lines[0]).toMatch(/^xbzrle: .*4500 PIPELINE_ERROR: .*/)
    expect(lines[0]).toMatch(
      /xbzrle stream: batch 2 checksum mismatch at offset \d+ \(corrupted or truncated input\)$/,
    )

    expect(rxCode).toBe(3) // bad, corrupt or truncated input
    expect(rxStderr).toMatch(/migration corrupt failed: .*batch 2 checksum mismatch/)
    expect(readFileSync(rx.out).equals(OLD)).toBe(true)
    expect(readdirSync(rx.folder)).toEqual(['out.mig'])
  })
})
