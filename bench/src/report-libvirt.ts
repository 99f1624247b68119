/** BENCHMARKS.md section of the `libvirt` stage (issue #16's goal: smaller images than lzop, save time ≤ lzop's). */
import type { LibvirtHelper, LibvirtRow } from './libvirt.js'
import type { MachineInfo } from './machine.js'
import { fix, fmtMB, mdTable, median } from './util.js'
import type { Verdict } from './verdicts.js'

export interface LibvirtResults {
  machine: MachineInfo
  /** Rounds asked for (0: each guest's default; the rows tell). */
  rounds: number
  rows: LibvirtRow[]
  stageS?: number
}

interface HelperSummary {
  imageBytes: number
  saveMs: number
  restoreMs: number
  n: number
}

const memOf = (r: LibvirtRow): number => r.memMiB ?? 64

/** The guest sizes measured, smallest first. */
function guestSizes(rows: LibvirtRow[]): number[] {
  return [...new Set(rows.map(memOf))].sort((a, b) => a - b)
}

function ofGuest(rows: LibvirtRow[], memMiB: number, helper: LibvirtHelper): LibvirtRow[] {
  return rows.filter((r) => memOf(r) === memMiB && r.helper === helper)
}

function summarize(own: LibvirtRow[]): HelperSummary | undefined {
  if (own.length === 0) return undefined
  return {
    imageBytes: median(own.map((r) => r.imageBytes)),
    saveMs: median(own.map((r) => r.saveMs)),
    restoreMs: median(own.map((r) => r.restoreMs)),
    n: own.length,
  }
}

function range(own: LibvirtRow[], key: 'saveMs' | 'restoreMs'): string {
  const xs = own.map((r) => r[key] / 1000)
  return `${fix(Math.min(...xs))}–${fix(Math.max(...xs))}`
}

/**
 * The two goals of the helper path per guest size, from the medians: a smaller image than lzop's, and save time
 * ≤ lzop's.
 */
export function libvirtVerdicts(rows: LibvirtRow[]): Verdict[] {
  const sizes = guestSizes(rows)
  if (sizes.length === 0)
    return [
      { target: 'libvirt helper: image smaller than lzop -1', measured: 'n/a', status: 'not measured' },
      { target: "libvirt helper: `virsh save` time ≤ lzop's", measured: 'n/a', status: 'not measured' },
    ]
  return sizes.flatMap((mem) => guestVerdicts(rows, mem))
}

function guestVerdicts(rows: LibvirtRow[], mem: number): Verdict[] {
  const guest = `${mem} MiB guest`
  const lz = summarize(ofGuest(rows, mem, 'lzop'))
  const xb = summarize(ofGuest(rows, mem, 'xbzrle'))
  if (!lz || !xb)
    return [
      {
        target: `libvirt helper, ${guest}: image smaller than lzop -1`,
        measured: 'n/a',
        status: 'not measured',
      },
      {
        target: `libvirt helper, ${guest}: \`virsh save\` time ≤ lzop's`,
        measured: 'n/a',
        status: 'not measured',
      },
    ]
  const size: Verdict = {
    target: `libvirt helper, ${guest}: image smaller than lzop -1`,
    measured: `${fmtMB(xb.imageBytes, 2)} vs ${fmtMB(lz.imageBytes, 2)} MB (${fix(xb.imageBytes / lz.imageBytes)}x)`,
    status: xb.imageBytes < lz.imageBytes ? 'met' : 'missed',
  }
  const save: Verdict = {
    target: `libvirt helper, ${guest}: \`virsh save\` time ≤ lzop's`,
    measured: `${fix(xb.saveMs / 1000)} vs ${fix(lz.saveMs / 1000)} s (${fix(xb.saveMs / lz.saveMs)}x)`,
    status: xb.saveMs <= lz.saveMs ? 'met' : 'missed',
  }
  if (save.status === 'missed')
    save.cause = saveCause(guest, lz, xb, summarize(ofGuest(rows, mem, 'lzop-late')))
  return [size, save]
}

