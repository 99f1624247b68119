import { describe, expect, it } from 'vitest'
import { parseMeasureOutput } from './libvirt.js'
import { libvirtVerdicts, renderLibvirt } from './report-libvirt.js'

const OUTPUT = [
  'helper\tround\timage_bytes\tsave_ms\trestore_ms',
  'lzop\t1\t9648310\t1623\t659',
  'xbzrle\t1\t7493661\t2361\t930',
  'lzop\t2\t9710080\t1955\t692',
  'xbzrle\t2\t7608287\t1500\t1296',
  'lzop\t3\t9700000\t1800\t700',
  'xbzrle\t3\t7600000\t1700\t900',
].join('\n')

describe('libvirt stage', () => {
  it('parses measure.sh rows and skips the header and noise', () => {
    const rows = parseMeasureOutput(`${OUTPUT}\nsome log line\n`)
    expect(rows).toHaveLength(6)
    expect(rows[1]).toEqual({
      helper: 'xbzrle',
      memMiB: 64,
      round: 1,
      imageBytes: 7493661,
      saveMs: 2361,
      restoreMs: 930,
    })
  })

  it('judges the medians: smaller image met; save 1.70 s vs 1.80 s, and −0.10 s round by round, met', () => {
    const [size, save] = libvirtVerdicts(parseMeasureOutput(OUTPUT))
    expect(size!.status).toBe('met')
    expect(save!.status).toBe('met')
    expect(save!.measured).toBe('1.70 vs 1.80 s (0.94x; −0.10 s round by round)')
    expect(save!.target).toMatch(/64 MiB guest/)
  })

  it('judges each guest size on its own, and reads the late-lzop control into the cause', () => {
    const big = parseMeasureOutput(
      [
        'lzop\t1\t75000000\t2400\t1300',
        'lzop-late\t1\t75000000\t2410\t1300',
        'xbzrle\t1\t58000000\t3000\t1600',
      ].join('\n'),
      512,
    )
    const v = libvirtVerdicts([...parseMeasureOutput(OUTPUT), ...big])
    expect(v.map((x) => x.status)).toEqual(['met', 'met', 'met', 'missed'])
    expect(v[3]!.target).toMatch(/512 MiB guest/)
    expect(v[3]!.cause).toMatch(
      /\+0\.60 s \(\+0\.60 s round by round\) over lzop's 2\.40 s; the real lzop started 0\.3 s late: \+0\.01 s\./,
    )
    const md = renderLibvirt({
      machine: {} as never,
      rounds: 0,
      rows: [...parseMeasureOutput(OUTPUT), ...big],
    })
    expect(md.filter((l) => l.startsWith('### '))).toEqual([
      '### 64 MiB guest, 3 rounds',
      '### 512 MiB guest, 1 rounds',
    ])
    expect(md.join('\n')).toMatch(/started 0.3 s late \(control\) \|\s+75\.00/)
    // save minus lzop's in the same round (+0.74, −0.46, −0.10 s): the median of the pairs, not of each helper
    const helperLine = md
      .join('\n')
      .split('\n')
      .find((l) => l.startsWith('| xbzrle helper'))!
    expect(helperLine.split('|').map((c) => c.trim())[5]).toBe('−0.10')
  })

  it('a save faster by the medians but slower round by round is a miss: both must agree', () => {
    const rows = parseMeasureOutput(
      [
        'lzop\t1\t9000000\t1000\t700',
        'xbzrle\t1\t7000000\t1100\t700',
        'lzop\t2\t9000000\t2000\t700',
        'xbzrle\t2\t7000000\t2100\t700',
        'lzop\t3\t9000000\t3000\t700',
        'xbzrle\t3\t7000000\t1500\t700',
      ].join('\n'),
    )
    const save = libvirtVerdicts(rows)[1]!
    expect(save.measured).toBe('1.50 vs 2.00 s (0.75x; +0.10 s round by round)')
    expect(save.status).toBe('missed')
    expect(save.cause).toMatch(/\+0\.10 s round by round/)
  })

  it('a slower save is a miss with a cause; no rows is not measured', () => {
    const rows = parseMeasureOutput(OUTPUT).map((r) =>
      r.helper === 'xbzrle' ? { ...r, saveMs: r.saveMs + 500 } : r,
    )
    const save = libvirtVerdicts(rows)[1]!
    expect(save.status).toBe('missed')
    expect(save.cause).toMatch(/node process/)
    expect(save.cause).not.toMatch(/started 0.3 s late/) // no control rows
    expect(libvirtVerdicts([]).map((v) => v.status)).toEqual(['not measured', 'not measured'])
  })
})
