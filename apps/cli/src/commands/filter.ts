import { pipeline } from 'node:stream/promises'
import { DecodeStream, type EncoderStats, EncodeStream } from '@xbzrle/adapter-libvirt'
import type { Compression } from '@xbzrle/protocol'
import { formatBytes, openInput, openOutput } from '../io.js'
import { Progress } from '../progress.js'

export interface EncodeCommandOptions {
  output?: string
  cacheSize?: number
  ways?: number
  mode?: 'canonical' | 'compact'
  formatVersion?: number
  compression?: Compression
  stats?: boolean
}

export function hitRate(s: EncoderStats): number | undefined {
  const c = s.cache
  if (!c || c.hits + c.misses === 0) return undefined
  return c.hits / (c.hits + c.misses)
}

export async function runEncode(input: string | undefined, o: EncodeCommandOptions): Promise<void> {
  const started = process.hrtime.bigint()
  const enc = new EncodeStream({
    cacheBytes: o.cacheSize,
    ways: o.ways,
    mode: o.mode,
    formatVersion: o.formatVersion,
  })
  const progress = new Progress('encode', () => {
    const s = enc.encoder.stats
    return { bytesIn: s.bytesIn, bytesOut: s.bytesOut, hitRate: hitRate(s) }
  })
  try {
    await pipeline(openInput(input), enc, openOutput(o.output))
  } finally {
    progress.stop()
  }
  if (o.stats) process.stderr.write(encodeSummary(enc.encoder.stats, started))
}

export function encodeSummary(s: EncoderStats, started: bigint): string {
  const secs = Number(process.hrtime.bigint() - started) / 1e9
  const p = s.pages
  const hr = hitRate(s)
  const lines = [
    `xbzrle encode: ${formatBytes(s.bytesIn)} in, ${formatBytes(s.bytesOut)} out, ratio ${(s.bytesOut / Math.max(1, s.bytesIn)).toFixed(4)}`,
    `  pages: ${p.full} full, ${p.delta} delta, ${p.same} unchanged, ${p.zero} zero, ${p.foreign} qemu-xbzrle, ${p.compress} other`,
    `  cache: ${formatBytes(s.cacheBytes)}, hit rate ${hr === undefined ? '-' : `${(hr * 100).toFixed(1)}%`}, ${s.cache?.evictions ?? 0} evictions`,
    `  ${(s.bytesIn / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s, ${secs.toFixed(2)} s`,
  ]
  const pt = s.qemu.passthrough
  if (pt && pt.reason !== 'trailer' && pt.reason !== 'device-state') {
    lines.push(`  note: from byte ${pt.offset} on the input was copied unparsed (${pt.detail})`)
  }
  return `${lines.join('\n')}\n`
}

export interface DecodeCommandOptions {
  output?: string
  maxCache?: number
  stats?: boolean
}

export async function runDecode(input: string | undefined, o: DecodeCommandOptions): Promise<void> {
  const started = process.hrtime.bigint()
  const dec = new DecodeStream({ maxCacheBytes: o.maxCache })
  const progress = new Progress('decode', () => {
    const s = dec.decoder.stats
    return { bytesIn: s.bytesIn, bytesOut: s.bytesOut }
  })
  try {
    await pipeline(openInput(input), dec, openOutput(o.output))
  } finally {
    progress.stop()
  }
  if (o.stats) {
    const s = dec.decoder.stats
    const secs = Number(process.hrtime.bigint() - started) / 1e9
    process.stderr.write(
      `xbzrle decode: ${formatBytes(s.bytesIn)} in, ${formatBytes(s.bytesOut)} out (format v${s.version}), ${(s.bytesOut / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s, ${secs.toFixed(2)} s\n`,
    )
  }
}
