/** Guest RAM comparison: pmemsave both sides, compare the files byte for byte. */
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import type { QemuProcess } from './qemu-process.js'
import { removeTmpDir, tmpDir } from './tmp.js'

const MiB = 1024 * 1024

/**
 * Stop both VMs (if running), pmemsave guest-physical [0, memMiB MiB) of each (default: the whole RAM,
 * ResolvedGuestOptions.ramBytes) and compare byte for byte.
 * Returns the offset of the first differing byte, or null when identical. Both VMs are left stopped.
 * Run it on a destination that is still paused after the incoming migration (startGuest's default for
 * incoming guests uses -S), before `cont`.
 */
export async function compareGuestRam(
  a: QemuProcess,
  b: QemuProcess,
  memMiB?: number,
): Promise<number | null> {
  const size = memMiB !== undefined ? memMiB * MiB : Math.min(a.options.ramBytes, b.options.ramBytes)
  await Promise.all([a.ensureStopped(), b.ensureStopped()])
  const dir = tmpDir('xbzrle-ram-')
  try {
    const fa = join(dir, 'a.ram')
    const fb = join(dir, 'b.ram')
    await Promise.all([a.pmemsave(0, size, fa), b.pmemsave(0, size, fb)])
    return await firstDifference(fa, fb)
  } finally {
    removeTmpDir(dir)
  }
}

/** Offset of the first byte where two files differ (a length difference counts), or null. */
export async function firstDifference(fileA: string, fileB: string): Promise<number | null> {
  const [ha, hb] = await Promise.all([open(fileA, 'r'), open(fileB, 'r')])
  try {
    const chunk = 4 * MiB
    const ba = Buffer.alloc(chunk)
    const bb = Buffer.alloc(chunk)
    let pos = 0
    for (;;) {
      const [ra, rb] = await Promise.all([ha.read(ba, 0, chunk, pos), hb.read(bb, 0, chunk, pos)])
      const n = Math.min(ra.bytesRead, rb.bytesRead)
      if (ba.compare(bb, 0, n, 0, n) !== 0) {
        for (let i = 0; i < n; i++) if (ba[i] !== bb[i]) return pos + i
      }
      if (ra.bytesRead !== rb.bytesRead) return pos + n
      if (n === 0) return null
      pos += n
    }
  } finally {
    await Promise.all([ha.close(), hb.close()])
  }
}
