/** Hand-written SVG charts (no dependency): horizontal grouped bar charts with a legend and value labels. */

export interface Series {
  name: string
  values: (number | undefined)[]
}

export interface BarChart {
  title: string
  subtitle?: string
  /** One group of bars per entry (e.g. a stream), one bar per series inside each group. */
  groups: string[]
  series: Series[]
  unit: string
  format?: (v: number) => string
  /** Draw a vertical reference line at this value (e.g. ratio 1.0 or a target). */
  marks?: { value: number; label: string }[]
  max?: number
}

const PALETTE = ['#1f6feb', '#d1242f', '#8250df', '#1a7f37', '#bf8700', '#57606a', '#e16f24', '#0a3069']

/** The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k) that is ≥ v. */
function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v - 1e-12) return m * p
  return 10 * p
}

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

export function barChart(c: BarChart): string {
  const fmt = c.format ?? ((v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3)))
  const W = 860
  const left = 150
  const right = 90
  const barH = 13
  const gap = 3
  const groupGap = 14
  const legendCols = Math.min(c.series.length, 4)
  const legendRows = Math.ceil(c.series.length / legendCols)
  const top = 48 + (c.subtitle ? 16 : 0) + legendRows * 18
  const groupH = c.series.length * (barH + gap) - gap
  const H = top + c.groups.length * (groupH + groupGap) + 28
  const all = c.series
    .flatMap((s) => s.values)
    .filter((v): v is number => v !== undefined && Number.isFinite(v))
  const max = c.max ?? niceCeil(Math.max(1e-9, ...all, ...(c.marks ?? []).map((m) => m.value)) * 1.02)
  const plotW = W - left - right
  const x = (v: number) => left + (Math.min(v, max) / max) * plotW
  const out: string[] = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="11">`,
    `<title>${esc(c.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(c.title)}</text>`,
  )
  if (c.subtitle)
    out.push(
      `<text x="${W / 2}" y="37" text-anchor="middle" font-size="11" fill="#57606a">${esc(c.subtitle)}</text>`,
    )
  const legendY = 36 + (c.subtitle ? 16 : 0)
  c.series.forEach((s, i) => {
    const col = i % legendCols
    const row = Math.floor(i / legendCols)
    const lx = left + col * (plotW / legendCols)
    const ly = legendY + row * 18
    out.push(
      `<rect x="${lx}" y="${ly}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`,
      `<text x="${lx + 16}" y="${ly + 10}">${esc(s.name)}</text>`,
    )
  })
  // grid
  const ticks = 5
  for (let t = 0; t <= ticks; t++) {
    const v = (max / ticks) * t
    const gx = x(v)
    out.push(
      `<line x1="${gx.toFixed(1)}" y1="${top - 6}" x2="${gx.toFixed(1)}" y2="${H - 24}" stroke="#d0d7de" stroke-width="1"/>`,
      `<text x="${gx.toFixed(1)}" y="${H - 10}" text-anchor="middle" fill="#57606a">${esc(fmt(v))}</text>`,
    )
  }
  out.push(`<text x="${W - 6}" y="${H - 10}" text-anchor="end" fill="#57606a">${esc(c.unit)}</text>`)
  c.groups.forEach((g, gi) => {
    const gy = top + gi * (groupH + groupGap)
    out.push(
      `<text x="${left - 8}" y="${(gy + groupH / 2 + 4).toFixed(1)}" text-anchor="end" font-weight="bold">${esc(g)}</text>`,
    )
    c.series.forEach((s, si) => {
      const v = s.values[gi]
      const by = gy + si * (barH + gap)
      if (v === undefined || !Number.isFinite(v)) {
        out.push(`<text x="${left + 4}" y="${by + barH - 3}" fill="#57606a">n/a</text>`)
        return
      }
      const w = Math.max(1, x(v) - left)
      out.push(
        `<rect x="${left}" y="${by}" width="${w.toFixed(1)}" height="${barH}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${g} · ${s.name}: ${fmt(v)} ${c.unit}`)}</title></rect>`,
        `<text x="${(left + w + 4).toFixed(1)}" y="${by + barH - 3}">${esc(fmt(v))}${v > max ? ' ▸' : ''}</text>`,
      )
    })
  })
  for (const m of c.marks ?? []) {
    const mx = x(m.value)
    out.push(
      `<line x1="${mx.toFixed(1)}" y1="${top - 6}" x2="${mx.toFixed(1)}" y2="${H - 24}" stroke="#cf222e" stroke-width="1.5" stroke-dasharray="5,3"/>`,
      `<text x="${(mx + 3).toFixed(1)}" y="${top - 8}" fill="#cf222e">${esc(m.label)}</text>`,
    )
  }
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
