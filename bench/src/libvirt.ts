/**
 * The `libvirt` stage: libvirt itself runs the compressor on `virsh save` / `virsh restore`
 * (save_image_format = "lzop"), with the real lzop, the real lzop started 0.3 s late (a control: how much of a
 * helper's start-up the save time shows) and the xbzrle helper, in a private libvirtd, for two guest sizes.
 * The measuring is apps/cli/src/libvirt-helper/measure.sh (root, real libvirtd and QEMU); this stage runs it and
 * keeps its rows.
 */
import { join } from 'node:path'
import { log, ROOT, run } from './util.js'

/** The helpers measure.sh runs: the real lzop, the real lzop started 0.3 s late (a control), ours. */
export const LIBVIRT_HELPERS = ['lzop', 'lzop-late', 'xbzrle'] as const
export type LibvirtHelper = (typeof LIBVIRT_HELPERS)[number]

export interface LibvirtRow {
  helper: LibvirtHelper
  /** Guest RAM; absent in results from before it varied: 64. */
  memMiB?: number
  round: number
  imageBytes: number
  saveMs: number
  restoreMs: number
}

/**
 * The guests of the stage: the test guest of issue #16, and one whose image is large enough for throughput to show.
 * 9 rounds: a save's time includes libvirt stopping QEMU after it, which varies by a few tenths of a second from
 * save to save, more than the helpers differ by.
 */
export const LIBVIRT_GUESTS = [
  { memMiB: 64, rounds: 9 },
  { memMiB: 512, rounds: 9 },
]

/** Parses measure.sh's tab-separated output (a header line, then one row per helper and round). */
export function parseMeasureOutput(text: string, memMiB = 64): LibvirtRow[] {
  const rows: LibvirtRow[] = []
  for (const line of text.split('\n')) {
    const f = line.trim().split('\t')
    const helper = f[0] as LibvirtHelper
    if (f.length !== 5 || !LIBVIRT_HELPERS.includes(helper)) continue
    const [round, imageBytes, saveMs, restoreMs] = f.slice(1).map(Number) as [number, number, number, number]
    if (![round, imageBytes, saveMs, restoreMs].every(Number.isFinite)) continue
    rows.push({ helper, memMiB, round, imageBytes, saveMs, restoreMs })
  }
  return rows
}

export async function runLibvirt(o: { rounds?: number }): Promise<LibvirtRow[]> {
  if (process.getuid?.() !== 0)
    throw new Error('the libvirt stage needs root (a private libvirtd in a namespace)')
  const rows: LibvirtRow[] = []
  for (const g of LIBVIRT_GUESTS) {
    const rounds = o.rounds ?? g.rounds
    log(
      `libvirt: ${g.memMiB} MiB guest, virsh save/restore through ${LIBVIRT_HELPERS.join(', ')}, ${rounds} rounds`,
    )
    const r = await run(
      'bash',
      [
        join(ROOT, 'apps/cli/src/libvirt-helper/measure.sh'),
        String(rounds),
        String(g.memMiB),
        LIBVIRT_HELPERS.join(' '),
      ],
      { cwd: ROOT },
    )
    if (r.code !== 0) throw new Error(`measure.sh failed (exit ${r.code}): ${r.stderr.slice(-2000)}`)
    const got = parseMeasureOutput(r.stdout, g.memMiB)
    if (got.length !== LIBVIRT_HELPERS.length * rounds)
      throw new Error(`measure.sh gave ${got.length} rows, expected ${LIBVIRT_HELPERS.length * rounds}`)
    rows.push(...got)
  }
  return rows
}
