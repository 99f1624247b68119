import { createHash } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { SimulatedGuest, type Workload, XbzrleDecoder, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { CliError, ExitCode } from '../errors.js'
import { formatBytes } from '../io.js'
import { hitRate } from './filter.js'
import { loopbackWebSocket } from './ws.js'

export interface DemoOptions {
  workload: Workload
  memMiB: number
  passes: number
  seed: number
  /** A hop between encoder and decoder; by default a WebSocket on loopback. */
  transport?: DemoTransport
}

/** Carries the encoded stream from the encoder to the decoder (e.g. over a WebSocket on loopback). */
export interface DemoTransport {
  name: string
  start(
    deliver: (chunk: Uint8Array) => void,
  ): Promise<{ send(chunk: Uint8Array): Promise<void>; end(): Promise<void> }>
}

const now = () => process.hrtime.bigint()
const secs = (ns: bigint) => Number(ns) / 1e9

export interface DemoResult {
  rawBytes: number
  xbzrleBytes: number
  gzipBytes: number
  encodeSeconds: number
  decodeSeconds: number
  gzipSeconds: number
  hitRate: number
  identical: boolean
  sha256: string
  pages: Record<string, number>
  transport: string
}

export async function runDemoPipeline(o: DemoOptions): Promise<DemoResult> {
  const sim = new SimulatedGuest({ memMiB: o.memMiB, passes: o.passes, workload: o.workload, seed: o.seed })
  const hashIn = createHash('sha256')
  const hashOut = createHash('sha256')
  let rawBytes = 0
  let xbzrleBytes = 0
  let gzipBytes = 0
  let tEnc = 0n
  let tDec = 0n
  let tGz = 0n
  const decoder = new XbzrleDecoder((c) => hashOut.update(c))
  const deliver = (c: Uint8Array) => {
    const t = now()
    decoder.push(c)
    tDec += now() - t
  }
  const link = o.transport
    ? await o.transport.start(deliver)
    : { send: async (c: Uint8Array) => deliver(c), end: async () => {} }
  const pending: Uint8Array[] = []
  const encoder = new XbzrleEncoder((c) => {
    xbzrleBytes += c.length
    pending.push(c)
  })
  for (const chunk of sim.stream()) {
    rawBytes += chunk.length
    hashIn.update(chunk)
    let t = now()
    encoder.push(chunk)
    encoder.flush()
    tEnc += now() - t
    t = now()
    gzipBytes += gzipSync(chunk, { level: 1 }).length
    tGz += now() - t
    for (const c of pending.splice(0)) await link.send(c)
  }
  const t = now()
  encoder.finish()
  tEnc += now() - t
  for (const c of pending.splice(0)) await link.send(c)
  await link.end()
  const t2 = now()
  decoder.finish()
  tDec += now() - t2
  const inDigest = hashIn.digest('hex')
  const outDigest = hashOut.digest('hex')
  const es = encoder.stats
  return {
    rawBytes,
    xbzrleBytes,
    gzipBytes,
    encodeSeconds: secs(tEnc),
    decodeSeconds: secs(tDec),
    gzipSeconds: secs(tGz),
    hitRate: hitRate(es) ?? 0,
    identical: inDigest === outDigest && decoder.stats.bytesOut === rawBytes,
    sha256: inDigest,
    pages: es.pages,
    transport: o.transport?.name ?? 'in-process',
  }
}

export function demoTable(r: DemoResult, o: DemoOptions): string {
  const mbps = (bytes: number, s: number) => (s > 0 ? `${(bytes / 1e6 / s).toFixed(0)} MB/s` : '-')
  const row = (name: string, bytes: number, speed: string) =>
    `  ${name.padEnd(22)} ${formatBytes(bytes).padStart(11)}  ${(bytes / r.rawBytes).toFixed(3).padStart(6)}  ${speed}`
  return [
    `xbzrle demo: simulated ${o.memMiB} MiB guest, workload "${o.workload}", ${o.passes} dirty passes after the first`,
    `  encode -> ${r.transport} -> decode`,
    '',
    `  ${'stream'.padEnd(22)} ${'bytes'.padStart(11)}  ${'ratio'.padStart(6)}  throughput (one core)`,
    row('raw QEMU stream', r.rawBytes, ''),
    row(
      'xbzrle',
      r.xbzrleBytes,
      `encode ${mbps(r.rawBytes, r.encodeSeconds)}, decode ${mbps(r.rawBytes, r.decodeSeconds)}`,
    ),
    row('gzip -1 (node zlib)', r.gzipBytes, `compress ${mbps(r.rawBytes, r.gzipSeconds)}`),
    '',
    `  pages: ${r.pages.full} full, ${r.pages.delta} delta, ${r.pages.same} unchanged, ${r.pages.zero} zero; cache hit rate ${(r.hitRate * 100).toFixed(1)}%`,
    `  verified: ${r.identical ? 'decoded stream is byte-identical to the original' : 'MISMATCH'} (sha256 ${r.sha256.slice(0, 16)}…)`,
    '',
  ].join('\n')
}

export async function runDemo(o: DemoOptions): Promise<void> {
  const r = await runDemoPipeline({
    transport: { name: 'WebSocket (loopback)', start: loopbackWebSocket },
    ...o,
  })
  process.stdout.write(demoTable(r, o))
  if (!r.identical)
    throw new CliError('demo: the decoded stream differs from the original', ExitCode.INTERNAL)
}
