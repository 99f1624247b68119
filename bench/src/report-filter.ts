/** BENCHMARKS.md sections of the `corpus` and `filter` stages: tables and the ratio / throughput charts. */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { recipes, type StreamInfo } from './corpus.js'
import type { FilterStreamResult } from './filter.js'
import { type MachineInfo, shortVersion } from './machine.js'
import { barChart } from './svg.js'
import { fix, fmtMB, mdTable, pct } from './util.js'
import { mbps, r0, TARGETS, toolRun } from './verdicts.js'

/** Where a section puts its charts and how the report links them. */
export interface RenderContext {
  chartDir: string
  chartLink: (file: string) => string
}

export interface CorpusResults {
  streams: StreamInfo[]
  stageS?: number
}

export interface FilterResults {
  machine: MachineInfo
  results: FilterStreamResult[]
  stageS?: number
}

export function renderCorpus(corpus: CorpusResults, quick: boolean): string[] {
  const md: string[] = []
  const r0c = recipes(quick)[0]!
  const guestDesc = `${r0c.memMiB} MiB guest, ${r0c.append.mem} MiB workload region`
  md.push(
    '## Stream corpus',
    '',
    'Real QEMU migration streams of the testkit guest (TCG, `exec:cat > FILE`, QEMU xbzrle off: the input libvirt would',
    `pipe through \`lzop\`). Live streams: ${guestDesc}, max-bandwidth 64 MiB/s, downtime-limit`,
    '1 ms until the given number of dirty syncs, then converged (`forceConvergeAfterSyncs`). `save`: the guest is',
    'stopped, then migrated (one pass, what `virsh save` writes). "re-sent" = share of page records whose page was sent',
    'before in the same stream (`xbzrle inspect --json`: `resentPages / pages`).',
    '',
    mdTable(
      ['stream', 'workload', 'size MB', 'PAGE', 'ZERO', 'XBZRLE', 're-sent', 'dirty syncs', 'capture s'],
      corpus.streams.map((s) => [
        `\`${s.name}\``,
        s.what,
        fmtMB(s.bytes),
        String(s.pages.page),
        String(s.pages.zero),
        String(s.pages.xbzrle),
        pct(s.resentShare, 0),
        String(s.qemu.dirtySyncCount ?? 'n/a'),
        fix(s.captureS, 1),
      ]),
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  )
  return md
}

/** A row of the 10-column speed table with only its first cells (and optionally the last) filled. */
const sparseRow = (first: string[], last = ''): string[] => [
  ...first,
  ...Array(9 - first.length).fill(''),
  last,
]

export function renderFilter(filter: FilterResults, ctx: RenderContext): string[] {
  const md: string[] = []
  const toolNames = [...new Set(filter.results.flatMap((r) => r.runs.map((t) => t.tool)))]
  md.push(
    '## Filter table',
    '',
    'Each tool as libvirt runs it: `prog -c < stream > out`, then `prog -dc < out > back`, one child process each,',
    'measured by GNU time. Ours is the built CLI (`node apps/cli/bin/xbzrle.js`): **xbzrle** = `xbzrle -c` / `-dc` with',
    'the default format (v2 at the time of writing: v1 frames plus a per-batch second-stage compressor, see',
    'packages/protocol/SPEC.md); **xbzrle v1** = `xbzrle encode --format-version 1` (the XBZRLE stage alone, no',
    'second-stage compressor); **xbzrle + zstd -1** = `xbzrle -c | zstd -1` (a libvirt-style chain). **ratio** =',
    'output / input. **MB/s** = input (original stream) bytes / second, for compression and decompression alike:',
    '"cpu" = per second of user+system CPU of the child (one core), "wall" = elapsed. Peak RSS from `%M`. Every round trip',
    `verified by SHA-256 against the original. Files live in the page cache (${filter.machine.memGiB} GiB RAM), so no disk wait is measured.`,
    '**ideal** = in-process model with an unbounded cache (a Map of every page sent) and the same canonical XBZRLE',
    'delta: "payload" counts only verbatim bytes, full pages, delta bytes and fill bytes (no framing at all);',
    '"v1 frames" adds the per-frame bytes of format v1 (kind, key, header code, length) but no batch envelopes.',
    '',
  )
  // compact ratio matrix
  md.push('### Output / input', '')
  md.push(
    mdTable(
      ['tool', ...filter.results.map((r) => `\`${r.stream}\``)],
      [
        ...toolNames.map((t) => [t, ...filter.results.map((r) => fix(toolRun(r, t)?.ratio, 3))]),
        ['ideal XBZRLE (payload)', ...filter.results.map((r) => fix(r.ideal.payload / r.bytes, 3))],
        ['ideal XBZRLE (v1 frames)', ...filter.results.map((r) => fix(r.ideal.framed / r.bytes, 3))],
        ['re-sent page records', ...filter.results.map((r) => pct(r.resentShare, 0))],
      ],
    ),
    '',
  )
  md.push('### Speed and memory', '')
  const rows: string[][] = []
  for (const r of filter.results) {
    for (const t of r.runs) {
      if (t.error) {
        rows.push(sparseRow([`\`${r.stream}\``, t.tool, 'FAILED'], t.error.replace(/\|/g, '\\|')))
        continue
      }
      rows.push([
        `\`${r.stream}\``,
        t.tool,
        fix(t.ratio, 3),
        r0(mbps(r.bytes, t.enc.cpuS)),
        r0(mbps(r.bytes, t.enc.wallS)),
        r0(mbps(r.bytes, t.dec.cpuS)),
        r0(mbps(r.bytes, t.dec.wallS)),
        r0(t.enc.maxRssKiB / 1024),
        r0(t.dec.maxRssKiB / 1024),
        t.verified ? 'ok' : 'FAIL',
      ])
    }
    rows.push(
      sparseRow([`\`${r.stream}\``, 'ideal (in-process model)', fix(r.ideal.payload / r.bytes, 3), 'n/a']),
    )
  }
  md.push(
    mdTable(
      [
        'stream',
        'tool',
        'ratio',
        'enc MB/s cpu',
        'enc MB/s wall',
        'dec MB/s cpu',
        'dec MB/s wall',
        'enc RSS MiB',
        'dec RSS MiB',
        'round trip',
      ],
      rows,
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
    ),
    '',
  )
  const bd = filter.results.filter((r) => r.breakdown)
  if (bd.length) {
    md.push(
      "### Where the filter's CPU goes",
      '',
      'In-process on the same files (4 MiB reads, output discarded, `process.cpuUsage`), MB/s of original stream per CPU',
      'second. CLI = the `xbzrle -c` / `-dc` child above (adds process start-up and pipe/file I/O); start-up = CPU',
      'seconds of `xbzrle --version` (node, module loading), which every CLI run pays before its first byte.',
      '',
      mdTable(
        [
          'stream',
          'read file',
          'parse only',
          'XbzrleEncoder v1',
          'XbzrleEncoder',
          'CLI encode',
          'XbzrleDecoder',
          'CLI decode',
          'start-up s',
        ],
        bd.map((r) => {
          const x = toolRun(r, 'xbzrle')
          return [
            `\`${r.stream}\``,
            r0(mbps(r.bytes, r.breakdown!.readS)),
            r0(mbps(r.bytes, r.breakdown!.parseS)),
            r0(mbps(r.bytes, r.breakdown!.encodeV1S ?? Number.NaN)),
            r0(mbps(r.bytes, r.breakdown!.encodeS)),
            r0(mbps(r.bytes, x?.enc.cpuS ?? Number.NaN)),
            r0(mbps(r.bytes, r.breakdown!.decodeS)),
            r0(mbps(r.bytes, x?.dec.cpuS ?? Number.NaN)),
            r.breakdown!.startupS === undefined ? 'n/a' : r.breakdown!.startupS.toFixed(2),
          ]
        }),
      ),
      '',
    )
  }
  // charts
  const ratioSvg = barChart({
    title: 'Output / input per stream (lower is better)',
    subtitle: `real QEMU ${shortVersion(filter.machine.versions.qemu)} migration streams of the test guest; ideal = unbounded-cache XBZRLE payload`,
    groups: filter.results.map((r) => `${r.stream} (${pct(r.resentShare, 0)} re-sent)`),
    series: [
      ...toolNames.map((t) => ({ name: t, values: filter.results.map((r) => toolRun(r, t)?.ratio) })),
      { name: 'ideal XBZRLE', values: filter.results.map((r) => r.ideal.payload / r.bytes) },
    ],
    unit: 'ratio',
    format: (v) => v.toFixed(3),
    marks: [{ value: 1, label: 'input size' }],
  })
  writeFileSync(join(ctx.chartDir, 'ratio.svg'), ratioSvg)
  const agg = (t: string, k: 'enc' | 'dec') => {
    let b = 0
    let s = 0
    for (const r of filter.results) {
      const x = toolRun(r, t)
      if (!x) continue
      b += r.bytes
      s += x[k].cpuS
    }
    return mbps(b, s)
  }
  const speedSvg = barChart({
    title: 'MB/s of original stream per CPU second (one core, higher is better)',
    subtitle:
      'all corpus streams together; encode = compress, decode = decompress; GNU time user+sys of the child',
    groups: toolNames,
    series: [
      { name: 'encode / compress', values: toolNames.map((t) => agg(t, 'enc')) },
      { name: 'decode / decompress', values: toolNames.map((t) => agg(t, 'dec')) },
    ],
    unit: 'MB/s',
    marks: [
      { value: TARGETS.encodeMBs, label: `enc target ${TARGETS.encodeMBs / 1000} GB/s` },
      { value: TARGETS.decodeMBs, label: `dec ${TARGETS.decodeMBs / 1000} GB/s` },
    ],
  })
  writeFileSync(join(ctx.chartDir, 'throughput.svg'), speedSvg)
  md.push(
    `![ratio per stream per tool](${ctx.chartLink('ratio.svg')})`,
    '',
    `![MB/s per tool](${ctx.chartLink('throughput.svg')})`,
    '',
  )
  return md
}
