import { describe, expect, it } from 'vitest'
import type { LiveRun } from './live.js'
import { bigLiveVerdicts } from './report-live.js'

/** A finished run at 32 MiB/s: `e2eMs` total, `eff` ms of effective downtime. */
function run(setup: string, limitMs: number, e2eMs: number, eff: number, forced = false): LiveRun {
  return {
    setup,
    linkMiBs: 32,
    limitMs,
    run: 1,
    ok: true,
    e2eMs,
    effDowntimeMs: eff,
    forced,
    ramIdentical: true,
  }
}

describe('the 512 MiB guest verdicts (issue #14)', () => {
  it('plain forced and the filter unforced within limit + 20%: met; over the bound or forced: missed', () => {
    const base = [run('plain', 300, 60_000, 900, true), run('QEMU xbzrle', 300, 20_000, 10)]
    const ok = bigLiveVerdicts([...base, run('xbzrle filter', 300, 8_000, 350)])
    expect(ok.map((v) => v.status)).toEqual(['met', 'met'])
    expect(ok[1]!.measured).toBe('350 ms (bound 360), 0 of 1 forced')
    expect(bigLiveVerdicts([...base, run('xbzrle filter', 300, 8_000, 361)])[1]!.status).toBe('missed')
    expect(bigLiveVerdicts([...base, run('xbzrle filter', 300, 8_000, 100, true)])[1]!.status).toBe('missed')
  })

  it('a plain run that converged on its own means the guest is too gentle: missed', () => {
    const [plain] = bigLiveVerdicts([run('plain', 300, 30_000, 200)])
    expect(plain).toMatchObject({ status: 'missed', measured: '0 of 1 runs forced' })
  })

  it('at 50 ms: ≤ 1/2 of QEMU xbzrle total time, judged only where QEMU xbzrle converged unforced', () => {
    const half = bigLiveVerdicts([run('QEMU xbzrle', 50, 20_000, 10), run('xbzrle filter', 50, 10_000, 55)])
    expect(half.map((v) => v.status)).toEqual(['met', 'met'])
    expect(half[1]!.measured).toBe('10.00 vs 20.00 s (0.50x)')
    const slow = bigLiveVerdicts([run('QEMU xbzrle', 50, 20_000, 10), run('xbzrle filter', 50, 10_001, 55)])
    expect(slow[1]!.status).toBe('missed')
    const qemuForced = bigLiveVerdicts([
      run('QEMU xbzrle', 50, 60_000, 900, true),
      run('xbzrle filter', 50, 9_000, 55),
    ])
    expect(qemuForced).toHaveLength(1)
  })
})
