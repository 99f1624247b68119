import { Buffer } from 'node:buffer'
import { describe, expect, it } from 'vitest'
import { FIXTURES, loadFixture, randomChunks } from '../test-fixtures.js'
import { type PageRecord, QemuStreamReader } from './stream-reader.js'

/** Feeds data through a reader and re-assembles every byte it reports, in order. */
function reassemble(data: Uint8Array, chunks: Iterable<Uint8Array>) {
  const parts: Buffer[] = []
  const pages: Array<Pick<PageRecord, 'kind' | 'blockName' | 'offset'>> = []
  const reader = new QemuStreamReader({
    verbatim: (b) => parts.push(Buffer.from(b)),
    page: (r) => {
      parts.push(Buffer.concat([r.header, r.body]))
      pages.push({ kind: r.kind, blockName: r.blockName, offset: r.offset })
    },
  })
  for (const c of chunks) reader.push(c)
  reader.finish()
  const out = Buffer.concat(parts)
  return { out, reader, pages, equal: out.equals(data) }
}

describe('QemuStreamReader on real QEMU 7.2 captures', () => {
  it.each(FIXTURES)('%s: reports every byte in order (1 MiB chunks)', (name) => {
    const data = loadFixture(name)
    const { equal, reader } = reassemble(data, randomChunks(data, 7, 1 << 20))
    expect(equal).toBe(true)
    expect(reader.stats.bytes).toBe(data.length)
  })

  it('pc-idle: counts match the capture notes (139 PAGE, 36,875 ZERO, 9 named, START+PART x2+END)', () => {
    const { reader, pages } = reassemble(loadFixture('pc-idle.mig'), [loadFixture('pc-idle.mig')])
    const s = reader.stats
    expect(s.pages).toEqual({ page: 139, zero: 36875, xbzrle: 0, compress: 0 })
    expect(s.namedRecords).toBe(9)
    expect(s.sections).toMatchObject({ start: 1, part: 2, end: 1 })
    expect(s.machine).toBe('pc-i440fx-7.2')
    expect(s.blocks.map((b) => b.name)).toEqual([
      'pc.ram',
      '0000:00:02.0/vga.vram',
      '/rom@etc/acpi/tables',
      'pc.bios',
      'pc.rom',
      '0000:00:02.0/vga.rom',
      '/rom@etc/table-loader',
      '/rom@etc/acpi/rsdp',
    ])
    expect(reader.ramBytes).toBe(0x09092000)
    // RAM ends at 902,774; the first device section (FULL timer) starts there.
    expect(s.passthrough).toMatchObject({ offset: 902774, reason: 'device-state' })
    expect(pages[0]).toEqual({ kind: 'page', blockName: 'pc.ram', offset: 0 })
    expect(pages[1]).toEqual({ kind: 'zero', blockName: 'pc.ram', offset: 0x1000 })
  })

  it('pc-xbzrle-dirty: QEMU xbzrle records are found (5,297 PAGE, 34,806 ZERO, 2,128 XBZRLE, 57 RAM sections)', () => {
    const data = loadFixture('pc-xbzrle-dirty.mig')
    const { reader } = reassemble(data, randomChunks(data, 3, 300_000))
    expect(reader.stats.pages).toEqual({ page: 5297, zero: 34806, xbzrle: 2128, compress: 0 })
    expect(reader.stats.ramSections).toBe(57)
    expect(reader.stats.passthrough?.offset).toBe(22091133)
  })

  it('old machine types: pc-i440fx-2.3 (no configuration, no footers) and 2.2 (no vmdesc)', () => {
    const a = reassemble(loadFixture('pc23-idle.mig'), [loadFixture('pc23-idle.mig')])
    expect(a.reader.stats.machine).toBeUndefined()
    expect(a.reader.stats.pages).toMatchObject({ page: 119, zero: 36893 })
    expect(a.reader.stats.passthrough?.offset).toBe(820779)
    const b = reassemble(loadFixture('pc22-idle.mig'), [loadFixture('pc22-idle.mig')])
    expect(b.reader.stats.pages).toMatchObject({ page: 126, zero: 36884 })
    expect(b.reader.stats.passthrough?.offset).toBe(849380)
  })

  it('x-ignore-shared: capability list parsed and block GPAs skipped', () => {
    const { reader } = reassemble(loadFixture('pc-ignshared.mig'), [loadFixture('pc-ignshared.mig')])
    expect(reader.stats.capabilities).toContain('x-ignore-shared')
    expect(reader.stats.blocks.length).toBeGreaterThan(3)
    expect(reader.stats.pages.page + reader.stats.pages.zero).toBeGreaterThan(30000)
  })

  it('postcopy: RAM keeps being parsed after the PACKAGED device state (5,523 PAGE, 34,303 ZERO)', () => {
    const data = loadFixture('postcopy-c0.s2d')
    const { reader } = reassemble(data, [data])
    expect(reader.stats.postcopy).toBe(true)
    expect(reader.stats.pages).toMatchObject({ page: 5523, zero: 34303 })
    expect(reader.stats.namedRecords).toBe(10) // the discard list resets the current block
    expect(reader.stats.passthrough?.reason).toBe('trailer')
  })

  it('multifd main channel: only ZERO records', () => {
    const { reader } = reassemble(loadFixture('multifd-c0.s2d'), [loadFixture('multifd-c0.s2d')])
    expect(reader.stats.pages).toMatchObject({ page: 0, zero: 34047 })
  })

  it('splits at every byte of the first 20 KiB give the same records', () => {
    const data = loadFixture('pc-idle.mig').subarray(0, 20_000)
    const whole = reassemble(data, [data])
    for (let cut = 1; cut < data.length; cut += 7) {
      const split = reassemble(data, [data.subarray(0, cut), data.subarray(cut)])
      expect(split.equal).toBe(true)
      expect(split.pages).toEqual(whole.pages)
    }
    expect(reassemble(data, randomChunks(data, 1, 1)).pages).toEqual(whole.pages)
  })

  it('non-QEMU input is passed through whole', () => {
    const junk = new Uint8Array(100_000).map((_, i) => (i * 2654435761) >>> 24)
    const r = reassemble(junk, randomChunks(junk, 5, 4096))
    expect(r.equal).toBe(true)
    expect(r.reader.stats.passthrough?.reason).toBe('not-qemu')
    const tiny = new Uint8Array([0x51, 0x45])
    expect(reassemble(tiny, [tiny]).equal).toBe(true)
    expect(reassemble(new Uint8Array(0), []).equal).toBe(true)
  })

  it('a truncated QEMU stream is still reproduced exactly', () => {
    const data = loadFixture('pc-idle.mig')
    for (const cut of [5, 9, 30, 260, 270, 4000, 4380, 500_000]) {
      const part = data.subarray(0, cut)
      const r = reassemble(part, randomChunks(part, cut, 3000))
      expect(r.equal).toBe(true)
    }
  })
})
