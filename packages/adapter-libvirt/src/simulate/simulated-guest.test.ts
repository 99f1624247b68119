import { Buffer } from 'node:buffer'
import { describe, expect, it } from 'vitest'
import { QemuStreamReader } from '../qemu/stream-reader.js'
import { loadFixture } from '../test-fixtures.js'
import { SimulatedGuest, WORKLOADS } from './simulated-guest.js'

function parse(chunks: Iterable<Uint8Array>) {
  const parts: Buffer[] = []
  const input: Buffer[] = []
  const reader = new QemuStreamReader({
    verbatim: (b) => parts.push(Buffer.from(b)),
    page: (r) => parts.push(Buffer.concat([r.header, r.body])),
  })
  for (const c of chunks) {
    input.push(Buffer.from(c))
    reader.push(c)
  }
  reader.finish()
  return { reader, data: Buffer.concat(input), out: Buffer.concat(parts) }
}

describe('SimulatedGuest', () => {
  it('starts byte for byte like a real pc-i440fx-7.2 capture with 128 MiB (header, configuration, RAM setup)', () => {
    const real = loadFixture('pc-idle.mig')
    const sim = new SimulatedGuest({ memMiB: 128, passes: 0 }).stream().next().value as Uint8Array
    // 0..254: magic, version, configuration, START ram, the block list, EOS and the footer.
    expect(Buffer.from(sim.subarray(0, 255)).equals(Buffer.from(real.subarray(0, 255)))).toBe(true)
  })

  it('is parsed the way the reader parses a real stream of the same shape', () => {
    const sim = parse(new SimulatedGuest({ memMiB: 8, passes: 3, workload: 'sparse' }).stream())
    const real = parse([loadFixture('pc-idle.mig')])
    expect(sim.out.equals(sim.data)).toBe(true)
    for (const r of [sim.reader, real.reader]) {
      expect(r.stats.machine).toBe('pc-i440fx-7.2')
      expect(r.stats.blocks.map((b) => b.name)).toEqual(real.reader.stats.blocks.map((b) => b.name))
      expect(r.stats.namedRecords).toBeGreaterThanOrEqual(8)
      expect(r.stats.sections.start).toBe(1)
      expect(r.stats.sections.end).toBe(1)
      expect(r.stats.passthrough?.reason).toBe('device-state') // the first FULL device section
    }
    // Every page of every block is sent in the first pass; the sparse workload re-sends pages after it.
    expect(sim.reader.stats.pages.page + sim.reader.stats.pages.zero).toBeGreaterThan(
      sim.reader.ramBytes / 4096,
    )
    expect(sim.reader.stats.resentPages).toBeGreaterThan(0)
    // The trailer is a VMDESCRIPTION with valid JSON, as QEMU writes it.
    const at = sim.data.lastIndexOf('{"page_size"')
    expect(sim.data[at - 5]).toBe(0x06)
    expect(sim.data.readUInt32BE(at - 4)).toBe(sim.data.length - at)
    expect(JSON.parse(sim.data.subarray(at).toString('latin1')).page_size).toBe(4096)
  })

  it.each(WORKLOADS)('workload %s: re-sends match the workload', (workload) => {
    const { reader } = parse(new SimulatedGuest({ memMiB: 4, passes: 2, workload }).stream())
    if (workload === 'idle') expect(reader.stats.resentPages).toBe(0)
    else expect(reader.stats.resentPages).toBeGreaterThan(0)
  })

  it('is deterministic for a seed', () => {
    const a = parse(new SimulatedGuest({ memMiB: 2, seed: 9 }).stream()).data
    const b = parse(new SimulatedGuest({ memMiB: 2, seed: 9 }).stream()).data
    const c = parse(new SimulatedGuest({ memMiB: 2, seed: 10 }).stream()).data
    expect(a.equals(b)).toBe(true)
    expect(a.equals(c)).toBe(false)
  })
})
