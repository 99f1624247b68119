import { describe, expect, it } from 'vitest'
import { fastForm } from './helper-form.js'

describe('fastForm (which invocations skip loading the whole CLI)', () => {
  it('is the plain stdin → stdout compress and decompress forms, with the flags lzop users add', () => {
    expect(fastForm(['-c'], false)).toBe('encode')
    expect(fastForm(['-c', '-1', '--ignore-warn'], false)).toBe('encode')
    expect(fastForm(['-qc'], false)).toBe('encode')
    expect(fastForm(['-dc'], false)).toBe('decode')
    expect(fastForm(['-dc', '--ignore-warn'], false)).toBe('decode')
    expect(fastForm(['-d'], false)).toBe('decode')
  })

  it('is a bare `encode` or `decode` (the exec: commands of the README), and nothing more', () => {
    expect(fastForm(['encode'], false)).toBe('encode')
    expect(fastForm(['decode'], false)).toBe('decode')
    expect(fastForm(['encode'], true)).toBeUndefined()
    expect(fastForm(['encode', '--stats'], false)).toBeUndefined()
    expect(fastForm(['decode', 'in.xbz'], false)).toBeUndefined()
    expect(fastForm(['encode', '--debug'], false)).toBeUndefined()
    expect(fastForm(['inspect'], false)).toBeUndefined()
  })

  it('is the libvirt helper form, in both spellings', () => {
    expect(fastForm(['--libvirt-helper', 'lzop', '-c'], false)).toBe('helper')
    expect(fastForm(['--libvirt-helper=zstd', '-dc'], true)).toBe('helper')
  })

  it('is not files, -o, --strict, --debug, a terminal on stderr or a subcommand', () => {
    expect(fastForm(['-c', 'in.mig'], false)).toBeUndefined()
    expect(fastForm(['-dc', 'in.xbz'], false)).toBeUndefined()
    expect(fastForm(['-co', 'out.xbz'], false)).toBeUndefined()
    expect(fastForm(['-c', '--strict'], false)).toBeUndefined()
    expect(fastForm(['-c', '--debug'], false)).toBeUndefined()
    expect(fastForm(['-c'], true)).toBeUndefined()
    expect(fastForm(['-dc'], true)).toBeUndefined()
    expect(fastForm(['encode', '-o', 'out.xbz'], false)).toBeUndefined()
    expect(fastForm(['-V'], false)).toBeUndefined()
  })
})
