import { readFile } from 'node:fs/promises'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  buildTestGuest,
  type GuestWorkload,
  guestCommandLine,
  installTestkitHooks,
  parsePassLines,
  requireQemu,
  startGuest,
} from './index.js'

installTestkitHooks({ afterEach, afterAll })

describe('test guest', () => {
  it('builds a multiboot ELF once, also under concurrent calls', async (ctx) => {
    if (!requireQemu(ctx)) return
    const [a, b] = await Promise.all([buildTestGuest(), buildTestGuest()])
    expect(a).toBe(b)
    const elf = await readFile(a)
    expect(elf.subarray(0, 4).toString('latin1')).toBe('\x7fELF')
    expect(elf[4]).toBe(1) // ELFCLASS32
    // multiboot v1 header magic within the first 8 KiB, 4-byte aligned
    const head = elf.subarray(0, 8192)
    let found = -1
    for (let i = 0; i + 4 <= head.length; i += 4) {
      if (head.readUInt32LE(i) === 0x1badb002) {
        found = i
        break
      }
    }
    expect(found).toBeGreaterThanOrEqual(0)
  })

  it('formats the command line', () => {
    expect(
      guestCommandLine({ workload: 'sparse', mem: 32, seed: 7, rate: 'max', ops: 1000, verify: true }),
    ).toBe('workload=sparse mem=32 seed=7 rate=max ops=1000 verify=1')
    expect(
      parsePassLines('x\npass 1 checksum 0000abcd\npass 2 checksum 12345678 memsum deadbeef\npass 3 chec'),
    ).toEqual([
      { pass: 1, checksum: '0000abcd' },
      { pass: 2, checksum: '12345678', memsum: 'deadbeef' },
    ])
  })

  it('boots under TCG, reports ready, and its pass counter keeps increasing', async (ctx) => {
    if (!requireQemu(ctx)) return
    const guest = await startGuest({ memMiB: 64, append: { workload: 'sparse', mem: 32, period: 200 } })
    const ready = await guest.waitForReady()
    expect(ready).toMatchObject({ workload: 'sparse', mem: '32', seed: '1', rate: '2000', pages: '8192' })
    await guest.waitForPass(3)
    const passes = await guest.passes()
    expect(passes.slice(0, 3).map((p) => p.pass)).toEqual([1, 2, 3])
    expect(new Set(passes.map((p) => p.checksum)).size).toBe(passes.length)
    expect(await guest.queryStatus()).toMatchObject({ running: true, status: 'running' })
  })

  it('is deterministic: same command line, same per-pass checksums and memory sums', async (ctx) => {
    if (!requireQemu(ctx)) return
    const append = { workload: 'text', mem: 8, seed: 42, rate: 5000, period: 100, verify: true } as const
    const [a, b] = await Promise.all([startGuest({ memMiB: 32, append }), startGuest({ memMiB: 32, append })])
    await Promise.all([a.waitForPass(3), b.waitForPass(3)])
    const [pa, pb] = await Promise.all([a.passes(), b.passes()])
    expect(pa.slice(0, 3)).toEqual(pb.slice(0, 3))
    expect(pa[0]?.memsum).toMatch(/^[0-9a-f]{8}$/)
    // a different seed gives a different stream
    const c = await startGuest({ memMiB: 32, append: { ...append, seed: 43 } })
    await c.waitForPass(1)
    expect((await c.passes())[0]?.checksum).not.toBe(pa[0]?.checksum)
  })

  it('runs every workload', async (ctx) => {
    if (!requireQemu(ctx)) return
    const workloads: GuestWorkload[] = ['sparse', 'sweep', 'hotset', 'text', 'idle']
    for (const workload of workloads) {
      const guest = await startGuest({ memMiB: 32, append: { workload, mem: 8, period: 100, hot: 64 } })
      const ready = await guest.waitForReady()
      expect(ready.workload).toBe(workload)
      expect(ready.fill).toMatch(/^[0-9a-f]{8}$/)
      await guest.waitForPass(2)
      await guest.close()
    }
  })
})
