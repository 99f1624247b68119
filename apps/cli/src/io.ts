import { createReadStream, createWriteStream, fstatSync, type Stats, statSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import type { Readable, Writable } from 'node:stream'
import { IO_CHUNK } from '@xbzrle/adapter-libvirt/filter'
import { CliError, ExitCode } from './errors.js'

/** FILE or stdin ("-" or absent). Large reads: most of a filter's speed is its I/O size. */
export function openInput(path: string | undefined): Readable {
  if (path === undefined || path === '-') {
    // A file on stdin is read 1 MiB at a time (process.stdin would read 64 KiB: ~40% more CPU). A pipe gives at
    // most its capacity per read anyway, and process.stdin (a socket) reads it without a 1 MiB buffer per read.
    if (fstatSync(0).isFile())
      return createReadStream('', { fd: 0, highWaterMark: IO_CHUNK, autoClose: false })
    return process.stdin
  }
  return createReadStream(path, { highWaterMark: IO_CHUNK })
}

/**
 * Whether fd 1 is a pipe (QEMU's stdin at a migration's destination, libvirt's pipe to its iohelper), or with
 * `orSocket` a socket too (node's child_process gives a child a socket for 'pipe').
 */
export function stdoutIsPipe(orSocket = false): boolean {
  try {
    const st = fstatSync(1)
    return st.isFIFO() || (orSocket && st.isSocket())
  } catch {
    return false
  }
}

/**
 * Refuses to write to stdout when stdout is a regular file that is also the input (`xbzrle decode X >> X`, or
 * `xbzrle -dc < X >> X`): the command would read its own output. With `>` the shell has already emptied it.
 */
export function assertStdoutNotInput(input: string | undefined): void {
  let out: Stats
  try {
    out = fstatSync(1)
  } catch {
    return
  }
  if (!out.isFile()) return
  let inp: Stats | undefined
  try {
    inp = input === undefined || input === '-' ? fstatSync(0) : statSync(input)
  } catch {
    return // a missing input fails later with its own message
  }
  if (inp.isFile() && inp.dev === out.dev && inp.ino === out.ino) {
    const what = input === undefined || input === '-' ? 'stdin' : `the input ${input}`
    throw new CliError(`stdout is the same file as ${what}: refusing to overwrite the input`, ExitCode.USAGE)
  }
}

/**
 * FILE or stdout, written in place. Commands that write a named file use createAtomicOutput (atomic-output.ts)
 * instead, so that a failure never leaves a partial file under the final name.
 */
export function openOutput(path: string | undefined): Writable {
  if (path === undefined || path === '-') return process.stdout
  return createWriteStream(path, { highWaterMark: IO_CHUNK })
}

/** Parses sizes like 512M, 1GiB, 4096, 64k (binary units). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(text.trim())
  if (!m) throw new Error(`not a size: ${JSON.stringify(text)} (examples: 4096, 64K, 512M, 2G)`)
  const unit = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k']
  const v = Math.round(Number(m[1]) * unit)
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`size out of range: ${text}`)
  return v
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`
}

/**
 * `--compress` when not given: a live migration (stdout a pipe or socket) gets `auto`, which never lets the second
 * stage slow the link down; a file (-o, or stdout redirected to one) keeps the strongest installed codec, since a
 * saved image is written once and read later.
 */
export function defaultCompression(output: string | undefined): 'auto' | undefined {
  if (output !== undefined && output !== '-') return undefined
  try {
    return fstatSync(1).isFile() ? undefined : 'auto'
  } catch {
    return 'auto'
  }
}

/**
 * The bypass mode as EncoderOptions.bypass: the `--bypass` flag, else the environment (`XBZRLE_BYPASS=auto|always|
 * never`), which is how the forms without options (`xbzrle -c`, as QEMU's exec: runs it) take it. Anything else
 * is a usage error rather than a silent default.
 */
export function bypassMode(value = process.env.XBZRLE_BYPASS): { force: 'always' } | false | undefined {
  if (value === undefined || value === '' || value === 'auto') return undefined
  if (value === 'always') return { force: 'always' }
  if (value === 'never') return false
  throw new CliError(
    `XBZRLE_BYPASS must be auto, always or never (got ${JSON.stringify(value)})`,
    ExitCode.USAGE,
  )
}

/**
 * Compression worker threads by default: none on machines with fewer than 4 cores, else the cores minus one (the
 * encoder's own), at most 4. Below 4 cores QEMU needs the other core during a migration, and there a worker's
 * start-up and cross-core copies cost about what it takes off the main thread.
 *
 * `fileToFile`: a regular file in and out (a conversion; no QEMU and no link in the pipeline): one worker on 2
 * and 3 cores too. On our 2-core test machine (median of 4, the bench corpus), `xbzrle -c < FILE > FILE` took
 * 0.95 → 0.81 s on `idle` and 1.45 → 1.36 s on `sparse`.
 */
export function defaultThreads(cores = availableParallelism(), fileToFile = false): number {
  if (cores < 4) return fileToFile && cores >= 2 ? 1 : 0
  return Math.min(4, cores - 1)
}
