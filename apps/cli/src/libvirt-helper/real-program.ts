/**
 * Finding the real lzop / zstd the helper stands in for: never the helper itself (compared by realpath and by
 * device + inode), never a file in the helper's own directory, never another copy of the wrapper (marker line).
 */
import { accessSync, closeSync, constants, openSync, readSync, realpathSync, statSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'

/** Every wrapper we write carries this line; a file that has it is never taken for the real program. */
export const WRAPPER_MARKER = 'xbzrle-libvirt-helper'

export const HELPER_PROGRAMS = ['lzop', 'zstd'] as const
export type HelperProgram = (typeof HELPER_PROGRAMS)[number]

/** Where dpkg-divert puts the real program (`--divert`). */
export function divertedPath(binDir: string, name: string): string {
  return join(binDir, `${name}.distrib`)
}

function realpathOr(p: string): string | undefined {
  try {
    return realpathSync(p)
  } catch {
    return undefined
  }
}

function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false
    accessSync(p, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** True iff the file's first 4 KiB carry the wrapper marker (an xbzrle helper wrapper, not a real program). */
export function isHelperWrapper(p: string): boolean {
  let fd: number | undefined
  try {
    fd = openSync(p, 'r')
    const b = Buffer.alloc(4096)
    const n = readSync(fd, b, 0, b.length, 0)
    return b.subarray(0, n).toString('latin1').includes(WRAPPER_MARKER)
  } catch {
    return false
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

export interface FindRealOptions {
  /** Path of the wrapper that started us (its directory is skipped, it never counts as real). */
  wrapper?: string
  /** Other files that are "us" (e.g. the xbzrle script). */
  self?: string[]
  /** PATH to search (default process.env.PATH). */
  path?: string
  /** An explicit choice (config real_lzop / real_zstd): used if it is a real program, else an error. */
  explicit?: string
  /** Extra places to try first, before PATH (default: NAME.distrib next to the wrapper, /usr/bin, /bin). */
  diverted?: string[]
}

export interface RealProgram {
  path: string
  /** How it was found. */
  via: 'explicit' | 'diverted' | 'PATH'
}

/** Resolves the real program, or undefined with `why` filled in. */
export function findRealProgram(
  name: string,
  o: FindRealOptions = {},
): { found?: RealProgram; why: string; rejected: string[] } {
  const rejected: string[] = []
  const ours = new Set<string>()
  const ourInodes = new Set<string>()
  const ourDirs = new Set<string>()
  for (const p of [o.wrapper, ...(o.self ?? [])]) {
    if (!p) continue
    const rp = realpathOr(p)
    if (!rp) continue
    ours.add(rp)
    try {
      const st = statSync(rp)
      ourInodes.add(`${st.dev}:${st.ino}`)
    } catch {
      // ignore
    }
  }
  if (o.wrapper) {
    const d = realpathOr(dirname(o.wrapper))
    if (d) ourDirs.add(d)
  }
  const acceptable = (p: string): boolean => {
    if (!isExecutableFile(p)) return false
    const rp = realpathOr(p)
    if (!rp) return false
    const st = statSync(rp)
    if (ours.has(rp) || ourInodes.has(`${st.dev}:${st.ino}`)) {
      rejected.push(`${p} (that is the helper itself)`)
      return false
    }
    if (isHelperWrapper(rp)) {
      rejected.push(`${p} (another xbzrle helper wrapper)`)
      return false
    }
    return true
  }
  if (o.explicit) {
    if (acceptable(o.explicit)) return { found: { path: o.explicit, via: 'explicit' }, why: '', rejected }
    return {
      why: `the configured real ${name} ${o.explicit} is missing, not executable or the helper itself`,
      rejected,
    }
  }
  const diverted =
    o.diverted ??
    [
      ...new Set([
        o.wrapper ? divertedPath(dirname(o.wrapper), name) : '',
        `/usr/bin/${name}.distrib`,
        `/bin/${name}.distrib`,
      ]),
    ].filter(Boolean)
  for (const p of diverted)
    if (acceptable(p)) return { found: { path: p, via: 'diverted' }, why: '', rejected }
  const dirs = (o.path ?? process.env.PATH ?? '').split(delimiter).filter((d) => d.startsWith('/'))
  for (const d of dirs) {
    const rd = realpathOr(d)
    if (rd && ourDirs.has(rd)) continue
    const p = join(d, name)
    if (acceptable(p)) return { found: { path: p, via: 'PATH' }, why: '', rejected }
  }
  return {
    why: `no real ${name} found (looked for ${diverted.join(', ')} and on PATH outside the helper's directory)`,
    rejected,
  }
}

/** Which file a PATH lookup of `name` runs (like `command -v`), or undefined. */
export function whichOnPath(name: string, path: string): string | undefined {
  for (const d of path.split(delimiter)) {
    if (!d.startsWith('/')) continue
    const p = join(d, name)
    if (isExecutableFile(p)) return p
  }
  return undefined
}
