// Stream identity on freshly captured real QEMU streams: decode(encode(stream)) == stream, byte for byte.

import { readFileSync } from 'node:fs'
import { captureIteratingMigration, installTestkitHooks, requireQemu } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { roundTrip } from './test-round-trip.js'

installTestkitHooks({ afterEach, afterAll })

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
