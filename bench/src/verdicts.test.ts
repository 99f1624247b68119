import { describe, expect, it } from 'vitest'
import type { FilterStreamResult, ToolRun } from './filter.js'
import type { LiveRun } from './live.js'
import {
  allVerdicts,
  idealVerdicts,
  type LiveRuns,
  liveVerdicts,
  lzopVerdicts,
  missCauses,
  speedVerdicts,
} from './verdicts.js'

const MB = 1e6

/** A successful tool row: `out` bytes, encode/decode CPU seconds. */
function run(tool: string, out: number, encS: number, decS: number, bytes = 100 * MB): ToolRun {
  const t = (cpuS: number) => ({ wallS: cpuS, cpuS, userS: cpuS, sysS: 0, maxRssKiB: 1024 })
  return { tool, outBytes: out, ratio: out / bytes, enc: t(encS), dec: t(decS), verified: true }
}

function failed(tool: string): ToolRun {
  return { ...run(tool, 0, 0, 0), ratio: 0, error: 'exit 3', verified: false }
}

/** A 100 MB stream; the ideal payload is 20 MB, framed 21 MB. */
function stream(name: string, resentShare: number, runs: ToolRun[]): FilterStreamResult {
  return {
    stream: name,
    bytes: 100 * MB,
    resentShare,
    runs,
    ideal: {
      input: 100 * MB,
      payload: 20 * MB,
      framed: 21 * MB,
      frames: { full: 4000, delta: 20000, same: 100, zero: 10, foreign: 0, other: 0 },
      cpuS: 1,
    },
  }
}

describe('xbzrle vs lzop -1 on re-send-heavy streams', () => {
  it('met when smaller and at least 1.5x faster', () => {
    // xbzrle: 100 MB in 0.05 s = 2000 MB/s; lzop: 100 MB in 0.1 s = 1000 MB/s → 2x
    const [v] = lzopVerdicts([
      stream('sparse', 0.8, [run('xbzrle', 10 * MB, 0.05, 0.05), run('lzop -1', 30 * MB, 0.1, 0.1)]),
    ])
    expect(v).toMatchObject({ status: 'met', measured: '0.100 vs 0.300; 2.00x' })
    expect(v!.cause).toBeUndefined()
  })

  it('missed when only 1.4x faster, with the speeds as the cause', () => {
    const [v] = lzopVerdicts([
      stream('sparse', 0.8, [run('xbzrle', 10 * MB, 0.1, 0.05), run('lzop -1', 30 * MB, 0.14, 0.1)]),
    ])
    expect(v!.status).toBe('missed')
    expect(v!.cause).toBe(
      '- `sparse` vs lzop: encode 1000 MB/s vs lzop 714 MB/s per CPU second (see the CPU breakdown below).',
    )
  })

  it('missed when larger than lzop, naming the first-time pages and the XBZRLE stage alone', () => {
    const [v] = lzopVerdicts([
      stream('text', 0.6, [
        run('xbzrle', 40 * MB, 0.01, 0.01),
        run('xbzrle v1', 50 * MB, 0.01, 0.01),
        run('lzop -1', 30 * MB, 0.1, 0.1),
      ]),
    ])
    expect(v!.status).toBe('missed')
    expect(v!.cause).toMatch(
      /output 40\.0 MB > lzop's 30\.0 MB; 4000 first-time \(full\) pages make 16\.4 MB/,
    )
    expect(v!.cause).toMatch(/XBZRLE stage alone: 50\.0 MB/)
    expect(v!.cause).not.toMatch(/encode .* MB\/s vs lzop/)
  })

  it('judges only streams with at least 50% re-sends', () => {
    expect(
      lzopVerdicts([stream('save', 0.49, [run('xbzrle', 90 * MB, 1, 1), run('lzop -1', 30 * MB, 0.1, 0.1)])]),
    ).toEqual([])
  })

  it('a failed row is not measured, never met or missed', () => {
    const [v] = lzopVerdicts([stream('sparse', 0.9, [failed('xbzrle'), run('lzop -1', 30 * MB, 0.1, 0.1)])])
    expect(v).toMatchObject({ status: 'not measured', measured: 'n/a: the xbzrle row failed' })
  })
})

