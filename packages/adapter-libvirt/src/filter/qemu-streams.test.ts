// Stream identity on freshly captured real QEMU streams: decode(encode(stream)) == stream, byte for byte.

import { Buffer } from 'node:buffer'
import { readFileSync } from 'node:fs'
import { captureIteratingMigration, installTestkitHooks, requireQemu } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { randomChunks } from '../test-fixtures.js'
import { XbzrleDecoder } from './decoder.js'
import { XbzrleEncoder } from './encoder.js'

installTestkitHooks({ afterEach, afterAll })

function roundTrip(data: Uint8Array) {
  const enc: Uint8Array[] = []
  const e = new XbzrleEncoder((c) => enc.push(c))
  for (const c of randomChunks(data, 17, 1 << 20)) e.push(c)
  e.finish()
  const encoded = Buffer.concat(enc)
  const dec: Uint8Array[] = []
  const d = new XbzrleDecoder((c) => dec.push(c))
  for (const c of randomChunks(encoded, 23, 1 << 20)) d.push(c)
  d.finish()
  return { encoded, decoded: Buffer.concat(dec), stats: e.stats }
}

describe('captured QEMU streams survive encode → decode exactly', () => {
  it.for([
    { workload: 'sparse', xbzrle: false },
    { workload: 'text', xbzrle: false },
    { workload: 'hotset', xbzrle: false },
    { workload: 'sweep', xbzrle: true },
    { workload: 'sparse', xbzrle: true },
  ] as const)('$workload, QEMU xbzrle $xbzrle', async ({ workload, xbzrle }, ctx) => {
    if (!requireQemu(ctx)) return
    const { path, stats } = await captureIteratingMigration({ workload, xbzrle, syncs: 3 })
    expect(stats.status).toBe('completed')
    const data = readFileSync(path)
    const { encoded, decoded, stats: s } = roundTrip(data)
    expect(decoded.equals(data)).toBe(true)
    expect(s.qemu.passthrough?.reason).toBe('device-state')
    if (xbzrle) expect(s.pages.foreign).toBeGreaterThan(0)
    else expect(s.pages.delta + s.pages.same).toBeGreaterThan(0)
    // Re-sent pages shrink, so the encoded stream is smaller than QEMU's.
    expect(encoded.length).toBeLessThan(data.length)
  })
})
