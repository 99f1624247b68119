import { describe, expect, it } from 'vitest'
import { isFastEncode } from './helper-form.js'

describe('isFastEncode (which invocations skip loading the whole CLI)', () => {
  it('is the plain stdin → stdout compress form, with the flags lzop users add', () => {
    expect(isFastEncode(['-c'], false)).toBe(true)
    expect(isFastEncode(['-c', '-1', '--ignore-warn'], false)).toBe(true)
    expect(isFastEncode(['-qc'], false)).toBe(true)
  })

  it('is not decompression, files, -o, --strict, --debug, a terminal on stderr or a subcommand', () => {
    expect(isFastEncode(['-dc'], false)).toBe(false)
    expect(isFastEncode(['-c', 'in.mig'], false)).toBe(false)
    expect(isFastEncode(['-co', 'out.xbz'], false)).toBe(false)
    expect(isFastEncode(['-c', '--strict'], false)).toBe(false)
    expect(isFastEncode(['-c', '--debug'], false)).toBe(false)
    expect(isFastEncode(['-c'], true)).toBe(false)
    expect(isFastEncode(['encode'], false)).toBe(false)
    expect(isFastEncode(['--libvirt-helper', 'lzop', '-c'], false)).toBe(false)
  })
})
