/**
 * Time to the first output byte of `xbzrle -c`: from spawning `node` to the first byte on its stdout, with a real
 * QEMU stream on stdin (the moment QEMU's exec: pipe starts moving). Compared, interleaved run by run so that the
 * machine's load hits all alike, with a bare `node` that writes one byte (the floor) and with `xbzrle encode` (the
 * whole CLI loaded). Run: `node --conditions=@xbzrle/source --import tsx src/startup.ts STREAM [RUNS]`.
 */
import { spawn } from 'node:child_process'
import { openSync } from 'node:fs'
import { CLI, median } from './util.js'

export const STARTUP_VARIANTS: Record<string, string[]> = {
  'node (writes 1 byte)': ['-e', 'process.stdout.write("x")'],
  'xbzrle encode': [CLI, 'encode'],
  'xbzrle -c': [CLI, '-c'],
}

function firstByteMs(args: string[], input: string): Promise<number> {
  const t0 = process.hrtime.bigint()
  const p = spawn(process.execPath, args, { stdio: [openSync(input, 'r'), 'pipe', 'ignore'] })
  return new Promise((resolve, reject) => {
    let first: bigint | undefined
    p.stdout?.on('data', () => {
      first ??= process.hrtime.bigint()
    })
    p.on('error', reject)
    p.on('close', () =>
      first ? resolve(Number(first - t0) / 1e6) : reject(new Error(`${args} wrote nothing`)),
    )
  })
}

export async function measureStartup(input: string, runs: number): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = Object.fromEntries(Object.keys(STARTUP_VARIANTS).map((k) => [k, []]))
  for (let i = 0; i < runs; i++)
    for (const [name, args] of Object.entries(STARTUP_VARIANTS))
      out[name]!.push(await firstByteMs(args, input))
  return out
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [input, runs = '11'] = process.argv.slice(2)
  if (!input) throw new Error('usage: startup.ts QEMU-STREAM [RUNS]')
  const res = await measureStartup(input, Number(runs))
  for (const [name, ms] of Object.entries(res))
    console.log(`${name.padEnd(22)} median ${median(ms).toFixed(0)} ms, min ${Math.min(...ms).toFixed(0)} ms`)
}
