// Cross-version compatibility matrix: writer version × reader version × transport (file, pipe, WebSocket),
// with the real v1 release taking part. The commit that released format v1 (packages/protocol/RELEASES.json) is
// checked out into a scratch folder, built, packed and installed into a scratch project, and its CLI and
// libraries act as the old writer, reader, sender and receiver.
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import { freePort } from '@xbzrle/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, installPacked, sh } from './test-cli.js'

const root = fileURLToPath(new URL('../../..', import.meta.url))
const releases = JSON.parse(readFileSync(join(root, 'packages/protocol/RELEASES.json'), 'utf8')) as {
  formats: Record<string, string>
}
const V1_COMMIT = releases.formats['1']!
const TOKEN = 'compat-token'

let scratch: string
const receivers: ReturnType<typeof spawn>[] = []
let app: string
let oldCli: string
let input: string
let original: Buffer
/** An earlier image of the same simulated VM (its first pass only): the base of the `current-v3-base` writer. */
let base: string

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'xbzrle-compat-'))
  const src = join(scratch, 'v1-src')
  mkdirSync(src)
  // A missing commit (e.g. a shallow clone) must fail loudly: the matrix is the proof that v1 still works.
  sh('sh', ['-c', `git -C '${root}' archive --format=tar ${V1_COMMIT} | tar -x -C '${src}'`], scratch)
  sh('npm', ['ci', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], src, { CI: 'true' })
  app = installPacked(src, scratch, 'v1-consumer').app
  oldCli = join(app, 'node_modules', '.bin', 'xbzrle')
  // Old-side WebSocket helpers, written against the v1 release's own public API.
  writeFileSync(
    join(app, 'old-receive.mjs'),
    `import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { DecodeStream } from '@xbzrle/adapter-libvirt'
import { createReceiver } from '@xbzrle/adapter-ws'
const [port, out] = process.argv.slice(2)
let finish
const done = new Promise((r) => (finish = r))
const rx = createReceiver({
  token: process.env.XBZRLE_TOKEN,
  createPipeline: () => { const d = new DecodeStream(); return { writable: d, done: pipeline(d, createWriteStream(out)) } },
  onEvent: (e) => { if (e.type === 'session-end') finish(0); if (e.type === 'session-error') { console.error(e.message); finish(3) } },
})
await rx.listen('127.0.0.1', Number(port))
console.error('listening')
const code = await done
await new Promise((r) => setTimeout(r, 300))
await rx.close()
process.exit(code)
`,
  )
  writeFileSync(
    join(app, 'old-send.mjs'),
    `import { createReadStream } from 'node:fs'
import { EncodeStream } from '@xbzrle/adapter-libvirt'
import { sendStream } from '@xbzrle/adapter-ws'
const [url, file] = process.argv.slice(2)
try {
  const r = await sendStream(createReadStream(file).pipe(new EncodeStream()), url, { token: process.env.XBZRLE_TOKEN })
  console.error('sent format v' + r.version)
} catch (e) { console.error(e.message); process.exit(5) }
`,
  )
  input = join(scratch, 'in.mig')
  original = Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 2, seed: 8 }).stream()])
  writeFileSync(input, original)
  base = join(scratch, 'base.mig')
  writeFileSync(base, Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 0, seed: 8 }).stream()]))
}, 600_000)

afterAll(() => {
  for (const r of receivers) r.kill('SIGKILL')
  rmSync(scratch, { recursive: true, force: true })
})

type Side = 'v1-release' | 'current-v1' | 'current-v2' | 'current-v3' | 'current-v3-base'
const cliOf = (s: Side) => (s === 'v1-release' ? oldCli : `${process.execPath} ${CLI}`)
const encodeArgs = (s: Side) =>
  s === 'current-v1'
    ? 'encode --format-version 1'
    : s === 'current-v2'
      ? 'encode --format-version 2'
      : s === 'current-v3-base'
        ? `encode --base ${base}`
        : 'encode'
