// Cross-version compatibility matrix: writer version × reader version × transport (file, pipe, WebSocket),
// with the real v1 release taking part. The commit that released format v1 (packages/protocol/RELEASES.json) is
// checked out into a scratch folder, built, packed and installed into a scratch project, and its CLI and
// libraries act as the old writer, reader, sender and receiver.
import { execFile, execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'
import { freePort } from '@xbzrle/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI, installPacked } from './test-cli.js'

const root = fileURLToPath(new URL('../../..', import.meta.url))
const releases = JSON.parse(readFileSync(join(root, 'packages/protocol/RELEASES.json'), 'utf8')) as {
  formats: Record<string, string>
}
const TOKEN = 'compat-token'

/** One released wire format: the commit that shipped it, built once and shared by every cell that uses it. */
interface Release {
  readonly format: number
  readonly commit: string
  /** The scratch project the release's packed packages are installed into. */
  app: string
  /** Its `xbzrle` command. */
  cli: string
}
const RELEASES: Release[] = Object.entries(releases.formats)
  .map(([format, commit]) => ({ format: Number(format), commit, app: '', cli: '' }))
  .sort((a, b) => a.format - b.format)
type ReleaseSide = `v${number}-release`
const releaseOf = (side: ReleaseSide): Release => {
  const r = RELEASES.find((x) => side === `v${x.format}-release`)
  if (!r) throw new Error(`${side} is not in packages/protocol/RELEASES.json`)
  return r
}

let scratch: string
const receivers: ReturnType<typeof spawn>[] = []
let input: string
let original: Buffer
let originalSha: string
/** An earlier image of the same simulated VM (its first pass only): the base of the `current-v3-base` writer. */
let base: string

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')
const sha256File = (path: string) => sha256(readFileSync(path))

const execFileAsync = promisify(execFile)
const releaseDir = (release: Release) => join(scratch, `v${release.format}`)

/**
 * Checks the release's commit out and builds it with its own prepare script (turbo run build). Asynchronous so that the
 * releases build side by side: each build is mostly one single-threaded tsc, and the machine has two cores.
 */
async function buildRelease(release: Release): Promise<void> {
  const src = join(releaseDir(release), 'src')
  mkdirSync(src, { recursive: true })
  // A missing commit (e.g. a shallow clone) must fail loudly: the matrix is the proof that old releases still work.
  const checkout = `git -C '${root}' archive --format=tar ${release.commit} | tar -x -C '${src}'`
  await execFileAsync('bash', ['-c', `set -o pipefail; ${checkout}`], { cwd: src })
  const opts = { cwd: src, env: { ...process.env, CI: 'true' }, maxBuffer: 64 << 20 }
  // Without install scripts: the release's build is tsc only, and they would compile zstd-napi from source (most of a
  // minute) for a tree that is only packed. The consumer project installs the packed release with them, as users do.
  await execFileAsync(
    'npm',
    ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'],
    opts,
  )
  await execFileAsync('npm', ['run', 'prepare'], opts) // the release's own build step (turbo run build)
}

/** Packs the built release, installs it into a scratch project and adds the old-side WebSocket helpers. */
async function installRelease(release: Release): Promise<void> {
  const dir = releaseDir(release)
  const src = join(dir, 'src')
  release.app = (await installPacked(src, dir, `v${release.format}-consumer`, root)).app
  // A release with zstd (format v2 on) must write and read zstd batches as its users' installs do: its binding
  // (taken from this checkout's build, see installPacked) has to load.
  const zstd = join(release.app, 'node_modules', 'zstd-napi', 'binding.js')
  if (existsSync(zstd)) await execFileAsync(process.execPath, ['-e', `require(${JSON.stringify(zstd)})`])
  else expect(release.format).toBe(1)
  release.cli = join(release.app, 'node_modules', '.bin', 'xbzrle')
  // Old-side WebSocket helpers, written against the public API every release so far shares.
  writeFileSync(
    join(release.app, 'old-receive.mjs'),
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
    join(release.app, 'old-send.mjs'),
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
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'xbzrle-compat-'))
  // Each release builds and installs on its own; the two overlap (npm, tsc and node-gyp are mostly one core each).
  await Promise.all(
    RELEASES.map(async (release) => {
      await buildRelease(release)
      await installRelease(release)
    }),
  )
  input = join(scratch, 'in.mig')
  original = Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 2, seed: 8 }).stream()])
  originalSha = sha256(original)
  writeFileSync(input, original)
  base = join(scratch, 'base.mig')
  writeFileSync(base, Buffer.concat([...new SimulatedGuest({ memMiB: 4, passes: 0, seed: 8 }).stream()]))
}, 600_000 * RELEASES.length)