describe('xbzrle vs the ideal unbounded-cache model', () => {
  it('compares the v1 row when there is one: +4% met, +6% missed with the frame and envelope costs', () => {
    const ok = idealVerdicts([
      stream('a', 0.7, [run('xbzrle', 5 * MB, 1, 1), run('xbzrle v1', 20.8 * MB, 1, 1)]),
    ])
    expect(ok[0]).toMatchObject({ status: 'met', measured: '+4.0% (ideal with v1 frames: +-1.0%)' })
    expect(ok[0]!.target).toContain('xbzrle v1 output within 5%')
    const bad = idealVerdicts([stream('a', 0.7, [run('xbzrle v1', 21.2 * MB, 1, 1)])])
    expect(bad[0]!.status).toBe('missed')
    expect(bad[0]!.cause).toMatch(/1\.20 MB more than the framing-free ideal: 1\.00 MB are per-frame bytes/)
    expect(bad[0]!.cause).toMatch(
      /24110 page frames, 20000 of them deltas averaging 181 B\), 0\.20 MB batch envelopes/,
    )
  })

  it('a compressed default output below the model is not measured (says nothing about XBZRLE)', () => {
    const [v] = idealVerdicts([stream('a', 0.7, [run('xbzrle', 5 * MB, 1, 1), failed('xbzrle v1')])])
    expect(v!.status).toBe('not measured')
  })

  it('without the v1 row, the default output is judged when it is not below the model', () => {
    const [v] = idealVerdicts([stream('a', 0.7, [run('xbzrle', 30 * MB, 1, 1)])])
    expect(v).toMatchObject({ status: 'missed' })
    expect(v!.target).toContain('`a`: xbzrle output within 5%')
  })
})

describe('filter speed', () => {
  it('met only when overall and the worst stream reach the target', () => {
    // 100 MB / 0.05 s = 2000 MB/s encode, 100 MB / 0.04 s = 2500 MB/s decode on both streams
    const fast = [
      stream('a', 0.5, [run('xbzrle', 1, 0.05, 0.04)]),
      stream('b', 0.5, [run('xbzrle', 1, 0.05, 0.04)]),
    ]
    expect(speedVerdicts(fast).map((v) => v.status)).toEqual(['met', 'met'])
    // overall 2 x 100 MB / (0.05 + 0.11) s = 1250 MB/s, but the worst stream runs at 909 MB/s
    const oneSlow = [
      stream('a', 0.5, [run('xbzrle', 1, 0.05, 0.04)]),
      stream('b', 0.5, [run('xbzrle', 1, 0.11, 0.04)]),
    ]
    const [enc, dec] = speedVerdicts(oneSlow)
    expect(enc).toMatchObject({ status: 'missed', measured: '1250 MB/s overall, worst stream 909 MB/s' })
    expect(enc!.target).toBe('filter encode ≥ 1 GB/s on one core (real streams)')
    expect(dec!.status).toBe('met')
    expect(enc!.cause).toMatch(/^- Filter speed: the CLI encodes at 1250 MB\/s and decodes at 2500 MB\/s/)
  })

  it('a stream whose xbzrle row failed makes the speed not measured, not fast', () => {
    const vs = speedVerdicts([
      stream('a', 0.5, [run('xbzrle', 1, 0.05, 0.04)]),
      stream('b', 0.5, [failed('xbzrle')]),
    ])
    expect(vs.map((v) => v.status)).toEqual(['not measured', 'not measured'])
    expect(speedVerdicts([]).map((v) => v.status)).toEqual(['not measured', 'not measured'])
  })
})