const versionOf = (s: Side) => s.replace(/^current-v(\d).*/, 'version $1')

function run(cmd: string, env: NodeJS.ProcessEnv = {}): { code: number; stderr: string } {
  try {
    execFileSync('bash', ['-c', `set -o pipefail; ${cmd}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    })
    return { code: 0, stderr: '' }
  } catch (e) {
    const err = e as { status: number; stderr: Buffer }
    return { code: err.status, stderr: err.stderr.toString() }
  }
}

/** Starts a receiver (argv, no shell) and resolves when it listens; the returned promise is its exit. */
function startListening(argv: string[]): Promise<{ exit: Promise<{ code: number | null; stderr: string }> }> {
  // stdout is not read: it must not be a pipe, or 'close' would wait for it forever.
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, XBZRLE_TOKEN: TOKEN },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  receivers.push(child)
  let stderr = ''
  const exit = new Promise<{ code: number | null; stderr: string }>((r) =>
    child.on('close', (code) => r({ code, stderr })),
  )
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (b) => {
      stderr += b
      // Wrapped: resolving with the exit promise itself would adopt it and wait for the receiver to exit.
      if (/listening/.test(stderr)) resolve({ exit })
    })
    child.on('close', (code) => reject(new Error(`receiver exited ${code}: ${stderr}`)))
  })
}

/** Runs a sender (argv, no shell) without blocking the event loop. */
function send(argv: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, XBZRLE_TOKEN: TOKEN },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr!.on('data', (b) => (stderr += b))
  return new Promise((r) => child.on('close', (code) => r({ code, stderr })))
}

const CELLS: Array<{ writer: Side; reader: 'v1-release' | 'current'; works: boolean }> = [
  { writer: 'v1-release', reader: 'v1-release', works: true },
  { writer: 'v1-release', reader: 'current', works: true },
  { writer: 'current-v1', reader: 'v1-release', works: true },
  { writer: 'current-v1', reader: 'current', works: true },
  { writer: 'current-v2', reader: 'current', works: true },
  { writer: 'current-v3', reader: 'current', works: true },
  // Encoded against a base image (issue #15): the current reader given the base decodes it.
  { writer: 'current-v3-base', reader: 'current', works: true },
  // An old reader refuses a newer format with a clear message, and writes nothing.
  { writer: 'current-v2', reader: 'v1-release', works: false },
  { writer: 'current-v3', reader: 'v1-release', works: false },
  { writer: 'current-v3-base', reader: 'v1-release', works: false },
]

describe('compatibility matrix (file and pipe)', () => {
  for (const cell of CELLS) {
    for (const transport of ['file', 'pipe'] as const) {
      it(`${cell.writer} → ${cell.reader} over a ${transport}: ${cell.works ? 'works' : 'clear refusal'}`, () => {
        const out = join(scratch, `out-${cell.writer}-${cell.reader}-${transport}.mig`)
        const enc = `${cliOf(cell.writer)} ${encodeArgs(cell.writer)} < ${input}`
        const withBase =
          cell.writer === 'current-v3-base' && cell.reader === 'current' ? ` --base ${base}` : ''
        const dec = `${cliOf(cell.reader === 'current' ? 'current-v3' : 'v1-release')} decode${withBase}`
        const r =
          transport === 'file'
            ? run(`${enc} 2>${out}.encode.log > ${out}.xbz && ${dec} ${out}.xbz > ${out}`) // the reader's stderr only
            : run(`${enc} 2>/dev/null | ${dec} > ${out}`) // the writer may die of EPIPE: the reader's verdict counts
        if (cell.works) {
          expect(r.code, r.stderr).toBe(0)
          expect(readFileSync(out).equals(original)).toBe(true)
        } else {
          expect(r.code, r.stderr).toBe(3)
          expect(r.stderr.trim().split('\n')).toHaveLength(1)
          expect(r.stderr).toContain(versionOf(cell.writer))
          expect(r.stderr).toMatch(/upgrade/i)
          expect(readFileSync(out).length).toBe(0)
        }
      })
    }
  }
})

describe('compatibility matrix (WebSocket: the peers negotiate the format)', () => {
  // Who receives (argv for a port and an output file), who sends (argv for a port), and what the sender reports.
  const oldReceiver = (port: number, out: string) => [
    process.execPath,
    join(app, 'old-receive.mjs'),
    String(port),
    out,
  ]
  const newReceiver = (port: number, out: string) => [
    process.execPath,
    CLI,
    'receive',
    '--listen',
    `127.0.0.1:${port}`,
    '-o',
    out,
    '--once',
  ]
  const oldSender = (port: number) => [
    process.execPath,
    join(app, 'old-send.mjs'),
    `ws://127.0.0.1:${port}/m`,
    input,
  ]
  const newSender = (port: number) => [
    process.execPath,
    CLI,
    'send',
    `ws://127.0.0.1:${port}/m`,
    input,
    '--stats',
  ]
  it.each([
    {
      name: 'current sender → v1-release receiver: agree on v1',
      rx: oldReceiver,
      tx: newSender,
      says: /format v1/,
    },
    {
      name: 'v1-release sender → current receiver: v1',
      rx: newReceiver,
      tx: oldSender,
      says: /sent format v1/,
    },
    { name: 'current sender → current receiver: v3', rx: newReceiver, tx: newSender, says: /format v3/ },
    {
      name: 'current sender with --base → v1-release receiver: v1, without a base (one logged line)',
      rx: oldReceiver,
      tx: (port: number) => [...newSender(port), '--base', base],
      says: /format v1, which has no base images: sending without a base[\s\S]*format v1/,
    },
    {
      name: 'current sender and receiver holding the same base: v3 against it',
      rx: (port: number, out: string) => [...newReceiver(port, out), '--base', base],
      tx: (port: number) => [...newSender(port), '--base', base],
      says: /receiver holds our base sha256:[0-9a-f]{64}: encoding against it[\s\S]*format v3/,
    },
  ])('$name, byte-exact', async ({ rx, tx, says }) => {
    const port = await freePort()
    const out = join(scratch, `ws-${port}.mig`)
    const { exit } = await startListening(rx(port, out))
    const r = await send(tx(port))
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(says)
    expect((await exit).code).toBe(0)
    expect(readFileSync(out).equals(original)).toBe(true)
  })

  it('an already-encoded v2 stream sent to a v1-release receiver is refused by version (4406), not garbled', async () => {
    const port = await freePort()
    const encoded = join(scratch, 'v2.xbz')
    expect(run(`${process.execPath} ${CLI} encode ${input} -o ${encoded}`).code).toBe(0)
    await startListening([
      process.execPath,
      join(app, 'old-receive.mjs'),
      String(port),
      join(scratch, 'never.mig'),
    ])
    const tx = await send([process.execPath, CLI, 'send', `ws://127.0.0.1:${port}/m`, encoded, '--encoded'])
    expect(tx.code).toBe(5)
    expect(tx.stderr).toMatch(/4406/)
  })
})

describe('golden vectors with the v1 release', () => {
  it('the released v1 decoder reads every committed v1 vector as the current one does, and refuses v2 and v3 vectors', {
    timeout: 240_000,
  }, () => {
    const dir = join(root, 'packages/protocol/vectors')
    for (const version of ['v1', 'v2', 'v3']) {
      for (const f of readdirSync(join(dir, version)).filter((n) => n.endsWith('.xbz'))) {
        const path = join(dir, version, f)
        const oldR = run(`${oldCli} decode ${path} > /dev/null`)
        const newR = run(`${process.execPath} ${CLI} decode ${path} > /dev/null`)
        if (version === 'v1') expect(oldR.code, `${f}: ${oldR.stderr}`).toBe(newR.code)
        else expect(oldR.code === 0, `${f} must be refused by v1`).toBe(false)
      }
    }
  })
})
