// `--base` (issue #15) through the built CLI: encode/decode against an earlier image, refusals, inspect.
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  asSaveImage,
  changedImage,
  saveLikeImage,
} from '../../../packages/adapter-libvirt/src/base/test-images.js'
import { freePort, runCli, startCliReceiver } from './test-cli.js'

let dir: string
let first: Buffer
let second: Buffer
const f = (name: string) => join(dir, name)

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xbzrle-cli-base-'))
  first = saveLikeImage(21)
  second = changedImage(first, 0.05, 9)
  writeFileSync(f('first.save'), asSaveImage(first))
  writeFileSync(f('second.save'), asSaveImage(second))
  writeFileSync(f('other.save'), asSaveImage(saveLikeImage(22)))
  writeFileSync(f('truncated.save'), asSaveImage(first).subarray(0, 100_000))
  const e = await runCli(['encode', f('second.save'), '--base', f('first.save'), '-o', f('second.xbz')])
  expect(e.code, e.stderr).toBe(0)
})
const children: ChildProcess[] = []
afterAll(() => {
  for (const c of children) c.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

describe('xbzrle encode/decode --base', () => {
  it('the second save encoded against the first is much smaller and decodes byte-exactly', async () => {
    const alone = await runCli(['encode', f('second.save')])
    expect(alone.code).toBe(0)
    const based = readFileSync(f('second.xbz'))
    expect(based.length).toBeLessThan(alone.stdout.length * 0.2)
    const d = await runCli(['decode', f('second.xbz'), '--base', f('first.save'), '-o', f('back.save')])
    expect(d.code, d.stderr).toBe(0)
    expect(readFileSync(f('back.save')).equals(readFileSync(f('second.save')))).toBe(true)
    // stdin → stdout works too (the header is read ahead, then replayed)
    const p = await runCli(['decode', '--base', f('first.save')], based)
    expect(p.code, p.stderr).toBe(0)
    expect(p.stdout.equals(readFileSync(f('second.save')))).toBe(true)
  })

  it.each([
    ['missing', []],
    ['not found', ['--base', 'nope.save']],
    ['wrong (another VM)', ['--base', 'other.save']],
    ['truncated', ['--base', 'truncated.save']],
  ])('a %s base: one line naming the expected fingerprint, exit 3, no output byte', async (_c, args) => {
    const a = args.map((x) => (x.endsWith('.save') ? f(x) : x))
    const toStdout = await runCli(['decode', f('second.xbz'), ...a])
    expect(toStdout.code).toBe(3)
    expect(toStdout.stdout.length).toBe(0)
    expect(toStdout.stderr).toMatch(
      /^xbzrle: xbzrle base: .*the stream needs base sha256:[0-9a-f]{64}, \d+ bytes, was first\.save\n$/,
    )
    const toFile = await runCli(['decode', f('second.xbz'), ...a, '-o', f('never.save')])
    expect(toFile.code).toBe(3)
    expect(existsSync(f('never.save'))).toBe(false)
  })

  it('inspect shows the base requirement; --format-version 2 with --base is a usage error', async () => {
    const i = await runCli(['inspect', f('second.xbz')])
    expect(i.code, i.stderr).toBe(0)
    expect(i.stdout.toString()).toMatch(
      /depends on base image sha256:[0-9a-f]{64}, \d+ bytes, was first\.save/,
    )
    const j = await runCli(['inspect', '--json', f('second.xbz')])
    expect(JSON.parse(j.stdout.toString()).base).toMatchObject({
      name: 'first.save',
      bytes: asSaveImage(first).length,
    })
    const v2 = await runCli(['encode', f('second.save'), '--base', f('first.save'), '--format-version', '2'])
    expect(v2.code).toBe(2)
    expect(v2.stderr).toMatch(/--base needs format version 3/)
  })
})

describe('xbzrle rebase', () => {
  it('--flatten: a standalone stream whose decoded bytes equal those of the no-base encoding', async () => {
    const r = await runCli([
      'rebase',
      f('second.xbz'),
      '--base',
      f('first.save'),
      '--flatten',
      '-o',
      f('flat.xbz'),
    ])
    expect(r.code, r.stderr).toBe(0)
    const i = await runCli(['inspect', f('flat.xbz')])
    expect(i.stdout.toString()).not.toMatch(/depends on base/)
    const flat = await runCli(['decode', f('flat.xbz')])
    expect(flat.code, flat.stderr).toBe(0)
    const alone = await runCli(['encode', f('second.save')])
    const aloneBack = await runCli(['decode'], alone.stdout)
    expect(flat.stdout.equals(aloneBack.stdout)).toBe(true)
    expect(flat.stdout.equals(readFileSync(f('second.save')))).toBe(true)
  })

  it('--onto another base; a wrong --base leaves no output file; no --base is a usage error', async () => {
    const r = await runCli([
      'rebase',
      f('second.xbz'),
      '--base',
      f('first.save'),
      '--onto',
      f('other.save'),
      '-o',
      f('onto.xbz'),
    ])
    expect(r.code, r.stderr).toBe(0)
    const d = await runCli(['decode', f('onto.xbz'), '--base', f('other.save')])
    expect(d.code, d.stderr).toBe(0)
    expect(d.stdout.equals(readFileSync(f('second.save')))).toBe(true)
    const bad = await runCli(['rebase', f('second.xbz'), '--base', f('other.save'), '-o', f('bad.xbz')])
    expect(bad.code).toBe(3)
    expect(existsSync(f('bad.xbz'))).toBe(false)
    expect((await runCli(['rebase', f('second.xbz')])).code).toBe(2)
  })
})

describe('xbzrle send / receive --base', () => {
  /** Sends second.save to a receiver holding `held`; returns the sender's stderr and the receiver's. */
  async function migrate(held: string, out: string) {
    const port = await freePort()
    const rx = await startCliReceiver(
      ['--listen', `127.0.0.1:${port}`, '--base', f(held), '-o', f(out), '--once', '--stats'],
      {},
      children,
    )
    const tx = await runCli([
      'send',
      `ws://127.0.0.1:${port}/vm1`,
      f('second.save'),
      '--base',
      f('first.save'),
      '--stats',
    ])
    expect(tx.code, tx.stderr).toBe(0)
    expect(await rx.exit).toBe(0)
    expect(readFileSync(f(out)).equals(readFileSync(f('second.save')))).toBe(true)
    const m = /([\d.]+) (B|KiB|MiB|GiB) sent to/.exec(tx.stderr)
    expect(m, tx.stderr).not.toBeNull()
    const sent = Number(m![1]) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(m![2]!)
    return { tx: tx.stderr, rx: rx.stderr(), sent }
  }

  it('the peers hold the same base: the stream is encoded against it (far fewer bytes on the wire)', async () => {
    const same = await migrate('first.save', 'rx-same.save')
    expect(same.tx).toMatch(/the receiver holds our base sha256:[0-9a-f]{64}: encoding against it/)
    const other = await migrate('other.save', 'rx-other.save')
    // different bases: a logged line on each side, and the migration goes through without a base
    expect(other.tx).toMatch(
      /the receiver holds base sha256:[0-9a-f]{64}, not ours \(sha256:[0-9a-f]{64}\): sending without a base/,
    )
    expect(other.rx).toMatch(
      /the sender's base sha256:[0-9a-f]{64} is not ours \(sha256:[0-9a-f]{64}\): it sends without a base/,
    )
    expect(same.sent).toBeLessThan(other.sent * 0.2)
  })
})

describe('the libvirt save flow: encode/decode --base-store DIR (keyed by the domain UUID)', () => {
  it('each save is encoded against the previous one of its domain; decode finds the chain; a broken chain is refused', async () => {
    const store = f('store')
    mkdirSync(store)
    const vm = '6f1c9a52-0b7e-4c1e-9d0a-3a5b7c9e1f20'
    const third = changedImage(second, 0.05, 10)
    const saves = [first, second, third].map((img, i) => {
      writeFileSync(f(`vm-${i}.save`), asSaveImage(img, vm))
      return readFileSync(f(`vm-${i}.save`))
    })
    const sizes: number[] = []
    for (let i = 0; i < 3; i++) {
      const e = await runCli(['encode', f(`vm-${i}.save`), '--base-store', store, '-o', f(`vm-${i}.xbz`)])
      expect(e.code, e.stderr).toBe(0)
      expect(e.stderr).toMatch(
        i === 0 ? /no previous save in the store/ : /encoding against the previous save/,
      )
      sizes.push(readFileSync(f(`vm-${i}.xbz`)).length)
    }
    expect(sizes[2]!).toBeLessThan(sizes[0]! * 0.2)
    // the dependency is visible: vm-2.xbz needs the save that vm-1.xbz holds
    const i2 = await runCli(['inspect', f('vm-2.xbz')])
    expect(i2.stdout.toString()).toMatch(
      /depends on base image sha256:[0-9a-f]{64}, \d+ bytes, was vm-1\.xbz/,
    )
    for (const i of [2, 1, 0]) {
      const d = await runCli(['decode', f(`vm-${i}.xbz`), '--base-store', store])
      expect(d.code, d.stderr).toBe(0)
      expect(d.stdout.equals(saves[i]!)).toBe(true)
    }
    // a standalone copy from the store's chain
    const flat = await runCli(['rebase', f('vm-2.xbz'), '--base-store', store, '-o', f('vm-2.full.xbz')])
    expect(flat.code, flat.stderr).toBe(0)
    const flatBack = await runCli(['decode', f('vm-2.full.xbz')])
    expect(flatBack.stdout.equals(saves[2]!)).toBe(true)
    // another domain has its own chain
    writeFileSync(f('vm2.save'), asSaveImage(third, '00000000-1111-2222-3333-444444444444'))
    const o = await runCli(['encode', f('vm2.save'), '--base-store', store, '-o', f('vm2.xbz')])
    expect(o.stderr).toMatch(/no previous save in the store/)
    // a link removed from the chain: the saves after it are refused, one line, no output
    renameSync(f('vm-0.xbz'), f('moved.xbz'))
    const broken = await runCli(['decode', f('vm-2.xbz'), '--base-store', store])
    expect(broken.code).toBe(3)
    expect(broken.stdout.length).toBe(0)
    expect(broken.stderr).toMatch(/^xbzrle: xbzrle base: base image .*vm-1\.xbz cannot be used .*\n$/)
    // and the next save starts a new chain instead of depending on it
    writeFileSync(f('vm-3.save'), asSaveImage(changedImage(third, 0.05, 11), vm))
    const next = await runCli(['encode', f('vm-3.save'), '--base-store', store, '-o', f('vm-3.xbz')])
    expect(next.code, next.stderr).toBe(0)
    expect(next.stderr).toMatch(/vm-0\.xbz of the chain is gone: this save starts a new chain/)
  })
})
