import { describe, expect, it } from 'vitest'
import { parseMeasureOutput } from './libvirt.js'
import { libvirtVerdicts } from './report-libvirt.js'

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
    expect(rows[1]).toEqual({ helper: 'xbzrle', round: 1, imageBytes: 7493661, saveMs: 2361, restoreMs: 930 })
  })

  it('judges the medians: smaller image met; save 1.70 s vs 1.80 s met', () => {
    const [size, save] = libvirtVerdicts(parseMeasureOutput(OUTPUT))
    expect(size!.status).toBe('met')
    expect(save!.status).toBe('met')
    expect(save!.measured).toBe('1.70 vs 1.80 s (0.94x)')
  })

  it('a slower save is a miss with a cause; no rows is not measured', () => {
    const rows = parseMeasureOutput(OUTPUT).map((r) =>
      r.helper === 'xbzrle' ? { ...r, saveMs: r.saveMs + 500 } : r,
    )
    const save = libvirtVerdicts(rows)[1]!
    expect(save.status).toBe('missed')
    expect(save.cause).toMatch(/start-up/)
    expect(libvirtVerdicts([]).map((v) => v.status)).toEqual(['not measured', 'not measured'])
  })
})
