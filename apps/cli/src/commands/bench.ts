import { createHash } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { SimulatedGuest, type Workload, XbzrleDecoder, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { kernelName } from '@xbzrle/codec'
import { CliError, ExitCode } from '../errors.js'
import { formatBytes } from '../io.js'

export interface BenchOptions {
  workload: Workload
  memMiB: number
  passes: number
  cacheSize?: number
  mode: 'canonical' | 'compact'
  rounds: number
  json?: boolean
}

const CHUNK = 1 << 20

/** CPU seconds of this process spent in fn (one core: the filter is single-threaded). */
function cpu(fn: () => void): number {
  const t = process.cpuUsage()
  fn()
  const u = process.cpuUsage(t)
  return (u.user + u.system) / 1e6
}

/**
 * Measures encode and decode throughput of this machine on a file (a QEMU stream or save image) or on a
 * simulated guest's migration stream: the input is held in memory so that only the filter is timed.
 */
export async function runBench(file: string | undefined, o: BenchOptions): Promise<void> {
  let input: Buffer
  let what: string
  if (file) {
    const size = statSync(file).size
    if (size > 2 ** 31)
      throw new CliError(`bench: ${file} is larger than 2 GiB; use a smaller sample`, ExitCode.USAGE)
    input = readFileSync(file)
    what = file
  } else {
    input = Buffer.concat([
      ...new SimulatedGuest({ memMiB: o.memMiB, passes: o.passes, workload: o.workload }).stream(),
    ])
    what = `simulated ${o.memMiB} MiB guest, ${o.workload}, ${o.passes} dirty passes`
  }
  const enc: number[] = []
  const dec: number[] = []
  let encoded: Buffer = Buffer.alloc(0)
  let identical = true
  const want = createHash('sha256').update(input).digest('hex')
  for (let r = 0; r < o.rounds; r++) {
    const parts: Uint8Array[] = []
    enc.push(
      cpu(() => {
        const e = new XbzrleEncoder((c) => parts.push(c), { cacheBytes: o.cacheSize, mode: o.mode })
        for (let off = 0; off < input.length; off += CHUNK) e.push(input.subarray(off, off + CHUNK))
        e.finish()
      }),
    )
    encoded = Buffer.concat(parts)
    const h = createHash('sha256')
    dec.push(
      cpu(() => {
        const d = new XbzrleDecoder((c) => h.update(c))
        for (let off = 0; off < encoded.length; off += CHUNK) d.push(encoded.subarray(off, off + CHUNK))
        d.finish()
      }),
    )
    identical &&= h.digest('hex') === want
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const result = {
    input: what,
    bytes: input.length,
    encodedBytes: encoded.length,
    ratio: encoded.length / input.length,
    encodeMBps: input.length / 1e6 / median(enc),
    decodeMBps: input.length / 1e6 / median(dec),
    kernel: kernelName(),
    rounds: o.rounds,
    identical,
  }
  if (o.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
  else {
    process.stdout.write(
      [
        `xbzrle bench: ${what}`,
        `  ${formatBytes(result.bytes)} -> ${formatBytes(result.encodedBytes)} (ratio ${result.ratio.toFixed(4)})`,
        `  encode ${result.encodeMBps.toFixed(0)} MB/s, decode ${result.decodeMBps.toFixed(0)} MB/s (CPU time, one core, median of ${o.rounds}, ${result.kernel} kernel)`,
        `  round trip: ${identical ? 'byte-identical' : 'MISMATCH'}`,
        '',
      ].join('\n'),
    )
  }
  if (!identical) throw new CliError('bench: decoded output differs from the input', ExitCode.INTERNAL)
}
