/**
 * Shell plumbing for QEMU's `exec:` migration URIs: quoting, named pipes, and commands wrapped so that their exit
 * status and stderr can be read back (QEMU 7.2 runs `exec:` commands through /bin/sh -c and never checks them).
 */
import { spawnSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { waitFor } from './wait.js'

/** Quote a string for /bin/sh. */
export const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

/** Create a named pipe (mkfifo(1)). */
export function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', ['-m', '600', path])
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed: ${r.stderr?.toString() ?? r.error?.message}`)
}

export interface FilterResult {
  /** Exit status of the wrapped command ({ cmd ; } — for a pipeline, its last command). */
  exitCode: number
  stderr: string
}

/**
 * `{ CMD ; } REDIRECT 2>DIR/LABEL.err; echo $? >DIR/LABEL.status`: the command's exit status and stderr land in
 * files of `dir`, read back by wrappedResult(dir, label).
 */
export function wrapCommand(cmd: string, redirect: string, dir: string, label: string): string {
  const err = join(dir, `${label}.err`)
  const status = join(dir, `${label}.status`)
  return `{ ${cmd} ; } ${redirect} 2>${shellQuote(err)}; echo $? >${shellQuote(status)}`
}

/** stderr of a wrapped command so far ('' before it wrote any). */
export async function wrappedStderr(dir: string, label: string): Promise<string> {
  return readFile(join(dir, `${label}.err`), 'utf8').catch(() => '')
}

/**
 * Wait until the wrapped command `label` has exited (QEMU reports a migration completed before its exec: child
 * has finished) and return its exit status and stderr.
 */
export async function wrappedResult(dir: string, label: string, timeoutMs = 30_000): Promise<FilterResult> {
  const statusFile = join(dir, `${label}.status`)
  const status = await waitFor(
    async () => {
      const text = await readFile(statusFile, 'utf8').catch(() => '')
      return text.endsWith('\n') ? text : ''
    },
    statusFile,
    { timeoutMs, intervalMs: 25 },
  )
  return { exitCode: Number(status.trim()), stderr: await wrappedStderr(dir, label) }
}