/**
 * Why the helper's save was slower, as measured facts: its gap over lzop, and the control's (the real lzop started
 * 0.3 s late), which says how much of a late start this guest's save time shows. With 3-5 rounds on a shared
 * 2-core machine, gaps of ~0.1 s are within the rounds' spread, so the figures are given, not a diagnosis.
 */
function saveCause(
  guest: string,
  lz: HelperSummary,
  xb: HelperSummary,
  late: HelperSummary | undefined,
): string {
  const gap = (s: HelperSummary) =>
    `${s.saveMs >= lz.saveMs ? '+' : '−'}${fix(Math.abs(s.saveMs - lz.saveMs) / 1000)} s`
  const control = late ? `; the real lzop started 0.3 s late: ${gap(late)}` : ''
  return (
    `- libvirt helper save time (${guest}): ${gap(xb)} over lzop's ${fix(lz.saveMs / 1000)} s${control}. Each save ` +
    "starts a node process, ~0.2 s before its first byte (lzop's whole run on a small image is ~0.1 s), and the " +
    "encoder's CPU per byte is above lzop's (zstd level 1 alone runs at about lzop's speed)."
  )
}

const HELPER_NAMES: Record<LibvirtHelper, string> = {
  lzop: 'real lzop',
  'lzop-late': 'real lzop, started 0.3 s late (control)',
  xbzrle: 'xbzrle helper',
}

export function renderLibvirt(l: LibvirtResults): string[] {
  const m = l.machine
  const md = [
    '## libvirt save / restore through its compressor',
    '',
    'libvirt runs the compressor itself (`save_image_format = "lzop"` in a private libvirtd; `--only libvirt`,',
    'apps/cli/src/libvirt-helper/measure.sh): `virsh save` then `virsh restore` of the test guest (TCG, a sparse',
    'workload rewriting a quarter of its RAM), alternating the real lzop, the real lzop started 0.3 s late (a',
    "control: whether the save time of that guest shows a helper's start-up at all) and the xbzrle helper",
    `(\`xbzrle libvirt install\`, default settings). Measured on ${m.date}, commit \`${m.commit}\`, ${m.cpu}, ${m.cores} cores.`,
    'Times are wall seconds of the virsh command (median, range); the guest keeps running between rounds, so later',
    'rounds hold a little more data.',
    '',
  ]
  for (const mem of guestSizes(l.rows)) {
    const lz = summarize(ofGuest(l.rows, mem, 'lzop'))
    const rounds = Math.max(
      ...Object.keys(HELPER_NAMES).map((h) => ofGuest(l.rows, mem, h as LibvirtHelper).length),
    )
    const line = (helper: LibvirtHelper): string[] => {
      const own = ofGuest(l.rows, mem, helper)
      const s = summarize(own)
      return s
        ? [
            HELPER_NAMES[helper],
            fmtMB(s.imageBytes, 2),
            lz ? fix(s.imageBytes / lz.imageBytes) : 'n/a',
            `${fix(s.saveMs / 1000)} (${range(own, 'saveMs')})`,
            `${fix(s.restoreMs / 1000)} (${range(own, 'restoreMs')})`,
          ]
        : [HELPER_NAMES[helper], 'n/a', 'n/a', 'n/a', 'n/a']
    }
    const helpers = (Object.keys(HELPER_NAMES) as LibvirtHelper[]).filter(
      (h) => h !== 'lzop-late' || ofGuest(l.rows, mem, h).length > 0,
    )
    md.push(
      `### ${mem} MiB guest, ${rounds} rounds`,
      '',
      mdTable(['helper', 'image MB', 'vs lzop', 'virsh save s', 'virsh restore s'], helpers.map(line), [
        'l',
        'r',
        'r',
        'r',
        'r',
      ]),
      '',
    )
  }
  return md
}
