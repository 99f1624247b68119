/**
 * The helper's settings as the helper itself needs them, without the schema: libvirt starts the helper once per
 * save and restore, and most hosts have no helper.conf, so the zod schema (config.ts) is loaded only when there
 * is a file to check.
 */
import { statSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import type { Compression } from '@xbzrle/protocol/stream'
import { defaultThreads } from '../io.js'
import type { HelperConfig } from './config.js'

export const DEFAULT_HELPER_CONF = '/etc/xbzrle/helper.conf'

export class HelperConfigError extends Error {
  override readonly name = 'HelperConfigError'
}

/** loadHelperConfig (config.ts, same rules and messages), loading the schema only when a file is there. */
export async function readHelperConfig(
  path?: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ config: HelperConfig; file?: string }> {
  const explicit = path ?? env.XBZRLE_HELPER_CONF
  // Only a missing default file means defaults; any other problem with it is loadHelperConfig's to report.
  if (explicit === undefined && !existsOrUnknown(DEFAULT_HELPER_CONF)) return { config: {} }
  const { loadHelperConfig } = await import('./config.js')
  return loadHelperConfig(path, env)
}

/**
 * What the helper does when helper.conf sets no cache_size. libvirt runs its compressor for `virsh save`,
 * `managedsave` and `dump`, and pauses the guest first, so QEMU sends every page exactly once: XBZRLE never finds a
 * page to send as a delta. The helper then copies the stream into verbatim frames without parsing its pages
 * (`pages: false`: no page or cache work on either end, the second stage compresses every batch as before; the
 * 135 MB save stream of a 160 MiB guest through pipes, as libvirt runs the helper: 1.2-1.3 s -> 1.03-1.09 s, same
 * size), and the header names the smallest cache, 1 MiB. `virsh dump --live` and live memory snapshots
 * (`virsh snapshot-create-as --live`) keep the guest running and re-send pages: set cache_size for those, and the
 * pages are parsed, cached and sent as deltas (without it they are still compressed, only not delta-encoded).
 */
export const HELPER_CACHE_BYTES = 1 << 20

/**
 * Compression worker threads of the helper when helper.conf sets none. Pages copied unparsed (a save or dump of
 * a paused guest): one worker on two cores or more, else `xbzrle -c`'s default (io.ts defaultThreads). A paused
 * guest leaves its vCPU's core free, and with no page work zstd is most of the encoder's time: the 135 MB save
 * stream through pipes took 0.90-0.94 s with one worker against 1.00-1.27 s without (same bytes). With pages
 * parsed (a live snapshot), the guest runs and needs that core: defaultThreads.
 */
export function helperThreads(pages: boolean, cores = availableParallelism()): number {
  const base = defaultThreads(cores)
  return pages || cores < 2 ? base : Math.max(1, base)
}

/** EncodeStream options from the settings. */
export function encoderOptionsOf(c: HelperConfig): {
  cacheBytes?: number
  ways?: number
  mode?: 'canonical' | 'compact'
  formatVersion?: number
  compression?: Compression
  pages: boolean
  threads: number
} {
  const pages = c.cache_size !== undefined
  return {
    pages,
    threads: c.threads ?? helperThreads(pages),
    cacheBytes: c.cache_size ?? HELPER_CACHE_BYTES,
    ways: c.ways,
    mode: c.mode,
    formatVersion: c.format_version,
    compression: c.compression ? { codec: c.compression } : undefined,
  }
}

/** False only when stat says ENOENT; true when something is there, or when stat fails otherwise. */
function existsOrUnknown(path: string): boolean {
  try {
    statSync(path)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}
