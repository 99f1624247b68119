/**
 * The facts of the machine a benchmark ran on (CPU model, cores, memory, kernel, Node, tool versions, commit).
 * Every statement about the machine in BENCHMARKS.md comes from here, never from a literal.
 */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { ROOT, shq } from './util.js'

export interface MachineInfo {
  date: string
  cpu: string
  cores: number
  memGiB: number
  kernel: string
  node: string
  versions: Record<string, string>
  commit: string
}

function firstLine(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' })
  return (
    `${r.stdout}${r.stderr}`
      .split('\n')
      .find((l) => l.trim())
      ?.trim() ?? 'n/a'
  )
}

export function machineInfo(): MachineInfo {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'apps/cli/package.json'), 'utf8')) as { version: string }
  return {
    date: new Date().toISOString().slice(0, 10),
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: cpus().length,
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: firstLine('uname -sr'),
    node: process.version,
    versions: {
      xbzrle: pkg.version,
      qemu: firstLine('qemu-system-x86_64 --version').replace(/^QEMU emulator version /, ''),
      lzop: firstLine('lzop --version | head -1').replace(/^lzop /, ''),
      lz4: firstLine('lz4 --version')
        .replace(/^\*+ LZ4 command line interface 64-bits /, '')
        .replace(/,.*/, ''),
      zstd: firstLine('zstd --version')
        .replace(/^\*+ Zstandard CLI \(64-bit\) /, '')
        .replace(/,.*/, ''),
      gzip: firstLine('gzip --version').replace(/^gzip /, ''),
      pv: firstLine('pv --version').replace(/^pv /, '').replace(/ - .*/, ''),
    },
    commit:
      firstLine(`git -C ${shq(ROOT)} rev-parse --short HEAD`) +
      (spawnSync('sh', ['-c', `git -C ${shq(ROOT)} status --porcelain -- packages apps | head -1`], {
        encoding: 'utf8',
      }).stdout.trim()
        ? ' + uncommitted changes in packages/apps'
        : ''),
  }
}

/** The QEMU version without the distribution suffix: "7.2.15" of "7.2.15 (Debian 1:7.2+dfsg-7+deb12u16)". */
export const shortVersion = (v: string | undefined): string => v?.split(' ')[0] || 'n/a'
