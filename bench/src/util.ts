/** Shared helpers: paths, child processes measured with GNU time, checksums, Debian tools, formatting. */
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const BENCH_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const ROOT = resolve(BENCH_DIR, '..')
export const CLI = join(ROOT, 'apps/cli/bin/xbzrle.js')
export const CACHE = join(BENCH_DIR, '.cache')

export const MiB = 1 << 20
export const MB = 1e6

export function ensureDir(p: string): string {
  mkdirSync(p, { recursive: true })
  return p
}

export function readJson<T>(path: string): T | undefined {
  if (!existsSync(path)) return undefined
  return JSON.parse(readFileSync(path, 'utf8')) as T
}

export function writeJson(path: string, value: unknown): void {
  ensureDir(dirname(path))
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`)
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

/** Result of one child measured by GNU time: wall, user+sys CPU seconds, peak RSS in KiB. */
export interface Timed {
  wallS: number
  cpuS: number
  userS: number
  sysS: number
  maxRssKiB: number
}

/**
 * Run `sh -c CMD` under `/usr/bin/time -f "%e %U %S %M"` (the time of the whole shell command, i.e. the
 * tool and its own children: no pipes between tools are measured here, every tool reads a file on stdin and
 * writes a file on stdout). Throws on a non-zero exit.
 */
export async function timed(cmd: string): Promise<Timed> {
  const tfile = join(
    ensureDir(join(CACHE, 'tmp')),
    `time-${process.pid}-${Math.random().toString(36).slice(2)}`,
  )
  const { code, stderr } = await run('/usr/bin/time', ['-o', tfile, '-f', '%e %U %S %M', 'sh', '-c', cmd])
  const t = readFileSync(tfile, 'utf8').trim().split('\n').pop() ?? ''
  spawnSync('rm', ['-f', tfile])
  if (code !== 0) throw new Error(`command failed (exit ${code}): ${cmd}\n${stderr.slice(-2000)}`)
  const [e, u, s, m] = t.split(/\s+/).map(Number)
  return { wallS: e!, userS: u!, sysS: s!, cpuS: u! + s!, maxRssKiB: m! }
}

export function run(
  file: string,
  args: string[],
  opts: { cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const c = spawn(file, args, { cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    c.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    c.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
      if (stderr.length > 100_000) stderr = stderr.slice(-50_000)
    })
    c.on('error', rej)
    c.on('close', (code) => res({ code: code ?? 1, stdout, stderr }))
  })
}

export function sh(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', cwd: ROOT })
  if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status}: ${r.stderr}`)
  return r.stdout
}

/** SHA-256 of a file, streamed (never holds the file in memory). */
export function fileHash(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256')
    createReadStream(path, { highWaterMark: 4 * MiB })
      .on('data', (d) => h.update(d))
      .on('error', rej)
      .on('end', () => res(h.digest('hex')))
  })
}

// ---------------------------------------------------------------------------------------------------------
// Debian tools

/** Debian packages the bench needs (binary → package). */
export const TOOLS: Record<string, string> = {
  lzop: 'lzop',
  lz4: 'lz4',
  zstd: 'zstd',
  gzip: 'gzip',
  pv: 'pv',
  '/usr/bin/time': 'time',
  'qemu-system-x86_64': 'qemu-system-x86',
  gcc: 'gcc',
}

function have(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${shq(bin)}`]).status === 0
}

/** Install missing comparison tools with apt-get (root, or sudo). */
export function ensureTools(bins: string[]): void {
  const missing = [...new Set(bins.filter((b) => !have(b)).map((b) => TOOLS[b] ?? b))]
  if (missing.length === 0) return
  log(`installing Debian packages: ${missing.join(' ')}`)
  const sudo = process.getuid?.() === 0 ? '' : 'sudo '
  sh(`${sudo}env DEBIAN_FRONTEND=noninteractive apt-get update -qq`)
  sh(`${sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing.join(' ')} >/dev/null`)
  const still = bins.filter((b) => !have(b))
  if (still.length) throw new Error(`still missing after apt-get: ${still.join(', ')}`)
}

// ---------------------------------------------------------------------------------------------------------
// formatting

export const fmtMB = (bytes: number, digits = 1): string => (bytes / MB).toFixed(digits)
export const pct = (x: number, digits = 1): string => `${(x * 100).toFixed(digits)}%`
export const fix = (x: number | undefined, d = 2): string =>
  x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d)

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return Number.NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Markdown table with right-aligned numeric columns (align: 'l' | 'r' per column). */
export function mdTable(head: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const al = align ?? head.map((_, i) => (i === 0 ? 'l' : 'r'))
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`
  return [line(head), line(al.map((a) => (a === 'r' ? '---:' : '---'))), ...rows.map(line)].join('\n')
}
