/**
 * The serial test lane (vitest.shared.ts) is only as good as its list: a test that starts QEMU or libvirtd but
 * is missing from QEMU_TESTS would run beside other tests, and a TCG guest's timing would depend on what else
 * runs. Every QEMU or libvirt test passes through requireQemu / requireLibvirt (the CI=true gate), so a file
 * that calls either must be listed.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'
import { QEMU_TESTS } from '../../../vitest.shared.js'

const root = join(import.meta.dirname, '../../..')

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name === 'node_modules' || e.name === 'dist') return []
    const path = join(dir, e.name)
    return e.isDirectory() ? testFiles(path) : e.name.endsWith('.test.ts') ? [path] : []
  })
}

function listed(file: string): boolean {
  const rel = relative(root, file)
  return Object.entries(QEMU_TESTS).some(([workspace, patterns]) =>
    patterns.some((p) =>
      p.includes('*') ? rel.startsWith(`${workspace}/src/`) : rel === `${workspace}/${p}`,
    ),
  )
}

describe('test lanes', () => {
  it('every test file that starts QEMU or libvirtd is in the serial lane, and every listed file exists', () => {
    const files = ['apps', 'packages', 'bench'].flatMap((d) => testFiles(join(root, d)))
    const qemu = files.filter((f) => /\brequire(Qemu|Libvirt)\(/.test(readFileSync(f, 'utf8')))
    expect(qemu.length).toBeGreaterThan(10)
    expect(qemu.filter((f) => !listed(f)).map((f) => relative(root, f))).toEqual([])
    const named = Object.entries(QEMU_TESTS).flatMap(([w, ps]) =>
      ps.filter((p) => !p.includes('*')).map((p) => `${w}/${p}`),
    )
    expect(named.filter((p) => !files.includes(join(root, p)))).toEqual([])
  })
})
