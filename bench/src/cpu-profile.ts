/**
 * Where a CLI run's CPU goes: runs `node --cpu-prof <cli> ARGS < IN > OUT` and prints the functions with the most
 * self time (the summaries in BENCHMARKS.md, "Hot path"). Usage:
 *   node --import tsx bench/src/cpu-profile.ts [--cli path/to/xbzrle.js] [--top N] IN OUT -- ARGS...
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, shq } from './util.js'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
}
interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

/** Self time per function (name, file, line), most first, in ms; plus the total. */
export function selfTimes(p: Profile): { total: number; rows: [string, number][] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const self = new Map<string, number>()
  let total = 0
  for (let i = 0; i < p.samples.length; i++) {
    const cf = byId.get(p.samples[i]!)!.callFrame
    const file = cf.url.split('/').slice(-2).join('/')
    const key = `${cf.functionName || '(anonymous)'} ${file}${file ? `:${cf.lineNumber + 1}` : ''}`
    const t = (p.timeDeltas[i] ?? 0) / 1000
    self.set(key, (self.get(key) ?? 0) + t)
    total += t
  }
  return { total, rows: [...self].sort((a, b) => b[1] - a[1]) }
}

export function profileCli(cli: string, args: string[], input: string, output: string): Profile {
  const dir = mkdtempSync(join(tmpdir(), 'xbzrle-prof-'))
  try {
    const cmd = `node --cpu-prof --cpu-prof-dir=${shq(dir)} ${shq(cli)} ${args.map(shq).join(' ')} < ${shq(input)} > ${shq(output)}`
    const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status}\n${r.stderr}`)
    const f = readdirSync(dir).find((n) => n.endsWith('.cpuprofile'))!
    return JSON.parse(readFileSync(join(dir, f), 'utf8')) as Profile
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const a = process.argv.slice(2)
  const take = (flag: string): string | undefined => {
    const i = a.indexOf(flag)
    return i >= 0 ? a.splice(i, 2)[1] : undefined
  }
  const cli = take('--cli') ?? CLI
  const top = Number(take('--top') ?? 12)
  const sep = a.indexOf('--')
  const [input, output] = a.slice(0, sep)
  const { total, rows } = selfTimes(profileCli(cli, a.slice(sep + 1), input!, output!))
  console.log(`| self ms | share | function |\n|---:|---:|---|`)
  for (const [k, t] of rows.slice(0, top))
    console.log(`| ${t.toFixed(0)} | ${((100 * t) / total).toFixed(1)}% | \`${k}\` |`)
  console.log(`| **${total.toFixed(0)}** | 100% | total (samples) |`)
}
