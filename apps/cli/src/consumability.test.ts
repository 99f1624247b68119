// How users consume us: npm-pack every public package, install the tarballs into a scratch project outside the
// repository, import each public entry point from plain Node ESM, run one call through it, and run the packed
// CLI. A wrong `exports`, `bin` or `files` entry breaks this test.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixture, installPacked, PUBLIC_PACKAGES, sh } from './test-cli.js'

const root = fileURLToPath(new URL('../../..', import.meta.url))
let scratch: string

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'xbzrle-consumer-'))
  const { tarballs } = await installPacked(root, scratch, 'consumer')
  expect(tarballs).toHaveLength(PUBLIC_PACKAGES.length)
}, 480_000) // packs and installs every package; beside the compat matrix setup it took 130 s here

afterAll(() => rmSync(scratch, { recursive: true, force: true }))

function runModule(code: string): string {
  const file = join(scratch, 'app', `t${Math.random().toString(36).slice(2)}.mjs`)
  writeFileSync(file, code)
  return sh(process.execPath, [file], join(scratch, 'app')).trim()
}

describe('packed packages work from plain Node ESM', () => {
  it('@xbzrle/protocol, @xbzrle/protocol/v1, /v2 and /v3', () => {
    const out = runModule(`
      import { FrameWriter, FrameReader, CURRENT_VERSION } from '@xbzrle/protocol'
      import * as v1 from '@xbzrle/protocol/v1'
      import * as v2 from '@xbzrle/protocol/v2'
      import * as v3 from '@xbzrle/protocol/v3'
      const chunks = []
      const w = new FrameWriter({ onChunk: (c) => chunks.push(c) })
      w.header({ pageSize: 4096, cache: { cacheBytes: 1 << 20, ways: 8, policy: 'lru-age-v1' }, mode: 'canonical', source: 'raw' })
      w.verbatim(new TextEncoder().encode('hello'))
      w.end({})
      const r = new FrameReader(); const kinds = []
      for (const c of chunks) { r.push(c); for (let i = r.next(); i; i = r.next()) kinds.push(i.type) }
      r.finish()
      console.log(CURRENT_VERSION, typeof v1.FrameWriter, typeof v2.FrameWriter, typeof v3.FrameWriter, kinds.join(','))`)
    expect(out).toBe('3 function function function header,batch,end')
  })

  it('@xbzrle/codec', () => {
    const out = runModule(`
      import { encode, decode, kernelName } from '@xbzrle/codec'
      const a = new Uint8Array(4096), b = new Uint8Array(4096); b[4095] = 1
      const d = new Uint8Array(4096); const n = encode(a, b, d)
      decode(d.subarray(0, n), a)
      console.log(kernelName(), Buffer.from(d.subarray(0, n)).toString('hex'), a[4095])`)
    expect(out).toBe('wasm ff1f0101 1')
  })

  it('@xbzrle/adapter-libvirt', () => {
    const out = runModule(`
      import { SimulatedGuest, XbzrleEncoder, XbzrleDecoder } from '@xbzrle/adapter-libvirt'
      const input = Buffer.concat([...new SimulatedGuest({ memMiB: 1, passes: 1 }).stream()])
      const enc = []; const e = new XbzrleEncoder((c) => enc.push(c)); e.push(input); e.finish()
      const out = []; const d = new XbzrleDecoder((c) => out.push(c)); d.push(Buffer.concat(enc)); d.finish()
      console.log(Buffer.concat(out).equals(input))`)
    expect(out).toBe('true')
  })

  it('@xbzrle/adapter-ws', () => {
    const out = runModule(`
      import * as ws from '@xbzrle/adapter-ws'
      console.log(Object.keys(ws).length > 0)`)
    expect(out).toBe('true')
  })

  it('the packed xbzrle CLI runs --help', () => {
    const out = sh(join(scratch, 'app', 'node_modules', '.bin', 'xbzrle'), ['--help'], join(scratch, 'app'))
    expect(out).toMatch(/Usage: xbzrle/)
  })

  it("the packed CLI's fast forms (dist/fast.cjs, its code cache, bin/package.json) give a stream back", () => {
    const bin = join(scratch, 'app', 'node_modules', '.bin', 'xbzrle')
    const input = fixture('pc-idle.mig')
    const run = (args: string[], stdin: Buffer) =>
      execFileSync(bin, args, { input: stdin, cwd: join(scratch, 'app'), maxBuffer: 64 << 20 })
    const encoded = run(['-c'], input)
    expect(encoded.length).toBeLessThan(input.length)
    expect(run(['-dc'], encoded).equals(input)).toBe(true)
    const packed = join(scratch, 'app', 'node_modules', 'xbzrle')
    for (const f of ['bin/package.json', 'dist/fast.cjs', 'dist/fast.cjs.v8cache', 'dist/helper-config.cjs'])
      expect(existsSync(join(packed, f)), f).toBe(true)
  })
})
