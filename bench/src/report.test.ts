// The report's rendering takes machine facts from the stored MachineInfo, never from literals; the targets table
// shows every status honestly. (No benchmark runs here: only rendering of hand-made results.)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { FilterStreamResult } from './filter.js'
import type { MachineInfo } from './machine.js'
import { renderTargets } from './report.js'
import { renderFilter } from './report-filter.js'
import { renderLive } from './report-live.js'

const chartDir = mkdtempSync(join(tmpdir(), 'xbzrle-bench-report-'))
afterAll(() => rmSync(chartDir, { recursive: true, force: true }))
const ctx = { chartDir, chartLink: (f: string) => `docs/bench/${f}` }

const machine: MachineInfo = {
  date: '2030-01-02',
  cpu: 'Test CPU 9000',
  cores: 16,
  memGiB: 7.5,
  kernel: 'Linux 9.9',
  node: 'v99.0.0',
  versions: { qemu: '9.1.0 (Debian 1:9.1+dfsg-1)', lzop: '1.04' },
  commit: 'abc1234',
}

const t = (cpuS: number) => ({ wallS: cpuS, cpuS, userS: cpuS, sysS: 0, maxRssKiB: 2048 })
const result: FilterStreamResult = {
  stream: 'sparse',
  bytes: 100e6,
  resentShare: 0.7,
  runs: [{ tool: 'xbzrle', outBytes: 10e6, ratio: 0.1, enc: t(0.1), dec: t(0.05), verified: true }],
  ideal: {
    input: 100e6,
    payload: 9e6,
    framed: 9.5e6,
    frames: { full: 10, delta: 10, same: 0, zero: 0, foreign: 0, other: 0 },
    cpuS: 1,
  },
}

describe('report rendering', () => {
  it('the filter section cites the measured machine: its RAM and QEMU version', () => {
    const md = renderFilter({ machine, results: [result] }, ctx).join('\n')
    expect(md).toContain('page cache (7.5 GiB RAM)')
    expect(md).not.toMatch(/24 GiB/)
    expect(readFileSync(join(chartDir, 'ratio.svg'), 'utf8')).toContain('real QEMU 9.1.0 migration streams')
    expect(readFileSync(join(chartDir, 'throughput.svg'), 'utf8')).toContain('enc target 1 GB/s')
  })

  it('the live section cites the measured core count', () => {
    const md = renderLive(
      {
        machine,
        guest: { memMiB: 64, append: { workload: 'sparse', mem: 48 } },
        runs: [
          { setup: 'plain', linkMiBs: 8, run: 1, ok: true, e2eMs: 10_000, ramIdentical: true },
          { setup: 'xbzrle filter', linkMiBs: 8, run: 1, ok: true, e2eMs: 6_000, ramIdentical: true },
        ],
        wallS: 60,
      },
      ctx,
    ).join('\n')
    expect(md).toContain('**CPU contention**: 16 cores shared by')
    expect(md).toContain('(16 cores shared with')
    expect(md).not.toMatch(/\b2 cores\b/)
  })

  it('the targets table marks missed and not measured targets and lists each cause once', () => {
    const md = renderTargets([
      { target: 'a', measured: '1', status: 'met' },
      { target: 'b', measured: '2', status: 'missed', cause: '- b: why' },
      { target: 'c', measured: 'n/a', status: 'not measured' },
      { target: 'd', measured: '3', status: 'missed', cause: '- b: why' },
    ]).join('\n')
    expect(md).toMatch(/\| a \| 1 \| met \|/)
    expect(md).toMatch(/\| b \| 2 \| \*\*missed\*\* \|/)
    expect(md).toMatch(/\| c \| n\/a \| not measured \|/)
    expect(md.match(/- b: why/g)).toHaveLength(1)
    expect(renderTargets([]).join('\n')).toContain('No results yet.')
  })
})
