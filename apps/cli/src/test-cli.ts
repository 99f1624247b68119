// Test-only helpers: run the built CLI as a child process, the way users and QEMU's exec: run it.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { decompress } from 'fzstd'

/** A real QEMU 7.2 capture from adapter-libvirt's fixtures (zstd-compressed in the repository), e.g. `pc-idle.mig`. */
export function fixture(name: string): Buffer {
  const p = fileURLToPath(
    new URL(`../../../packages/adapter-libvirt/fixtures/qemu-7.2/${name}.zst`, import.meta.url),
  )
  return Buffer.from(decompress(readFileSync(p)))
}

export const CLI = fileURLToPath(new URL('../bin/xbzrle.js', import.meta.url))
/** Shell form for QEMU exec: commands. */
export const CLI_SH = `${process.execPath} ${CLI}`
/**
 * The CLI with the libvirt helper's wiring, run from source (libvirt-helper/test-bin.ts through tsx): the command
 * the libvirt tests install as the helper's wrapper target.
 */
export const LIBVIRT_HELPER_CLI = [
  process.execPath,
  '--conditions=@xbzrle/source',
  '--import',
  fileURLToPath(import.meta.resolve('tsx')),
  fileURLToPath(new URL('./libvirt-helper/test-bin.ts', import.meta.url)),
]

export interface RunResult {
  code: number | null
  stdout: Buffer
  stderr: string
}

export function runCli(args: string[], input?: Uint8Array, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b) => out.push(b))
    child.stderr.on('data', (b) => err.push(b))
    child.on('error', reject)
    child.stdin.on('error', () => {}) // the CLI may exit before reading everything (bad input)
    child.on('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    )
    if (input) child.stdin.end(input)
    else child.stdin.end()
  })
}

/** Starts `xbzrle receive` and resolves once it listens; the child is added to `children` (kill them after). */
export function startCliReceiver(
  args: string[],
  extraEnv: NodeJS.ProcessEnv,
  children: ChildProcess[],
): Promise<{ child: ChildProcess; stderr: () => string; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'receive', ...args], { env: { ...process.env, ...extraEnv } })
  children.push(child)
  let err = ''
  child.stderr.on('data', (b) => (err += b))
  const exit = new Promise<number | null>((r) => child.on('close', r))
  return new Promise((resolve, reject) => {
    const t = setInterval(() => {
      if (/listening on/.test(err)) {
        clearInterval(t)
        resolve({ child, stderr: () => err, exit })
      }
    }, 20)
    child.on('close', (code) => {
      clearInterval(t)
      reject(new Error(`receiver exited ${code}: ${err}`))
    })
  })
}

/** Re-exported so older call sites keep working; new tests import it from @xbzrle/testkit. */
export { freePort } from '@xbzrle/testkit'

/** The public packages, as npm publishes them. */
export const PUBLIC_PACKAGES = [
  'packages/protocol',
  'packages/codec',
  'packages/adapter-libvirt',
  'packages/adapter-ws',
  'apps/cli',
]

/** Runs `cmd ARGS…` in `cwd` and returns its stdout; throws (with its stderr) when it fails. */
export function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): string {
  return execFileSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
}

/**
 * What a user gets from the registry: the public packages of the checkout at `root`, npm-packed into
 * `scratch`/tarballs and installed into a new ESM project `scratch`/app named `name`. Returns both. Asynchronous,
 * so that two of them (compat.test.ts's releases) overlap their npm work. With `nativeFrom` (a checkout whose
 * node_modules has zstd-napi built), the install runs without install scripts and takes that build when the
 * version is the same: compiling zstd-napi from source costs most of a minute per install, and what the
 * compatibility matrix tests is the wire format (consumability.test.ts installs as users do).
 */
export async function installPacked(
  root: string,
  scratch: string,
  name: string,
  nativeFrom?: string,
): Promise<{ app: string; tarballs: string[] }> {
  const dir = join(scratch, 'tarballs')
  mkdirSync(dir, { recursive: true })
  const app = join(scratch, 'app')
  mkdirSync(app, { recursive: true })
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }))
  const run = promisify(execFile)
  for (const p of PUBLIC_PACKAGES)
    await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: join(root, p) })
  const tarballs = readdirSync(dir).map((f) => join(dir, f))
  const flags = nativeFrom ? [...INSTALL_FLAGS, '--ignore-scripts'] : INSTALL_FLAGS
  await run('npm', ['install', ...flags, ...tarballs], { cwd: app, maxBuffer: 64 << 20 })
  if (nativeFrom) {
    const version = (d: string) => {
      try {
        return JSON.parse(readFileSync(join(d, 'package.json'), 'utf8')).version as string
      } catch {
        return undefined
      }
    }
    const ours = join(nativeFrom, 'node_modules', 'zstd-napi')
    const theirs = join(app, 'node_modules', 'zstd-napi')
    const wanted = version(theirs)
    if (wanted === undefined) return { app, tarballs }
    if (wanted === version(ours) && existsSync(join(ours, 'build')))
      cpSync(join(ours, 'build'), join(theirs, 'build'), { recursive: true })
    else await run('npm', ['rebuild', 'zstd-napi', '--loglevel=error'], { cwd: app, maxBuffer: 64 << 20 })
  }
  return { app, tarballs }
}

const INSTALL_FLAGS = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error']
