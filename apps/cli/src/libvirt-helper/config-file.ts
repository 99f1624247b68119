/**
 * The helper's settings as the helper itself needs them, without the schema: libvirt starts the helper once per
 * save and restore, and most hosts have no helper.conf, so the zod schema (config.ts) is loaded only when there
 * is a file to check.
 */
import { statSync } from 'node:fs'
import type { Compression } from '@xbzrle/protocol/stream'
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
 * The helper's cache when helper.conf sets none: 1 MiB, not the guest's RAM as for `xbzrle encode`. libvirt runs
 * its compressor for `virsh save`, `managedsave` and `dump`, and pauses the guest first, so QEMU sends every page
 * exactly once: no page is ever looked up again, and a cache the size of the guest only costs its first-touch
 * page faults on both ends (64 MiB test guest, 4 alternating rounds against a 64 MiB cache: `virsh save` 2.23 ->
 * 2.16 s, restore 0.95 -> 0.92 s, medians; same image size). A live memory snapshot
 * (`virsh snapshot-create-as --live`) re-sends pages: set cache_size for those.
 */
export const HELPER_CACHE_BYTES = 1 << 20

/** EncodeStream options from the settings. */
export function encoderOptionsOf(c: HelperConfig): {
  cacheBytes?: number
  ways?: number
  mode?: 'canonical' | 'compact'
  formatVersion?: number
  compression?: Compression
} {
  return {
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
