// Test-only helpers: run the built CLI as a child process, the way users and QEMU's exec: run it.
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const CLI = fileURLToPath(new URL('../bin/xbzrle.js', import.meta.url))
/** Shell form for QEMU exec: commands. */
export const CLI_SH = `${process.execPath} ${CLI}`

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
