// createAtomicOutput in-process: the target changes only on commit(), never shows partial bytes, keeps its mode,
// and an output that is the input (same inode, hard link, symlink) is refused.
import {
  chmodSync,
  linkSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { removeTmpDirs, tmpDir } from '@xbzrle/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createAtomicOutput } from './atomic-output.js'

let dir: string
beforeAll(() => {
  dir = tmpDir('xbzrle-atomic-')
})
afterAll(removeTmpDirs)

function write(out: { stream: NodeJS.WritableStream }, data: Buffer): Promise<void> {
  return new Promise((res) => {
    if (out.stream.write(data)) res()
    else out.stream.once('drain', () => res())
  })
}

const temps = (d: string) => readdirSync(d).filter((n) => n.includes('.xbzrle-tmp-'))

describe('createAtomicOutput', () => {
  it('the old file stays byte-identical until commit(), then the new bytes appear whole', async () => {
    const d = mkdtempSync(join(dir, 'c-'))
    const p = join(d, 'out.bin')
    writeFileSync(p, 'old contents')
    chmodSync(p, 0o640)
    const out = await createAtomicOutput(p)
    const data = Buffer.alloc(3 << 20, 7)
    await write(out, data)
    expect(readFileSync(p, 'utf8')).toBe('old contents')
    expect(temps(d)).toHaveLength(1)
    out.stream.end()
    await out.commit()
    expect(readFileSync(p).equals(data)).toBe(true)
    expect(statSync(p).mode & 0o777).toBe(0o640)
    expect(temps(d)).toEqual([])
  })

  it('abort() leaves the old file and removes the temporary file; a new file is never created', async () => {
    const d = mkdtempSync(join(dir, 'a-'))
    const p = join(d, 'out.bin')
    writeFileSync(p, 'keep me')
    const out = await createAtomicOutput(p)
    await write(out, Buffer.alloc(1 << 20, 1))
    await out.abort()
    expect(readFileSync(p, 'utf8')).toBe('keep me')
    const fresh = await createAtomicOutput(join(d, 'new.bin'))
    await write(fresh, Buffer.from('x'))
    await fresh.abort()
    expect(readdirSync(d).sort()).toEqual(['out.bin'])
    await expect(out.commit()).rejects.toThrow(/discarded/)
  })

  it('refuses the input as output: same path, hard link, symlink, and stdin when it is that file', async () => {
    const d = mkdtempSync(join(dir, 's-'))
    const input = join(d, 'in.bin')
    writeFileSync(input, 'input bytes')
    linkSync(input, join(d, 'hard'))
    symlinkSync(input, join(d, 'soft'))
    for (const o of [input, join(d, 'hard'), join(d, 'soft')]) {
      await expect(createAtomicOutput(o, { sameAs: [input] }), o).rejects.toMatchObject({
        exitCode: 2,
        message: expect.stringMatching(/same file as the input/),
      })
    }
    expect(readFileSync(input, 'utf8')).toBe('input bytes')
    expect(temps(d)).toEqual([])
    // A different file with the same contents is fine, and so is a symlink target being replaced.
    const other = join(d, 'other.bin')
    writeFileSync(other, 'input bytes')
    const ok = await createAtomicOutput(other, { sameAs: [input] })
    ok.stream.end('new')
    await ok.commit()
    expect(readFileSync(other, 'utf8')).toBe('new')
    symlinkSync(other, join(d, 'link-to-other'))
    const viaLink = await createAtomicOutput(join(d, 'link-to-other'), { sameAs: [input] })
    viaLink.stream.end('via link')
    await viaLink.commit()
    expect(lstatSync(join(d, 'link-to-other')).isSymbolicLink()).toBe(true)
    expect(readFileSync(other, 'utf8')).toBe('via link')
  })

  it('a new file gets the requested mode minus the umask; a directory is refused', async () => {
    const d = mkdtempSync(join(dir, 'm-'))
    const out = await createAtomicOutput(join(d, 'secret'), { mode: 0o600 })
    out.stream.end('s')
    await out.commit()
    expect(statSync(join(d, 'secret')).mode & 0o777).toBe(0o600)
    await expect(createAtomicOutput(d)).rejects.toMatchObject({ exitCode: 4 })
  })
})
