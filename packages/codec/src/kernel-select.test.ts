import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { getKernel, kernelName, selectKernelName } from './kernel.js'

describe('kernel selection', () => {
  it('prefers wasm when it is available', () => {
    expect(selectKernelName({})).toBe('wasm')
    expect(['wasm', 'ts']).toContain(kernelName())
  })

  it('honours XBZRLE_KERNEL', () => {
    expect(selectKernelName({ XBZRLE_KERNEL: 'ts' })).toBe('ts')
    expect(selectKernelName({ XBZRLE_KERNEL: 'wasm' })).toBe('wasm')
    expect(() => selectKernelName({ XBZRLE_KERNEL: 'avx' })).toThrow(/XBZRLE_KERNEL must be/)
  })

  it('getKernel returns the named kernel', () => {
    expect(getKernel('ts').name).toBe('ts')
    expect(getKernel('wasm').name).toBe('wasm')
  })

  it.each([
    ['ts', 'ts'],
    ['wasm', 'wasm'],
  ])('a child process with XBZRLE_KERNEL=%s uses %s', (env, want) => {
    const pkg = join(dirname(fileURLToPath(import.meta.url)), '..')
    const tsx = join(pkg, '..', '..', 'node_modules', 'tsx', 'dist', 'cli.mjs')
    const script = "import { kernelName } from './src/kernel.ts'; console.log(kernelName())"
    const r = spawnSync(process.execPath, [tsx, '--eval', script], {
      cwd: pkg,
      env: { ...process.env, XBZRLE_KERNEL: env },
      encoding: 'utf8',
    })
    expect(r.stderr).toBe('')
    expect(r.stdout.trim()).toBe(want)
  })

  it('forcing wasm where WebAssembly is missing is a clear error', () => {
    const pkg = join(dirname(fileURLToPath(import.meta.url)), '..')
    const tsx = join(pkg, '..', '..', 'node_modules', 'tsx', 'dist', 'cli.mjs')
    // Simulate a runtime without wasm SIMD: the module constructor throws (tsx itself still needs wasm).
    const script = [
      "WebAssembly.Module = class { constructor() { throw new Error('no SIMD here') } }",
      "const m = await import('./src/kernel.ts')",
      'console.log(m.selectKernelName({}))',
      'try { m.kernelName() } catch (e) { console.log(e.message) }',
    ].join(';')
    const r = spawnSync(process.execPath, [tsx, '--input-type=module', '--eval', script], {
      cwd: pkg,
      env: { ...process.env, XBZRLE_KERNEL: 'wasm' },
      encoding: 'utf8',
    })
    expect(r.stdout).toMatch(/^ts\nXBZRLE_KERNEL=wasm but the wasm kernel is unavailable: no SIMD here/)
  })
})