afterAll(() => {
  for (const r of receivers) r.kill('SIGKILL')
  rmSync(scratch, { recursive: true, force: true })
})

type Side = ReleaseSide | 'current-v1' | 'current-v2' | 'current-v3' | 'current-v3-base'
type Reader = ReleaseSide | 'current'
const isRelease = (s: string): s is ReleaseSide => /^v\d+-release$/.test(s)
const cliOf = (s: Side | Reader) => (isRelease(s) ? releaseOf(s).cli : `${process.execPath} ${CLI}`)
const encodeArgs = (s: Side) =>
  s === 'current-v1'
    ? 'encode --format-version 1'
    : s === 'current-v2'
      ? 'encode --format-version 2'
      : s === 'current-v3-base'
        ? `encode --base ${base}`
        : 'encode'
const versionOf = (s: Side) => s.replace(/^(?:current-)?v(\d).*/, 'version $1')

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

const CELLS: Array<{ writer: Side; reader: Reader; works: boolean }> = [
  { writer: 'v1-release', reader: 'v1-release', works: true },
  { writer: 'v1-release', reader: 'v2-release', works: true },
  { writer: 'v1-release', reader: 'current', works: true },
  { writer: 'v2-release', reader: 'v2-release', works: true },
  { writer: 'v2-release', reader: 'current', works: true },
  { writer: 'current-v1', reader: 'v1-release', works: true },
  { writer: 'current-v1', reader: 'v2-release', works: true },
  { writer: 'current-v1', reader: 'current', works: true },
  { writer: 'current-v2', reader: 'v2-release', works: true },
  { writer: 'current-v2', reader: 'current', works: true },
  { writer: 'current-v3', reader: 'current', works: true },
  // Encoded against a base image (issue #15): the current reader given the base decodes it.
  { writer: 'current-v3-base', reader: 'current', works: true },
  // An old reader refuses a newer format with a clear message, and writes nothing.
  { writer: 'v2-release', reader: 'v1-release', works: false },
  { writer: 'current-v2', reader: 'v1-release', works: false },
  { writer: 'current-v3', reader: 'v1-release', works: false },
  { writer: 'current-v3-base', reader: 'v1-release', works: false },
  { writer: 'current-v3', reader: 'v2-release', works: false },
  { writer: 'current-v3-base', reader: 'v2-release', works: false },
]

