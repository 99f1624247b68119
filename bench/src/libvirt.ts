/**
 * The `libvirt` stage: libvirt itself runs the compressor on `virsh save` / `virsh restore`
 * (save_image_format = "lzop"), once with the real lzop and once with the xbzrle helper, in a private libvirtd.
 * The measuring is apps/cli/src/libvirt-helper/measure.sh (root, real libvirtd and QEMU); this stage runs it and
 * keeps its rows.
 */
import { join } from 'node:path'
import { log, ROOT, run } from './util.js'

export interface LibvirtRow {
  helper: 'lzop' | 'xbzrle'
  round: number
  imageBytes: number
  saveMs: number
  restoreMs: number
}

/** Parses measure.sh's tab-separated output (a header line, then one row per helper and round). */
export function parseMeasureOutput(text: string): LibvirtRow[] {
  const rows: LibvirtRow[] = []
  for (const line of text.split('\n')) {
    const f = line.trim().split('\t')
    if (f.length !== 5 || (f[0] !== 'lzop' && f[0] !== 'xbzrle')) continue
    const [round, imageBytes, saveMs, restoreMs] = f.slice(1).map(Number) as [number, number, number, number]
    if (![round, imageBytes, saveMs, restoreMs].every(Number.isFinite)) continue
    rows.push({ helper: f[0], round, imageBytes, saveMs, restoreMs })
  }
  return rows
}

export async function runLibvirt(o: { rounds: number }): Promise<LibvirtRow[]> {
  if (process.getuid?.() !== 0)
    throw new Error('the libvirt stage needs root (a private libvirtd in a namespace)')
  log(`libvirt: virsh save/restore through lzop and the xbzrle helper, ${o.rounds} rounds`)
  const r = await run('bash', [join(ROOT, 'apps/cli/src/libvirt-helper/measure.sh'), String(o.rounds)], {
    cwd: ROOT,
  })
  if (r.code !== 0) throw new Error(`measure.sh failed (exit ${r.code}): ${r.stderr.slice(-2000)}`)
  const rows = parseMeasureOutput(r.stdout)
  if (rows.length !== 2 * o.rounds)
    throw new Error(`measure.sh gave ${rows.length} rows, expected ${2 * o.rounds}`)
  return rows
}