describe('live migrations', () => {
  const guest = { memMiB: 64, append: { workload: 'sparse' as const, mem: 48 } }
  function live(e2e: Record<string, number[]>, linkMiBs = 8): LiveRuns {
    const runs: LiveRun[] = []
    for (const [setup, times] of Object.entries(e2e))
      times.forEach((e2eMs, i) => {
        runs.push({ setup, linkMiBs, run: i + 1, ok: true, e2eMs })
      })
    return { guest, runs }
  }

  it('takes medians at the slowest limited link', () => {
    const l = live({
      plain: [10_000, 12_000, 30_000],
      'xbzrle filter': [5_000, 6_000, 1_000],
      'QEMU xbzrle': [7_000],
    })
    l.runs.push({ setup: 'xbzrle filter', linkMiBs: 32, run: 1, ok: true, e2eMs: 99_000 })
    l.runs.push({ setup: 'xbzrle filter', linkMiBs: 0, run: 1, ok: true, e2eMs: 99_000 })
    const [vsPlain, vsQemu] = liveVerdicts(l, { cores: 2 })
    expect(vsPlain).toMatchObject({ status: 'met', measured: '5.0 s vs 12.0 s (0.42x)' })
    expect(vsPlain!.target).toBe('live migration at 8 MiB/s through the filter: total time ≤ 1/2 of plain')
    expect(vsQemu!.status).toBe('met')
  })

  it('missed against QEMU cites the machine facts it was given', () => {
    const [vsPlain, vsQemu] = liveVerdicts(
      live({
        plain: [10_000],
        'xbzrle filter': [6_000],
        'QEMU xbzrle': [5_000],
        'QEMU xbzrle, max-bw = link': [9_000],
      }),
      { cores: 16 },
    )
    expect(vsPlain!.status).toBe('missed')
    expect(vsPlain!.cause).toMatch(/the whole 48 MiB region/)
    expect(vsQemu).toMatchObject({ status: 'missed', measured: '6.0 s vs 5.0 s uncapped, 9.0 s capped' })
    expect(vsQemu!.cause).toMatch(/on a 16-core machine/)
  })

  it('failed runs do not count; no successful run is not measured; no limited link, no verdict', () => {
    const l = live({ plain: [10_000], 'QEMU xbzrle': [5_000] })
    l.runs.push({ setup: 'xbzrle filter', linkMiBs: 8, run: 1, ok: false, error: 'boom', e2eMs: 1 })
    expect(liveVerdicts(l, { cores: 2 }).map((v) => v.status)).toEqual(['not measured', 'not measured'])
    expect(liveVerdicts(live({ plain: [1], 'xbzrle filter': [1] }, 0), { cores: 2 })).toEqual([])
    // neither QEMU setup measured: the comparison with QEMU is not measured (plain still is)
    const noQemu = liveVerdicts(live({ plain: [10_000], 'xbzrle filter': [4_000] }), { cores: 2 })
    expect(noQemu.map((v) => v.status)).toEqual(['met', 'not measured'])
  })
})

describe('the report', () => {
  it('lists every verdict in order and each distinct miss cause once', () => {
    const slow = [stream('a', 0.5, [run('xbzrle', 30 * MB, 1, 1), run('lzop -1', 20 * MB, 0.1, 0.1)])]
    const vs = allVerdicts(slow, undefined, { cores: 2 })
    expect(vs.map((v) => v.target.split(':')[0])).toEqual([
      '`a` (50% re-sends)',
      '`a`',
      'filter encode ≥ 1 GB/s on one core (real streams)',
      'filter decode ≥ 1.5 GB/s on one core (real streams)',
    ])
    expect(vs.every((v) => v.status === 'missed')).toBe(true)
    const causes = missCauses(vs)
    expect(causes).toHaveLength(3) // the two speed verdicts share one cause
    expect(causes[2]).toMatch(/^- Filter speed/)
  })
})