describe('compatibility matrix (file and pipe)', () => {
  for (const cell of CELLS) {
    for (const transport of ['file', 'pipe'] as const) {
      it(`${cell.writer} → ${cell.reader} over a ${transport}: ${cell.works ? 'works' : 'clear refusal'}`, () => {
        const out = join(scratch, `out-${cell.writer}-${cell.reader}-${transport}.mig`)
        const enc = `${cliOf(cell.writer)} ${encodeArgs(cell.writer)} < ${input}`
        const withBase =
          cell.writer === 'current-v3-base' && cell.reader === 'current' ? ` --base ${base}` : ''
        const dec = `${cliOf(cell.reader)} decode${withBase}`
        const r =
          transport === 'file'
            ? run(`${enc} 2>${out}.encode.log > ${out}.xbz && ${dec} ${out}.xbz > ${out}`) // the reader's stderr only
            : run(`${enc} 2>/dev/null | ${dec} > ${out}`) // the writer may die of EPIPE: the reader's verdict counts
        if (cell.works) {
          expect(r.code, r.stderr).toBe(0)
          expect(sha256File(out)).toBe(originalSha)
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
  const oldReceiver = (release: ReleaseSide) => (port: number, out: string) => [
    process.execPath,
    join(releaseOf(release).app, 'old-receive.mjs'),
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
  const oldSender = (release: ReleaseSide) => (port: number) => [
    process.execPath,
    join(releaseOf(release).app, 'old-send.mjs'),
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
  const withOldRelease = (format: 1 | 2) => {
    const release: ReleaseSide = `v${format}-release`
    return [
      {
        name: `current sender → ${release} receiver: agree on v${format}`,
        rx: oldReceiver(release),
        tx: newSender,
        says: new RegExp(`format v${format}`),
      },
      {
        name: `${release} sender → current receiver: v${format}`,
        rx: newReceiver,
        tx: oldSender(release),
        says: new RegExp(`sent format v${format}`),
      },
      {
        name: `current sender with --base → ${release} receiver: v${format}, without a base (one logged line)`,
        rx: oldReceiver(release),
        tx: (port: number) => [...newSender(port), '--base', base],
        says: new RegExp(
          `format v${format}, which has no base images: sending without a base[\\s\\S]*format v${format}`,
        ),
      },
    ]
  }
  it.each([
    ...withOldRelease(1),
    ...withOldRelease(2),
    { name: 'current sender → current receiver: v3', rx: newReceiver, tx: newSender, says: /format v3/ },
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
    expect(sha256File(out)).toBe(originalSha)
  })

  it.each([
    { release: 'v1-release' as const, encode: 'encode --format-version 2', newer: 2 },
    { release: 'v2-release' as const, encode: 'encode', newer: 3 },
  ])(
    'an already-encoded v$newer stream sent to a $release receiver is refused by version (4406), not garbled',
    async ({ release, encode, newer }) => {
      const port = await freePort()
      const encoded = join(scratch, `v${newer}.xbz`)
      expect(run(`${process.execPath} ${CLI} ${encode} ${input} -o ${encoded}`).code).toBe(0)
      await startListening(oldReceiver(release)(port, join(scratch, `never-${newer}.mig`)))
      const tx = await send([process.execPath, CLI, 'send', `ws://127.0.0.1:${port}/m`, encoded, '--encoded'])
      expect(tx.code).toBe(5)
      expect(tx.stderr).toMatch(/4406/)
    },
  )
})

/** Runs `argv` (no shell), its stdout hashed: the exit code and the SHA-256 of what it wrote. */
function decodeDigest(argv: string[]): Promise<{ code: number | null; sha: string; stderr: string }> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
  const hash = createHash('sha256')
  let stderr = ''
  child.stdout!.on('data', (b) => hash.update(b))
  child.stderr!.on('data', (b) => (stderr += b))
  return new Promise((r) => child.on('close', (code) => r({ code, sha: hash.digest('hex'), stderr })))
}

/** `fn` over `items`, two at a time (the machine has two cores): the vectors are many short processes. */
async function mapTwoAtATime<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!)
    }
  }
  await Promise.all([worker(), worker()])
  return out
}

describe('golden vectors with the released decoders', () => {
  const dir = join(root, 'packages/protocol/vectors')
  const vectors = readdirSync(dir)
    .filter((v) => /^v\d+$/.test(v))
    .flatMap((v) =>
      readdirSync(join(dir, v))
        .filter((n) => n.endsWith('.xbz'))
        .map((f) => ({ version: Number(v.slice(1)), path: join(dir, v, f), name: `${v}/${f}` })),
    )
  // What the current decoder makes of each vector a release reads: computed once, shared by every release.
  const newest = Math.max(...RELEASES.map((r) => r.format))
  const readable = vectors.filter((v) => v.version <= newest)
  let current: Promise<Array<{ code: number | null; sha: string; stderr: string }>> | undefined
  const currentResults = () =>
    (current ??= mapTwoAtATime(readable, (v) => decodeDigest([process.execPath, CLI, 'decode', v.path])))

  it.each(RELEASES.map((r) => ({ format: r.format })))(
    'the released v$format decoder reads every committed vector up to v$format as the current one does (exit code and SHA-256 of the output), and refuses newer ones',
    { timeout: 300_000 },
    async ({ format }) => {
      // The refusal comes from the header's version alone, so one vector of each newer version is enough.
      const newer = [...new Set(vectors.filter((v) => v.version > format).map((v) => v.version))].map(
        (version) => vectors.find((v) => v.version === version)!,
      )
      expect(newer.length).toBeGreaterThan(0)
      const cli = releaseOf(`v${format}-release`).cli
      const now = await currentResults()
      const mine = readable.filter((v) => v.version <= format)
      const [old, refused] = [
        await mapTwoAtATime(mine, (v) => decodeDigest([cli, 'decode', v.path])),
        await mapTwoAtATime(newer, (v) => decodeDigest([cli, 'decode', v.path])),
      ]
      mine.forEach((v, i) => {
        const cur = now[readable.indexOf(v)]!
        expect(old[i]!.code, `${v.name}: ${old[i]!.stderr}`).toBe(cur.code)
        // A stream both refuse may stop at different bytes; the bytes of one both read must be the same.
        if (cur.code === 0) expect(old[i]!.sha, v.name).toBe(cur.sha)
      })
      newer.forEach((v, i) => {
        expect(refused[i]!.code, `${v.name} must be refused by v${format}`).not.toBe(0)
        expect(refused[i]!.stderr, v.name).toContain(`version ${v.version}`)
      })
    },
  )
})
