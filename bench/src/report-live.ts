/** BENCHMARKS.md section of the `live` stage: the live migration table, per-link observations, the chart. */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { type LiveGuest, type LiveRun, linkLabel, SETUPS } from './live.js'
import type { MachineInfo } from './machine.js'
import type { RenderContext } from './report-filter.js'
import { barChart } from './svg.js'
import { fix, MB, mdTable, median } from './util.js'
import { r0 } from './verdicts.js'

export interface LiveResults {
  machine: MachineInfo
  guest: LiveGuest
  runs: LiveRun[]
  wallS: number
}

export function renderLive(live: LiveResults, ctx: RenderContext): string[] {
  const md: string[] = []
  const links = [...new Set(live.runs.map((r) => r.linkMiBs))]
  const limitOf = (r: LiveRun) => r.limitMs ?? 300
  const limits = [...new Set(live.runs.map(limitOf))]
  const nRuns = Math.max(...live.runs.map((r) => r.run))
  md.push(
    '## Live migration table',
    '',
    `Real QEMU live migrations (TCG) of a ${live.guest.memMiB} MiB test guest (\`${JSON.stringify(live.guest.append)}\`,`,
    'a paced dirty rate) from a source QEMU to a destination QEMU on the same machine, through `exec:` pipes. The link',
    'is a TCP connection (socat) over a veth pair into a network namespace the bench creates, shaped by `tc tbf` (bucket',
    '1/100 s of the rate, at least 128 KiB; 50 ms queue): kernel socket buffers like a network link, no user-space',
    "buffer of its own. The qdisc counts the **wire** bytes (IP packets). QEMU's",
    'max-bandwidth counts bytes before our filter, so it is set to 1 GiB/s (the link is the bottleneck) except in',
    '"max-bw = link". QEMU\'s xbzrle uses its default 64 MiB cache (the whole guest). Each link runs at the',
    `downtime-limits ${limits.join(' and ')} ms.`,
    "Values are medians of the runs. **total** = from the source's migration `setup` event to the destination's",
    '`completed` event (QMP timestamps: includes draining the link and the filters); **QEMU total** = `total-time` of the',
    "source's query-migrate; **downtime** = QEMU's; **eff. downtime** = source `STOP` → destination `completed`.",
    `**CPU contention**: ${live.machine.cores} cores shared by the source QEMU (TCG vCPU + migration thread), the destination QEMU,`,
    'socat and the filter processes, so a filter competes with the guest and with QEMU for CPU.',
    `Whole live stage: ${fix(live.wallS / 60, 1)} min for ${live.runs.length} migrations.`,
    '',
  )
  const rows: string[][] = []
  for (const l of links) {
    for (const lim of limits)
      for (const s of SETUPS) {
        const rs = live.runs.filter((r) => r.linkMiBs === l && limitOf(r) === lim && r.setup === s.name)
        if (!rs.length) continue
        const ok = rs.filter((r) => r.ok)
        const mm = (f: (r: LiveRun) => number | undefined) => median(ok.map((r) => f(r) ?? Number.NaN))
        rows.push([
          linkLabel(l),
          String(lim),
          s.name,
          fix(mm((r) => r.e2eMs) / 1000, 2),
          fix(mm((r) => r.totalMs) / 1000, 2),
          r0(mm((r) => r.downtimeMs)),
          r0(mm((r) => r.effDowntimeMs)),
          fix(mm((r) => r.wireBytes) / MB, 1),
          r0(mm((r) => r.dirtySyncs)),
          `${ok.filter((r) => r.ramIdentical).length}/${rs.length}${ok.some((r) => r.forced) ? ' (forced)' : ''}`,
        ])
      }
  }
  md.push(
    mdTable(
      [
        'link',
        'limit ms',
        'setup',
        'total s',
        'QEMU total s',
        'downtime ms',
        'eff. downtime ms',
        'wire MB',
        'dirty syncs',
        `RAM identical (of ${nRuns})`,
      ],
      rows,
      ['l', 'r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
    ),
    '',
  )
  const failed = live.runs.filter((r) => !r.ok)
  if (failed.length)
    md.push(
      'Failed runs:',
      '',
      ...failed.map(
        (r) => `- ${linkLabel(r.linkMiBs)} limit ${limitOf(r)} ms ${r.setup} #${r.run}: ${r.error}`,
      ),
      '',
    )
  const obs: string[] = []
  for (const l of links) {
    const med = (setup: string, f: (r: LiveRun) => number | undefined) =>
      median(
        live.runs
          .filter((r) => r.ok && r.linkMiBs === l && limitOf(r) === limits[0] && r.setup === setup)
          .map((r) => f(r) ?? Number.NaN),
      )
    const ours = med('xbzrle filter', (r) => r.e2eMs)
    const plain = med('plain', (r) => r.e2eMs)
    const lz = med('lzop -1 filter', (r) => r.e2eMs)
    const qx = med('QEMU xbzrle', (r) => r.e2eMs)
    if (!Number.isFinite(ours) || !Number.isFinite(plain)) continue
    const qemuRate = med('xbzrle filter', (r) => (r.ramTransferred ?? Number.NaN) / (r.e2eMs! / 1000))
    obs.push(
      `- ${linkLabel(l)}: xbzrle filter ${fix(ours / plain, 2)}x the time of plain, ${fix(ours / qx, 2)}x QEMU xbzrle, ` +
        `${fix(ours / lz, 2)}x lzop -1; it moved QEMU's stream at ${fix(qemuRate / MB, 0)} MB/s and put ` +
        `${fix(med('xbzrle filter', (r) => r.wireBytes) / MB, 1)} MB on the wire (plain ${fix(med('plain', (r) => r.wireBytes) / MB, 1)} MB, ` +
        `lzop ${fix(med('lzop -1 filter', (r) => r.wireBytes) / MB, 1)} MB).`,
    )
  }
  if (obs.length)
    md.push(
      'Per link (medians). Where the filter is slower than plain although it sends fewer bytes, the link is no longer',
      `the bottleneck: the "no limit" rows show how fast each pipeline runs when only CPU limits it (${live.machine.cores} cores shared with`,
      'two TCG QEMUs).',
      '',
      ...obs,
      '',
    )
  const liveSvg = barChart({
    title: 'Live migration total time (median, lower is better)',
    subtitle: `${live.guest.memMiB} MiB TCG guest, ${live.guest.append.workload} workload; link = tc tbf; downtime-limit ${limits[0]} ms; setup → destination completed`,
    groups: links.map((l) => (l > 0 ? `${linkLabel(l)} link` : 'no link limit')),
    series: SETUPS.map((s) => ({
      name: s.name,
      values: links.map((l) =>
        median(
          live.runs
            .filter((r) => r.ok && r.linkMiBs === l && limitOf(r) === limits[0] && r.setup === s.name)
            .map((r) => r.e2eMs! / 1000),
        ),
      ),
    })),
    unit: 's',
    format: (v) => v.toFixed(1),
  })
  writeFileSync(join(ctx.chartDir, 'live.svg'), liveSvg)
  md.push(`![migration time per setup](${ctx.chartLink('live.svg')})`, '')
  return md
}
