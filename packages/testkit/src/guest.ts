import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { guestSourceDir, packageDir } from './paths.js'

const execFileP = promisify(execFile)

/** Sources of the test guest, in link order (the linker script is passed with -T). */
export const GUEST_SOURCES = ['boot.S', 'guest.c'] as const
const LINKER_SCRIPT = 'linker.ld'

/** gcc flags used to build the guest (part of the cache key). */
export const GUEST_CFLAGS: readonly string[] = [
  '-m32',
  '-march=i686',
  '-O2',
  '-ffreestanding',
  '-fno-builtin',
  '-nostdlib',
  '-fno-pic',
  '-no-pie',
  '-static',
  '-fno-stack-protector',
  '-fno-asynchronous-unwind-tables',
  '-mno-sse',
  '-mno-mmx',
  '-Wall',
  '-Wextra',
  '-Werror',
  '-Wl,--build-id=none',
  '-Wl,--no-warn-rwx-segments',
]

/** Workloads understood by the guest (see README.md). */
export type GuestWorkload = 'sparse' | 'sweep' | 'hotset' | 'text' | 'idle'

/** Guest command line, turned into `-append` by `guestCommandLine()`. */
export interface GuestConfig {
  workload?: GuestWorkload
  /** Size of the dirtied region in MiB; it starts at 4 MiB physical, so keep it <= guest RAM - 5. Default 32. */
  mem?: number
  /** PRNG seed for the initial fill and the workload. Default 1. */
  seed?: number
  /** Operations per second, paced by the PIT at 100 Hz; 'max' = unpaced. Default 2000. */
  rate?: number | 'max'
  /** Milliseconds per pass when paced (10..4000). Default 500. */
  period?: number
  /** Operations per pass when rate = 'max'. Default 65536. */
  ops?: number
  /** Hot set size in pages (workload=hotset). Default 256. */
  hot?: number
  /** Print "memsum" (checksum of the whole region) after every pass. Costs guest time. */
  verify?: boolean
}

/** Build the `-append` string for a guest configuration. */
export function guestCommandLine(config: GuestConfig = {}): string {
  const parts: string[] = []
  if (config.workload !== undefined) parts.push(`workload=${config.workload}`)
  if (config.mem !== undefined) parts.push(`mem=${Math.trunc(config.mem)}`)
  if (config.seed !== undefined) parts.push(`seed=${Math.trunc(config.seed)}`)
  if (config.rate !== undefined) parts.push(`rate=${config.rate === 'max' ? 'max' : Math.trunc(config.rate)}`)
  if (config.period !== undefined) parts.push(`period=${Math.trunc(config.period)}`)
  if (config.ops !== undefined) parts.push(`ops=${Math.trunc(config.ops)}`)
  if (config.hot !== undefined) parts.push(`hot=${Math.trunc(config.hot)}`)
  if (config.verify) parts.push('verify=1')
  return parts.join(' ')
}

/** Directory where built guests are cached (override with XBZRLE_TESTKIT_CACHE). */
export function guestCacheDir(): string {
  return process.env.XBZRLE_TESTKIT_CACHE ?? join(packageDir, 'node_modules', '.cache', 'xbzrle-testkit')
}

let gccVersion: Promise<string> | undefined
let building: Promise<string> | undefined

async function cacheKey(): Promise<string> {
  gccVersion ??= execFileP('gcc', ['--version']).then(
    (r) => r.stdout.split('\n')[0] ?? '',
    (e: unknown) => {
      throw new Error(`@xbzrle/testkit: gcc is needed to build the test guest: ${String(e)}`)
    },
  )
  const hash = createHash('sha256')
  hash.update(await gccVersion)
  hash.update(GUEST_CFLAGS.join(' '))
  for (const name of [...GUEST_SOURCES, LINKER_SCRIPT]) {
    hash.update(`\0${name}\0`)
    hash.update(await readFile(join(guestSourceDir, name)))
  }
  return hash.digest('hex').slice(0, 16)
}

async function build(): Promise<string> {
  const key = await cacheKey()
  const dir = guestCacheDir()
  const target = join(dir, `guest-${key}.elf`)
  if (existsSync(target)) return target
  await mkdir(dir, { recursive: true })
  // Build into a private directory, then rename: concurrent builders (parallel test files) never see a
  // half-written ELF, and the last rename wins with identical content.
  const work = await mkdtemp(join(dir, 'build-'))
  try {
    const out = join(work, 'guest.elf')
    const args = [
      ...GUEST_CFLAGS,
      `-Wl,-T,${join(guestSourceDir, LINKER_SCRIPT)}`,
      '-o',
      out,
      ...GUEST_SOURCES.map((s) => join(guestSourceDir, s)),
    ]
    try {
      await execFileP('gcc', args, { cwd: work })
    } catch (e) {
      const err = e as { stderr?: string; message?: string }
      throw new Error(`@xbzrle/testkit: building the test guest failed:\n${err.stderr ?? err.message}`)
    }
    await rename(out, target)
  } finally {
    await rm(work, { recursive: true, force: true })
  }
  return target
}

/**
 * Compile the multiboot test guest with the system gcc (once per source hash) and return the ELF path.
 * Safe to call concurrently from several processes.
 */
export function buildTestGuest(): Promise<string> {
  building ??= build().catch((e: unknown) => {
    building = undefined
    throw e
  })
  return building
}
